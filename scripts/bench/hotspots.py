"""
The hot spots of a py-spy profile: the functions with the most samples of
their own (the innermost frame) and in all (anywhere on the stack).

It reads py-spy's collapsed stacks (``--format raw``), one stack a line
with its sample count at the end, e.g. a front-end under
``python -m scripts.bench --cases cached --connections 16 --seconds 40``::

    py-spy record --pid PID --duration 30 --nonblocking --function --format raw -o cached.txt
    python -m scripts.bench.hotspots cached.txt --top 25

py-spy leaves out the samples of a thread that waits (in ``epoll_wait``),
so the percentages are of the time the process was on a CPU.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
_SHORTEN = re.compile(r"^.*?/(?:site-packages|lib/python3\.\d+)/|^.*?/(?=toystore/)")


def frame_name(frame: str) -> str:
    """``function (file:line)`` with the file's path cut to its package: ``render (twisted/web/server.py:12)``."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    where = _SHORTEN.sub("", match.group("file"))
    line = f":{match.group('line')}" if match.group("line") else ""
    return f"{match.group('function')} ({where}{line})"


def read(lines: list[str]) -> tuple[Counter[str], Counter[str], int]:
    """Own and total samples by function, and all samples, of collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [frame_name(f) for f in stack.split(";")[1:]]  # the first is the thread
        if not frames:
            continue
        samples += n
        own[frames[-1]] += n
        for name in set(frames):
            total[name] += n
    return own, total, samples


def main(argv: list[str]) -> None:
    """Print both tables."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench.hotspots",
        description="Top functions of a py-spy raw profile, by own and total samples.",
    )
    parser.add_argument("profile", help="py-spy record --format raw output")
    parser.add_argument("--top", type=int, default=20, help="functions per table (default 20)")
    args = parser.parse_args(argv)
    with open(args.profile) as f:
        own, total, samples = read(f.readlines())
    print(f"{samples} samples")
    for title, counts in (("own", own), ("total", total)):
        print(f"\nby {title} samples:")
        for name, n in counts.most_common(args.top):
            print(f"{100 * n / samples:6.1f}%  {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
