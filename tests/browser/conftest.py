"""A running dashboard for the browser check: the real `llmproxy up` (Envoy, sidecar, Streamlit) on
ephemeral loopback ports, a seeded database of its own, and the local fake provider upstream."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from extproc.testing.fakes import FakeProvider
from intelligence.store.engine import asyncpg_dsn
from tests.conftest import database_url
from tests.ui.evil_seed import EVIL_HOST, EvilRows, seed_evil_rows

CHROMIUM = "/usr/bin/chromium"
LLMPROXY = str(Path(sys.executable).with_name("llmproxy"))
SEED_ROWS = 3000
# Point the check at an existing seeded database instead (e.g. `llmproxy seed --rows 1000000` for the
# render-time figures in docs/dashboard.md); it is used as is and not dropped.
EXISTING_DB_ENV = "LLMPROXY_BROWSER_DATABASE_URL"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Dashboard:
    url: str  # the Streamlit app
    gateway: str
    db_url: str
    proc: subprocess.Popen
    log: Path
    sample_request: str  # an exchange whose tools were renamed for the provider
    sample_session: str  # a recent conversation of a few turns


def _require_browser() -> None:
    """The browser check runs in CI: a missing browser is a failure, never a skip."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: install Debian's chromium package (`make sysdeps`, or apt-get install -y chromium)")
    import playwright.sync_api  # noqa: F401 - a dependency in pyproject.toml: an ImportError fails the run


async def _create_seeded(server: str) -> str:
    from extproc.cli.seed import seed

    name = f"browser_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = database_url(server, name)
    await seed(url, SEED_ROWS, days=2, embed_sample=600, use_model=False, batch=1000, progress=False)
    # alerts, blocked/redacted exchanges, verdicts, quarantined keys, experiments and Claude calls
    # for the Security, Experiments and System pages
    from tests.ui.intel_seed import seed_intel_rows

    await seed_intel_rows(url, named_policy=True)
    return url


async def _samples(url: str) -> tuple[str, str]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rid = await conn.fetchval(
            "SELECT request_id FROM exchanges WHERE tool_aliases <> '{}'::jsonb AND status = 200 "
            "AND api = 'chat' ORDER BY started_at DESC LIMIT 1"
        )
        sid = await conn.fetchval(
            "SELECT session_id FROM sessions WHERE request_count BETWEEN 3 AND 8 ORDER BY last_seen DESC LIMIT 1"
        )
        return rid, sid
    finally:
        await conn.close()


async def _drop(server: str, url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1].split("?")[0]}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def dashboard(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    _require_browser()
    existing = os.environ.get(EXISTING_DB_ENV)
    db_url = existing or asyncio.run(_create_seeded(pg_server_url))
    sample_request, sample_session = asyncio.run(_samples(db_url))
    fake = FakeProvider().start_in_thread()
    tmp = tmp_path_factory.mktemp("dashboard")
    data_dir = tmp / "data"
    port, admin, sidecar, ui = free_port(), free_port(), free_port(), free_port()
    log = tmp / "up.log"
    # the background processes (pattern worker, intelligence jobs) would compete for this machine's two
    # cores with Chromium and the dashboard: CI checks the dashboard without them (the figures with the full
    # stack come from `llmproxy bench ui`, docs/dashboard.md)
    args = [
        LLMPROXY,
        "up",
        "--no-worker",
        "--no-intelligence",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--admin-port",
        str(admin),
        "--sidecar-port",
        str(sidecar),
        "--ui-port",
        str(ui),
        "--upstream",
        f"openai={fake.base_url}",
        "--upstream",
        f"anthropic={fake.base_url}",
        "--upstream",
        f"openrouter={fake.base_url}/api",
    ]
    env = {**os.environ, "DATABASE_URL": db_url}
    for key in ("ANTHROPIC_API_KEY", "OPENROUTER_API_KEY"):
        env.pop(key, None)
    proc = subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    board = Dashboard(
        url=f"http://127.0.0.1:{ui}",
        gateway=f"http://127.0.0.1:{port}",
        db_url=db_url,
        proc=proc,
        log=log,
        sample_request=sample_request,
        sample_session=sample_session,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llmproxy up exited {proc.returncode}:\n{log.read_text()}")
            try:
                if (
                    httpx.get(f"{board.gateway}/healthz", timeout=1).status_code == 200
                    and httpx.get(f"{board.url}/_stcore/health", timeout=1).text == "ok"
                ):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"stack did not come up:\n{log.read_text()}")
            time.sleep(0.3)
        yield board
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        fake.stop_thread()
        if not existing:
            asyncio.run(_drop(pg_server_url, db_url))
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def evil(dashboard: Dashboard) -> EvilRows:
    """Client strings and Claude labels full of Markdown links, images and HTML, added when the first test
    that needs them runs (after the screenshots: an alert titled like that would sit in every page's banner)."""
    # in a thread of its own: the sync Playwright API keeps an event loop running on this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, seed_evil_rows(dashboard.db_url)).result(timeout=120)


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # DNS rebinding, simulated: this name resolves to the dashboard's loopback address
    f"--host-resolver-rules=MAP {EVIL_HOST} 127.0.0.1",
]


@pytest.fixture(scope="module")
def browser(dashboard: Dashboard):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
