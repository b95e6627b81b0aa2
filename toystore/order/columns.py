"""
A column of integers in as few bytes as its values need.

The order log keeps a few integers per record for as long as it runs: the
length of each line, and each order's toy and quantity.  In an ``array`` of
8-byte items that is 24 bytes an order; in the narrowest item that holds
every value so far (one byte for a quantity of 1 to 127, two for a line of
150 bytes) it is three to four.  A value that does not fit widens the whole
column to the next size, once: a copy made in C.

This module is reactor-free and does no I/O.
"""

from __future__ import annotations

from array import array
from typing import overload

_WIDER = {"B": "H", "H": "I", "I": "Q", "b": "h", "h": "i", "i": "q"}


class Column:
    """
    A list of integers held in an ``array`` whose item grows with the values.

    :param signed: whether values may be negative.
    """

    def __init__(self, signed: bool = False) -> None:
        self.items = array("b" if signed else "B")

    def append(self, value: int) -> None:
        """Add ``value`` at the end, widening the column if it does not fit."""
        try:
            self.items.append(value)
        except OverflowError:
            wider = _WIDER.get(self.items.typecode)
            if wider is None:
                raise
            self.items = array(wider, self.items)
            self.append(value)

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> array[int]: ...

    def __getitem__(self, index: int | slice) -> int | array[int]:
        return self.items[index]

    def __delitem__(self, index: slice) -> None:
        del self.items[index]

    @property
    def nbytes(self) -> int:
        """Bytes held by the values (not counting the array's spare room)."""
        return self.items.itemsize * len(self.items)
