#!/usr/bin/env python3
"""Split a hashed lock file by where its packages come from (used by the Dockerfiles).

    python split_lock.py LOCK PYPI_OUT LOCAL_OUT

Requirements pinned to a local version label (``torch==2.13.0+cpu``) are not on PyPI: they go to
LOCAL_OUT, installed from the PyTorch CPU index or a wheel directory; everything else goes to PYPI_OUT,
installed from PyPI only. Each half keeps its ``--hash`` lines, so both installs still run with
``--require-hashes --no-deps`` and no package can come from the wrong index.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


def blocks(text: str) -> list[str]:
    """The requirement blocks of a pip-compile/uv lock: a pin line and its indented continuation lines."""
    out: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") and not line.startswith(" "):
            continue
        if line[0].isspace():
            if out:
                out[-1].append(line)
            continue
        out.append([line])
    return ["\n".join(b) for b in out]


def split(text: str) -> tuple[list[str], list[str]]:
    pypi, local = [], []
    for block in blocks(text):
        m = _PIN.match(block)
        if not m:
            raise ValueError(f"unexpected lock line: {block.splitlines()[0]!r}")
        (local if "+" in m.group(3) else pypi).append(block)
    return pypi, local


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    pypi, local = split(Path(argv[0]).read_text())
    Path(argv[1]).write_text("\n".join(pypi) + "\n")
    Path(argv[2]).write_text("\n".join(local) + "\n" if local else "")
    print(f"{len(pypi)} requirements from PyPI, {len(local)} with a local version label", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
