"""Every command the documentation marks runnable is run, and must succeed.

The marker: a fenced block whose info string contains ``runnable`` (```` ```sh runnable ````), or a fenced
block right after an ``<!-- runnable -->`` line. Such a block runs as one ``bash -euo pipefail`` script, in a
temporary directory that links the repository's top-level files (relative paths work, nothing is written to
the checkout), with ``.venv/bin`` first on PATH, no DATABASE_URL and a time limit. Mark only commands that
are quick and need neither the network nor a running stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT_S = 180
MIN_COMMANDS = 8
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*(.*)$")


@dataclass
class Block:
    path: Path
    line: int
    script: str

    @property
    def commands(self) -> list[str]:
        return [ln for ln in self.script.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def runnable_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    marked = False
    while i < len(lines):
        line = lines[i]
        m = _FENCE.match(line)
        if line.strip() == "<!-- runnable -->":
            marked = True
        elif m:
            fence, info = m.group(2), m.group(3).split()
            body, j = [], i + 1
            while j < len(lines) and not lines[j].strip().startswith(fence):
                body.append(lines[j])
                j += 1
            if marked or "runnable" in info:
                blocks.append(Block(path, i + 1, "\n".join(body)))
            marked = False
            i = j
        elif line.strip():
            marked = False
        i += 1
    return blocks


def run_block(block: Block, workdir: Path) -> subprocess.CompletedProcess:
    for entry in ROOT.iterdir():
        if entry.name.startswith(".") or (workdir / entry.name).exists():
            continue
        (workdir / entry.name).symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LLMPROXY_DATA_DIR")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env.update(HOME=str(workdir), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.script], cwd=workdir, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )


ALL = [b for path in DOCS for b in runnable_blocks(path)]


def test_enough_runnable_commands_in_the_docs() -> None:
    commands = [c for b in ALL for c in b.commands]
    assert len(commands) >= MIN_COMMANDS, commands
    assert len({b.path.name for b in ALL}) >= 3


@pytest.mark.parametrize("block", ALL, ids=[f"{b.path.name}:{b.line}" for b in ALL])
def test_runnable_block_succeeds(block: Block, tmp_path: Path) -> None:
    r = run_block(block, tmp_path)
    assert r.returncode == 0, (
        f"{block.path.relative_to(ROOT)}:{block.line} failed ({r.returncode}):\n{block.script}\n"
        f"--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
    )


def test_marker_parsing_and_a_failing_block(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n\n```sh\nnot run\n```\n\n```sh runnable\necho one\n```\n\n<!-- runnable -->\n```sh\n"
        "# a comment\nfalse\necho never\n```\n\n<!-- runnable -->\nprose in between\n```sh\nnot run either\n```\n"
    )
    blocks = runnable_blocks(doc)
    assert [b.commands for b in blocks] == [["echo one"], ["false", "echo never"]]
    work = tmp_path / "w1"
    work.mkdir()
    assert run_block(blocks[0], work).stdout == "one\n"
    work = tmp_path / "w2"
    work.mkdir()
    failed = run_block(blocks[1], work)
    assert failed.returncode != 0 and "never" not in failed.stdout
