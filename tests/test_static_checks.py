"""The static checks run with the suite (CI runs `make test`): ruff (lint and format) and the import
contracts of pyproject.toml (the layering, one module knowing Envoy's protobufs, stages independent)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACKAGES = ["extproc", "intelligence", "ui", "tests"]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint() -> None:
    done = _run(sys.executable, "-m", "ruff", "check", *PACKAGES)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_ruff_format() -> None:
    done = _run(sys.executable, "-m", "ruff", "format", "--check", *PACKAGES)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_import_contracts() -> None:
    done = _run(str(BIN / "lint-imports"))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
