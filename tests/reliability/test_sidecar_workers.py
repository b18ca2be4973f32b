"""Two sidecar workers behind the real Envoy (`llmproxy up --sidecar-workers 2`): both serve requests,
each records into its own spool, `status` checks both, and every completed exchange is logged once."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import start_stack

from .conftest import create_database
from .harness import Traffic, check_log, kill, new_session, pid_of, stack_state, status, summarize, wait_for

pytestmark = pytest.mark.e2e


def _free_pair() -> int:
    """A port P with P + 1 free too (the second worker's)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise AssertionError("no two consecutive free ports")


def _written(data_dir: Path, spool: str) -> int:
    try:
        return int(json.loads((data_dir / spool / "recorder.json").read_text() or "{}").get("written") or 0)
    except (OSError, ValueError):
        return 0


def test_two_workers_share_the_requests(tmp_path: Path, pg_server_url: str, upstream) -> None:
    first = _free_pair()
    stack = start_stack(
        tmp_path, create_database(pg_server_url, "workers"), upstream, "--sidecar-workers", "2", "--sidecar-port", str(first)
    )
    try:
        state = stack_state(stack)
        assert state["ports"]["sidecar"] == first and state["ports"]["sidecar-1"] == first + 1
        assert state["pids"]["sidecar"] != state["pids"]["sidecar-1"]
        code, doc = status(stack)
        assert code == 0 and doc["parts"]["sidecar"] and doc["parts"]["sidecar-1"], doc
        session = new_session("workers")
        outcomes = Traffic(stack.url, session, rate=20).start()
        time.sleep(3)
        outcomes = outcomes.stop()
        assert outcomes and all(o.complete for o in outcomes), summarize(outcomes)
        # Envoy sends the streams round robin: each worker served (and recorded) about half
        wait_for(lambda: _written(stack.data_dir, "spool") > 0 and _written(stack.data_dir, "spool-1") > 0, 30, "both record")
        one, two = _written(stack.data_dir, "spool"), _written(stack.data_dir, "spool-1")
        assert min(one, two) >= len(outcomes) // 4, (one, two, len(outcomes))
        check_log(stack.db_url, session, outcomes).assert_exactly_once()
    finally:
        assert stack.stop() == 0


def test_a_killed_worker_leaves_the_rotation_until_it_serves_again(tmp_path: Path, pg_server_url: str, upstream) -> None:
    """With two workers, a crashed one costs the requests of about a second, not half of the requests until
    its restart: Envoy ejects it at its first refused connection (outlier detection) and its gRPC health
    check brings it back once the restarted worker serves."""
    first = _free_pair()
    stack = start_stack(
        tmp_path, create_database(pg_server_url, "workers_kill"), upstream, "--sidecar-workers", "2", "--sidecar-port", str(first)
    )
    try:
        session = new_session("worker-kill")
        traffic = Traffic(stack.url, session, rate=20).start()
        time.sleep(3)
        t_kill = time.monotonic()
        old = pid_of(stack, "sidecar-1")
        kill(old)
        # until the supervisor's restart serves again (a cold worker loads its detectors for seconds)
        wait_for(
            lambda: stack_state(stack)["pids"].get("sidecar-1") not in (None, old) and status(stack)[0] == 0, 240, "worker back"
        )
        back_s = time.monotonic() - t_kill
        time.sleep(3)
        outcomes = traffic.stop()
        after = [o for o in outcomes if o.sent_at >= t_kill]
        failed = [o for o in after if not o.complete]
        late = [o for o in failed if o.sent_at > t_kill + 2.0]
        assert back_s > 4 and len(after) >= 60, (back_s, summarize(after))  # else the test shows nothing
        assert not late, f"failures more than 2 s after the kill: {summarize(late)}"
        assert len(failed) <= 20, summarize(failed)  # at most the first second's share
        assert all(o.status == 503 for o in failed), summarize(failed)  # fail closed, never forwarded unscreened
        check_log(stack.db_url, session, outcomes).assert_exactly_once()
        # the restarted worker is back in the rotation: it records again
        spooled = _written(stack.data_dir, "spool-1")
        again = new_session("worker-back")
        more = Traffic(stack.url, again, rate=20).start()
        time.sleep(3)
        later = more.stop()
        assert later and all(o.complete for o in later), summarize(later)
        wait_for(lambda: _written(stack.data_dir, "spool-1") > spooled, 30, "restarted worker records")
        check_log(stack.db_url, again, later).assert_exactly_once()
    finally:
        assert stack.stop() == 0
