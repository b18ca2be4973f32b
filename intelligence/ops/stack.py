"""What a running stack (`llmproxy up`) leaves in its data dir, so later commands and the dashboard can find it."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

STATE_FILE = "stack.json"

DEFAULT_PORTS = {"gateway": 10000, "admin": 9901, "sidecar": 50051, "ui": 8501, "control": 50052}


@dataclass
class StackState:
    data_dir: str
    database_url: str
    ports: dict[str, int]
    pids: dict[str, int] = field(default_factory=dict)
    listen_host: str = "127.0.0.1"
    embedded_db: bool = True
    started_at: str = ""
    # `llmproxy up`'s supervision, per part (sidecar, envoy, worker, intelligence, ui, postgres):
    # {"state": running|restarting|failed|stopped, "pid", "restarts", "last_exit", "last_exit_at", "since"}
    supervision: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the intelligence settings the stack runs with (ClaudeSettings/IntelligenceFlags.describe(): never the key)
    intelligence: dict[str, Any] = field(default_factory=dict)

    def save(self) -> Path:
        path = Path(self.data_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        # The database URL can carry a password: owner-only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh, indent=2)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, data_dir: Path) -> StackState | None:
        path = Path(data_dir) / STATE_FILE
        if not path.exists():
            return None
        known = {f.name for f in fields(cls)}
        # fields a newer `llmproxy up` added are ignored rather than fatal
        return cls(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0:1] != ["Z"]


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


__all__ = ["DEFAULT_PORTS", "STATE_FILE", "StackState", "pid_alive", "port_free"]
