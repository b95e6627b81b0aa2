"""
The fault-injection suite: a real store on loopback, concurrent buyers, a
seeded nemesis, and a checker of the invariants of ``docs/architecture.rst``.

* the store under test is the harness's (:mod:`toystore.testing`) with its
  proxies: one on every link to a lines port (each replica to each other
  one, each replica to the catalog, the front-ends to each replica), each
  of which can cut, stall, or drop replies;
* :mod:`.buyers`: clients placing orders, each with a fresh key, recording
  every attempt (its start, its end, ok, failed or unknown), dealt out
  among the front-ends when there are several;
* :mod:`.nemesis`: the faults, drawn from a seed, each recorded with when
  it began and when it was healed;
* :mod:`.checker`: after healing, counts what went wrong, and measures the
  availability under each kind of fault;
* :mod:`.run`: the store under test, and one run per seed; ``python -m
  tests.faults`` runs many.

CI runs a short mode (``tests/integration/test_faults.py``); the long mode
is ``python -m tests.faults --seeds 20 --duration 60``.  Every run prints
its seed; ``python -m tests.faults --seed N`` replays one (the schedule of
faults and orders; the machine's timing still varies).
"""
