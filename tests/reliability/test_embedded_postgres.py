"""The embedded PostgreSQL's postmaster killed (SIGKILL) under `llmproxy up`: `up` starts it again on the
same data directory (its crash recovery replays the WAL), the gateway serves throughout, and the log ends
up complete."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Stack

from .harness import Traffic, check_log, kill, new_session, stack_state, start_full_stack, status, summarize, up_output, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory, upstream) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("embedded")
    stack = start_full_stack(tmp, None, upstream, "--no-ui", "--no-worker", "--no-intelligence")
    yield stack
    assert stack.stop() == 0


def test_postmaster_killed_is_restarted_by_up(embedded_stack: Stack, report) -> None:
    stack = embedded_stack
    assert stack_state(stack)["embedded_db"]
    session = new_session("postmaster")
    traffic = Traffic(stack.url, session, rate=20).start()
    try:
        time.sleep(2)
        postmaster = stack_state(stack)["pids"]["postgres"]
        t_kill = time.monotonic()
        kill(postmaster)
        took = wait_for(
            lambda: stack_state(stack)["supervision"]["postgres"]["restarts"] >= 1 and status(stack)[0] == 0,
            120,
            "PostgreSQL restarted by up",
        )
        time.sleep(3)
    finally:
        outcomes = traffic.stop()
    failed = [o for o in outcomes if not o.complete]
    assert not failed, summarize(failed)
    sup = stack_state(stack)["supervision"]["postgres"]
    assert sup["state"] == "running" and sup["pid"] != postmaster and "postmaster pid" in sup["last_exit"]
    assert "postgres stopped (postmaster pid" in up_output(stack) and "postgres running again" in up_output(stack)
    log = check_log(stack.db_url, session, outcomes)
    log.assert_exactly_once()
    report(
        "embedded PostgreSQL postmaster SIGKILL under `llmproxy up`",
        f"{summarize(outcomes)}; `up` had it running again {took:.0f} s after the kill ({sup['restarts']} restart(s))",
        log.holds() + "; what was written meanwhile waited in the spool",
        outage_s=round(time.monotonic() - t_kill, 1),
    )
