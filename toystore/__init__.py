"""
toystore: a replicated online toy store on Twisted.

Five processes make the store: a public front-end, a catalog, and three order
replicas.  Each is a twistd plugin (``twistd -n toystore-catalog`` and so on);
``docs/architecture.rst`` describes how they fit together.
"""

__version__ = "0.1.0"
