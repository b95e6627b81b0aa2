"""
The benchmark of the public API under wrk, ``python -m scripts.bench``
(its ``__main__``), and what it runs beside the store:

- ``references``: the reference processes and which case owns which one;
- ``ceiling``: a bare twisted.web server answering the same bytes, the
  ceiling (a process of its own, ``python -m scripts.bench.ceiling``);
- ``forwarder``: a bare front and its back end over one JSON-lines
  connection (two processes, ``python -m scripts.bench.forwarder``);
- ``results``: the ratios to the ceiling, the targets and the table;
- ``procs``: CPU time and resident memory of its processes, from ``/proc``;
- ``hotspots``: the hot spots of a py-spy profile
  (``python -m scripts.bench.hotspots FILE``);
- ``wrk.lua``: the requests wrk sends, and the figures it reports.
"""
