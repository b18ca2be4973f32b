"""`llmproxy up`'s supervision policy on real child processes (no stack): restart with back-off, say so,
give up after repeated rapid failures, and the difference between a required and an optional part."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from extproc.cli.up import BACKOFF_START_S, Part, Supervisor


def crashing(code: int = 3) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.exit({code})"]


def run_until(sup: Supervisor, done, timeout: float = 20.0) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fatal = sup.tick()
        if fatal or done():
            return fatal
        time.sleep(0.05)
    raise AssertionError("supervision did not get there in time")


@pytest.fixture
def sup(tmp_path: Path) -> Supervisor:
    (tmp_path / "logs").mkdir()
    return Supervisor(tmp_path, restart_limit=3)


def test_an_optional_part_is_restarted_with_back_off_then_given_up(sup: Supervisor, capsys) -> None:
    part = Part("worker", lambda: crashing(3), {})
    sup.start(part)
    started = time.monotonic()
    fatal = run_until(sup, lambda: part.state == "failed")
    took = time.monotonic() - started
    assert fatal is None  # the gateway goes on without it
    assert part.restarts == 2 and part.last_exit == "exited with code 3"
    assert took >= BACKOFF_START_S + 2 * BACKOFF_START_S  # 0.5 s, then 1 s between the three runs
    err = capsys.readouterr().err
    assert "worker exited with code 3; restarting it in 0.5 s" in err and "restarting it in 1 s" in err
    assert "giving up on it" in err and "goes on without it" in err
    assert part.describe()["state"] == "failed"


def test_a_required_part_that_keeps_failing_stops_the_stack(sup: Supervisor) -> None:
    part = Part("sidecar", lambda: crashing(1), {}, required=True)
    sup.start(part)
    fatal = run_until(sup, lambda: False)
    assert fatal is not None and "sidecar exited with code 1" in fatal and "stopping the stack" in fatal


def test_a_part_that_comes_back_is_reported_serving_and_keeps_its_count(sup: Supervisor, tmp_path: Path, capsys) -> None:
    flag = tmp_path / "crashed-once"
    script = f"import pathlib, sys, time\np = pathlib.Path({str(flag)!r})\nif not p.exists():\n    p.touch(); sys.exit(9)\ntime.sleep(30)\n"
    part = Part("intelligence", lambda: [sys.executable, "-c", script], {}, ready=lambda: flag.exists())
    sup.start(part)
    try:
        run_until(sup, lambda: part.restarts == 1 and part.state == "running")
        assert part.last_exit == "exited with code 9" and part.exited() is None
        assert "intelligence running again" in capsys.readouterr().err
        assert sup.pids()["intelligence"] == part.pid
    finally:
        sup.stop_all()
    assert part.exited() is not None
