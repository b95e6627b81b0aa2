"""
The catalog: toys with price and stock in SQLite, restocked on a timer, with a
feed that pushes every stock change to its subscribers (the front-end).
"""
