"""
``python -m toystore.hosts``: hosts on this machine, by hand.

``check`` says whether hosts can be made here (exit 0) or why not (exit 1);
``clean`` removes what a crashed run left (every namespace named with the
prefix) and prints it; ``up`` runs the store on hosts until Ctrl-C
(:mod:`.up`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .network import PREFIX, HostsUnavailable, check_prefix, clean, unavailable


def prefix(text: str) -> str:
    """A ``--prefix`` value, if it is a safe one (:func:`~.network.check_prefix`)."""
    try:
        return check_prefix(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m toystore.hosts``."""
    top = argparse.ArgumentParser(
        prog="python -m toystore.hosts", description="The store on network namespaces of this machine."
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("check", help="say whether hosts can be made here, or what is missing")
    wipe = commands.add_parser("clean", help="remove every namespace (and interface) named with the prefix")
    wipe.add_argument("--prefix", type=prefix, default=PREFIX, help=f"the prefix of what to remove (default: {PREFIX})")
    run = commands.add_parser("up", help="run the store on hosts until Ctrl-C, then remove them")
    run.add_argument("--dir", help="where the cluster file, data and logs go (default: a new temporary directory)")
    run.add_argument(
        "--prefix", type=prefix, default=PREFIX, help=f"the prefix of the hosts' namespaces (default: {PREFIX})"
    )
    return top


def check() -> int:
    """Print whether hosts can be made here; 0 if they can, 1 if not."""
    reason = unavailable()
    if reason is None:
        print("hosts can be made here: root, network namespaces, a bridge and veth pairs, pyroute2, ip and nft")
        return 0
    print(f"hosts cannot be made here: {reason}")
    return 1


def wipe(prefix: str) -> int:
    """Remove what a crashed run with ``prefix`` left, and print it."""
    try:
        removed = clean(prefix)
    except HostsUnavailable as e:
        print(f"cannot clean here: {e}")
        return 1
    print("\n".join(f"removed {item}" for item in removed) or f"nothing named {prefix}* to remove")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m toystore.hosts``."""
    options = parser().parse_args(argv)
    if options.command == "check":
        sys.exit(check())
    if options.command == "clean":
        sys.exit(wipe(options.prefix))
    from .up import main as up

    up(options.dir, options.prefix)


if __name__ == "__main__":
    main()
