"""End-to-end harness: the real `llmproxy up` (Envoy + sidecar) on ephemeral loopback ports, against
the real test Postgres and local fake providers. One stack per test session; tests that stop the
database start their own."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from extproc.testing.fakes import FakeProvider
from intelligence.records import ExchangeRecord

LLMPROXY = str(Path(sys.executable).with_name("llmproxy"))
# One audit key for every stack and CLI call of the run: entries one process writes, another verifies.
os.environ.setdefault("LLMPROXY_AUDIT_KEY", secrets.token_urlsafe(48))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    proc: subprocess.Popen
    data_dir: Path
    port: int
    admin_port: int
    sidecar_port: int
    db_url: str
    fake: FakeProvider
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, request_id: str, timeout: float = 10.0) -> ExchangeRecord:
        """Wait until the exchange is in the database and return it."""
        return asyncio.run(_wait_record(self.db_url, request_id, timeout))

    def log_text(self, name: str) -> str:
        p = self.data_dir / "logs" / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


async def _wait_record(db_url: str, request_id: str, timeout: float) -> ExchangeRecord:
    from intelligence.store.engine import make_engine
    from intelligence.store.repositories import ExchangeRepository

    engine = make_engine(db_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            async with engine.connect() as conn:
                rec = await ExchangeRepository(conn).get(request_id)
            if rec is not None:
                return rec
            if time.monotonic() > deadline:
                raise AssertionError(f"exchange {request_id} not logged within {timeout}s")
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


def start_stack(
    tmp: Path,
    db_url: str,
    fake: FakeProvider,
    *extra_args: str,
    env: dict[str, str] | None = None,
    worker: bool = False,
    intelligence: bool = False,
) -> Stack:
    port, admin, sidecar = free_port(), free_port(), free_port()
    data_dir = tmp / "data"
    brain = ["--control-port", str(free_port())] if intelligence else ["--no-intelligence"]
    args = [
        LLMPROXY,
        "up",
        "--no-ui",
        *([] if worker else ["--no-worker"]),
        *brain,
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--admin-port",
        str(admin),
        "--sidecar-port",
        str(sidecar),
        "--upstream",
        f"openai={fake.base_url}",
        "--upstream",
        f"anthropic={fake.base_url}",
        "--upstream",
        f"openrouter={fake.base_url}/api",
        *extra_args,
    ]
    out = open(tmp / "up.log", "wb")
    proc = subprocess.Popen(
        args,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "DATABASE_URL": db_url, **(env or {})},
    )
    stack = Stack(proc, data_dir, port, admin, sidecar, db_url, fake)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llmproxy up exited {proc.returncode}:\n{(tmp / 'up.log').read_text()}")
        if (data_dir / "stack.json").exists():
            try:
                if httpx.get(f"{stack.url}/healthz", timeout=1).status_code == 200:
                    return stack
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    stack.stop()
    raise RuntimeError(f"stack did not come up:\n{(tmp / 'up.log').read_text()}")


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeProvider]:
    f = FakeProvider().start_in_thread()
    yield f
    f.stop_thread()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, pg_url: str, fake: FakeProvider) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    s = start_stack(tmp, pg_url, fake, "--allow-target", f"127.0.0.1:{fake.port}", "--idle-timeout", "3")
    yield s
    rc = s.stop()
    assert rc == 0, f"llmproxy up exited {rc}"


def last_request(fake: FakeProvider, path_suffix: str) -> Any:
    for r in reversed(fake.requests):
        if r.path.endswith(path_suffix):
            return r
    raise AssertionError(f"upstream never received {path_suffix}")


def body_json(body) -> Any:
    if body is None:
        return None
    return body.json if body.json is not None else json.loads(body.text)
