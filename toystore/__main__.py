"""``python -m toystore``: the same as the ``toystore`` command."""

from .cli import main

main()
