"""Aggregate a py-spy ``--format raw`` profile: self and inclusive share per function.

Usage: ``.venv/bin/python bench/pyspy_top.py PROFILE.txt [--top 25] [--per N]``

Each line of a raw profile is ``frame;frame;...;leaf COUNT`` (root first). A function's
*self* share counts the samples where it is the leaf; its *inclusive* share counts the
samples whose stack contains it at least once. With ``--per N`` (N = queries answered
while sampling, and ``--seconds``/``--rate``) the shares are also shown as µs per query.
Functions are named ``name (file)`` without line numbers, so one function is one row.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")


def _function(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    name, path = match.groups()
    for marker in ("site-packages/", "lib/python3", "src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def aggregate(text: str) -> tuple[Counter[str], Counter[str], int]:
    self_: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        stack, count = match.group(1), int(match.group(2))
        frames = [_function(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        self_[frames[-1]] += count
        for name in set(frames):
            incl[name] += count
    return self_, incl, total


def report(path: Path, *, top: int = 25, per: int = 0, seconds: float = 0.0) -> str:
    self_, incl, total = aggregate(path.read_text(errors="replace"))
    if not total:
        return "no samples"
    us_per_sample = seconds * 1e6 / total / per if per and seconds else 0.0
    lines = [f"{total} samples" + (f", {per} queries" if per else "")]
    for title, counter in (("self", self_), ("inclusive", incl)):
        lines.append(f"\n{title:>9}  {'µs/q' if us_per_sample else ''}  function")
        for name, count in counter.most_common(top):
            share = 100.0 * count / total
            extra = f"{count * us_per_sample:6.2f}" if us_per_sample else ""
            lines.append(f"{share:8.1f}%  {extra}  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--per", type=int, default=0, help="queries answered while sampled")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="CPU seconds of the process while sampled (for µs/query)")
    args = parser.parse_args()
    print(report(args.profile, top=args.top, per=args.per, seconds=args.seconds))


if __name__ == "__main__":
    main()
