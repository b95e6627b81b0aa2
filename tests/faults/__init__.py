"""
The fault-injection suite: a real store on loopback, concurrent buyers, a
seeded nemesis, and a checker of the invariants of ``docs/architecture.rst``.

* the store under test is the harness's (:mod:`toystore.testing`) with its
  proxies: a proxy in front of every replica's lines port, one for the other
  replicas (the log stream) and one for the front-end, each of which can
  cut, stall, or drop replies;
* :mod:`.buyers`: clients placing orders, each with a fresh key, recording
  every attempt as ok, failed or unknown;
* :mod:`.nemesis`: the faults, drawn from a seed;
* :mod:`.checker`: after healing, counts what went wrong;
* :mod:`.run`: the store under test, and one run per seed; ``python -m
  tests.faults`` runs many.

CI runs a short mode (``tests/integration/test_faults.py``); the long mode
is ``python -m tests.faults --seeds 20 --duration 60``.  Every run prints
its seed; ``python -m tests.faults --seed N`` replays one (the schedule of
faults and orders; the machine's timing still varies).
"""
