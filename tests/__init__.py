"""The toystore test suite."""
