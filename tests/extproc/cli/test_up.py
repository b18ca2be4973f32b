"""`llmproxy up` refuses a start that would make the gateway an open relay for the operator's keys."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from extproc.cli.up import open_relay

LLMPROXY = str(Path(sys.executable).with_name("llmproxy"))
KEYS = {"LLMPROXY_OPENAI_API_KEY": "sk-op"}


def test_open_relay_rule() -> None:
    assert "--auth required" in (open_relay("0.0.0.0", "passthrough", KEYS) or "")
    assert "--auth required" in (open_relay("192.0.2.10", "passthrough", KEYS) or "")
    assert open_relay("0.0.0.0", "required", KEYS) is None  # gateway keys decide who may spend them
    assert open_relay("127.0.0.1", "passthrough", KEYS) is None and open_relay("::1", "passthrough", KEYS) is None
    assert open_relay("0.0.0.0", "passthrough", {}) is None  # clients bring their own keys


def test_up_stops_before_starting_anything(tmp_path: Path) -> None:
    env = {**os.environ, **KEYS}
    env.pop("LLMPROXY_AUTH_MODE", None)
    r = subprocess.run([LLMPROXY, "up", "--listen", "0.0.0.0", "--data-dir", str(tmp_path)], capture_output=True, text=True,
                       timeout=60, env=env)  # fmt: skip
    assert r.returncode == 2 and "open" not in r.stdout and "LLMPROXY_OPENAI_API_KEY" in r.stderr
    assert not (tmp_path / "stack.json").exists() and not (tmp_path / "pgdata").exists()
