"""Unit tests: no real network, no real processes; Twisted's doubles instead."""
