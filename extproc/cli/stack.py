"""What a running stack leaves in its data dir, so later commands can find it."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
    def load(cls, data_dir: Path) -> "StackState | None":
        path = Path(data_dir) / STATE_FILE
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def database_url_for(data_dir: Path, explicit: str | None = None) -> str:
    """The database a command should use: explicit > $DATABASE_URL > the running stack's."""
    if explicit:
        return explicit
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    state = StackState.load(data_dir)
    if state is None:
        raise SystemExit(f"llmproxy: no running stack found in {data_dir} (start one with `llmproxy up`), and DATABASE_URL is not set")
    return state.database_url


def run_in_transaction(url: str, work, *, tables: str, isolation: str | None = None):
    """Run ``await work(conn)`` in one committed transaction on a one-connection engine.

    ``tables`` names what a missing relation means ("gateway-key tables", ...), so a database that was
    never migrated gets a sentence instead of a traceback.
    """
    import asyncio

    from sqlalchemy.exc import ProgrammingError

    from intelligence.store.engine import make_engine

    async def _go():
        engine = make_engine(url, pool_size=1, max_overflow=0)
        try:
            async with engine.connect() as conn:
                if isolation:
                    conn = await conn.execution_options(isolation_level=isolation)
                async with conn.begin():
                    return await work(conn)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(_go())
    except ProgrammingError as exc:
        if "does not exist" in str(exc):
            raise SystemExit(f"llmproxy: the database has no {tables} yet; start the stack once (`llmproxy up`) "
                             "so it migrates the schema") from None
        raise
