"""The database away and the spool's disk full (a 256 KiB tmpfs): the recorder holds records in memory up
to its bound, then drops them, and says so everywhere: `llmproxy status`, an ERROR in the sidecar's log,
the `llmproxy_recorder_dropped_total` metric, and a critical `request_log_loss` event once the database is
back. Nothing is lost silently: the records missing from the log are exactly the ones counted as dropped.

Mounting the tmpfs needs root (CAP_SYS_ADMIN); without it the test is skipped with that reason (the
behaviour itself is also covered without root by tests/reliability/test_recorder_faults.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from intelligence.store.engine import asyncpg_dsn
from tests.e2e.conftest import Stack, start_stack

from .conftest import create_database
from .harness import Traffic, check_log, new_session, status, summarize, wait_for

pytestmark = pytest.mark.e2e

MEMORY_MAX = 40


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


@pytest.fixture(scope="module")
def full_disk_stack(tmp_path_factory: pytest.TempPathFactory, pg_server_url: str, upstream) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("diskfull")
    spool = tmp / "data" / "spool"
    if not _mount_tmpfs(spool, "256k"):
        pytest.skip("cannot mount a tmpfs for the spool (needs root): the disk-full fault runs as root only")
    try:
        url = create_database(pg_server_url, "diskfull")
        stack = start_stack(tmp, url, upstream, env={"LLMPROXY_RECORDER_MEMORY_MAX": str(MEMORY_MAX)})
        yield stack
        _allow(url, True)
        assert stack.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(spool)], capture_output=True)


def _allow(url: str, allowed: bool) -> None:
    """The stack's database accepting connections, or refusing every one (a database outage for this stack only)."""
    name = url.split("?")[0].rsplit("/", 1)[1]

    async def run() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(url.replace(f"/{name}", "/postgres")))
        try:
            await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
            if not allowed:
                await conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1", name)
        finally:
            await conn.close()

    asyncio.run(run())


async def _events(url: str) -> list:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await conn.fetch("select severity, title, detail from events where kind = 'request_log_loss'")
    finally:
        await conn.close()


def test_spool_disk_full_is_loud_not_silent(full_disk_stack: Stack, report) -> None:
    stack = full_disk_stack
    session = new_session("disk-full")
    traffic = Traffic(stack.url, session, rate=20).start()
    try:
        time.sleep(2)
        _allow(stack.db_url, False)
        t_down = time.monotonic()
        wait_for(lambda: (status(stack)[1].get("recorder") or {}).get("dropped", 0) > 20, 90, "records dropped")
        rc, during = status(stack)
        _allow(stack.db_url, True)
        down_s = time.monotonic() - t_down
        wait_for(lambda: (status(stack)[1].get("recorder") or {}).get("held", 1) == 0, 90, "memory drained")
        wait_for(lambda: not list((stack.data_dir / "spool").glob("segment-*.jsonl")), 90, "spool drained")
        time.sleep(2)
    finally:
        _allow(stack.db_url, True)
        outcomes = traffic.stop()
    failed = [o for o in outcomes if not o.complete]
    assert not failed, summarize(failed)  # the clients never noticed
    problems = " ".join(during["problems"])
    assert "DROPPED" in problems and "refuses records" in problems, during["problems"]
    recorder = status(stack)[1]["recorder"]
    dropped = recorder["dropped"]
    log = check_log(stack.db_url, session, outcomes, wait=20)
    assert not log.duplicates and not log.wrong_id
    # exactly the dropped records are missing: each loss is counted, none is silent
    assert len(log.missing) == dropped, (len(log.missing), dropped)
    sidecar_log = (stack.data_dir / "logs" / "sidecar.log").read_text(errors="replace")
    assert "ERROR" in sidecar_log and "DROPPED" in sidecar_log
    wait_for(lambda: asyncio.run(_events(stack.db_url)), 30, "the request_log_loss event")
    rows = asyncio.run(_events(stack.db_url))
    assert rows[0]["severity"] == "critical" and sum(json.loads(r["detail"])["dropped"] for r in rows) == dropped, rows
    report(
        f"database refusing connections {down_s:.0f} s and the spool's disk full (256 KiB tmpfs), memory bound {MEMORY_MAX}",
        f"{summarize(outcomes)}: clients unaffected",
        f"{log.rows} rows; {dropped} records dropped and exactly those {len(log.missing)} missing; status said "
        f"{[p for p in during['problems'] if 'DROPPED' in p][0]!r}; ERROR in the sidecar log; critical request_log_loss event",
    )
