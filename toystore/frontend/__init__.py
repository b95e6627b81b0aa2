"""
The front-end: the public REST API, an LRU cache of product replies kept
fresh by the catalog's pushes, and leader tracking with transparent failover
for the order replicas.
"""
