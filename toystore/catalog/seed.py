"""
The catalog's seed data: the toys a new catalog database starts with.

:class:`~toystore.catalog.store.CatalogDB` writes them, with their initial
stock, the first time it opens an empty file; from then on the database is
the truth.  Tools that need the toys' names without asking the catalog (the
load generator, the benchmarks, the fault suite's buyers) read them here.
"""

from __future__ import annotations

#: The toys on first start, with their prices.
TOYS: dict[str, float] = {
    "Tux": 15.99,
    "Whale": 34.99,
    "Elephant": 29.99,
    "Dolphin": 24.99,
    "Fox": 19.99,
    "Python": 21.99,
    "Lego": 49.99,
    "Frisbee": 9.99,
    "Marbles": 4.99,
    "Yo-yo": 6.49,
    "Kite": 17.49,
    "Puzzle": 12.99,
    "Robot": 59.99,
    "Teddy": 22.49,
    "Rubik": 11.99,
}
