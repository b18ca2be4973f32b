"""Processes dying under traffic: the sidecar killed (SIGKILL) and stopped gracefully (SIGTERM), Envoy
killed and hot-restarted. `llmproxy up` restarts what died; Envoy fails closed while the sidecar is away;
every exchange a client completed is in the log exactly once (the sidecar's write-ahead journal covers
the records it still held in memory when it was killed)."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest
import yaml

from tests.e2e.conftest import Stack

from .harness import (
    Outcome,
    Traffic,
    check_log,
    kill,
    new_session,
    pid_of,
    prompt_of,
    send,
    stack_state,
    status,
    summarize,
    up_output,
    wait_for,
)

pytestmark = pytest.mark.e2e

LONG_REPLY = " ".join(f"word{i}" for i in range(16))  # a stream of 19 events
HEALTHY_WITHIN_S = 240  # a cold sidecar loads its detectors first: ~10 s on an idle 2-core machine, far more when shared

_STATUS_CODES = {"ServiceUnavailable": 503, "InternalServerError": 500, "BadGateway": 502, "GatewayTimeout": 504}


def ensure_healthy(stack: Stack) -> None:
    wait_for(lambda: status(stack)[0] == 0, HEALTHY_WITHIN_S, "stack healthy")


def fail_closed_status(stack: Stack) -> int:
    """The status Envoy answers when the sidecar cannot be reached: ext_proc's `status_on_error`, 500 when unset."""
    cfg = yaml.safe_load((stack.data_dir / "envoy.runtime.yaml").read_text())
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                for h in f.get("typed_config", {}).get("http_filters", []):
                    if h["name"] == "envoy.filters.http.ext_proc":
                        code = (h["typed_config"].get("status_on_error") or {}).get("code", 500)
                        return _STATUS_CODES.get(code, code) if isinstance(code, str) else int(code)
    raise AssertionError("no ext_proc filter in the runtime config")


def _upstream_saw(stack: Stack, outcomes: list[Outcome]) -> list[str]:
    markers = {o.marker for o in outcomes}
    seen = []
    for r in list(stack.fake.requests):
        text = r.body.decode("utf-8", "replace")
        seen += [m for m in markers if prompt_of(m) in text]
    return seen


def test_sidecar_killed_under_traffic(gateway: Stack, report) -> None:
    ensure_healthy(gateway)
    restarts_before = stack_state(gateway)["supervision"]["sidecar"]["restarts"]
    expected = fail_closed_status(gateway)
    session = new_session("sidecar-kill")
    traffic = Traffic(gateway.url, session, rate=20).start()
    try:
        time.sleep(4)
        t_kill = time.monotonic()
        kill(pid_of(gateway, "sidecar"))
        recovered_s = traffic.wait_until(
            lambda outs: len(outs) >= 5 and all(o.complete for o in sorted(outs, key=lambda o: o.sent_at)[-5:]),
            HEALTHY_WITHIN_S,
            after=t_kill + 0.5,
        )
        time.sleep(2)
    finally:
        outcomes = traffic.stop()
    before = [o for o in outcomes if o.sent_at < t_kill]
    during = [o for o in outcomes if t_kill + 0.2 <= o.sent_at < t_kill + recovered_s and not o.complete]
    # fail closed: exactly the configured status, and nothing reached the provider unscreened
    assert during, "the kill went unnoticed: no request failed while the sidecar was away"
    assert {o.status for o in during} == {expected}, summarize(during)
    assert _upstream_saw(gateway, during) == []
    # with a body that says so, in the JSON error shape the SDKs read (envoy.yaml local_reply_config)
    errors = [json.loads(o.body)["error"] for o in during]
    assert {e["type"] for e in errors} == {"gateway_unavailable"}, errors[:3]
    assert all("not forwarded" in e["message"] and e["code"].startswith("ext_proc") for e in errors), errors[:3]
    # what the supervisor says
    sup = stack_state(gateway)["supervision"]["sidecar"]
    assert sup["restarts"] == restarts_before + 1 and sup["last_exit"] == "was killed by SIGKILL"
    out = up_output(gateway)
    assert "sidecar was killed by SIGKILL; restarting it in" in out and "sidecar serving again" in out
    log = check_log(gateway.db_url, session, outcomes)
    log.assert_exactly_once()
    report(
        "sidecar SIGKILL under 20 req/s",
        f"{summarize(before)} before; then {len(during)} x {expected} (fail closed, none forwarded) for "
        f"{recovered_s:.1f} s until the restarted sidecar served; {summarize(outcomes)} in all",
        log.holds() + "; records still queued in the killed process came back from its journal",
        outage_s=round(recovered_s, 1),
    )


def test_sidecar_sigterm_finishes_in_flight_streams(gateway: Stack, report) -> None:
    ensure_healthy(gateway)
    session = new_session("sigterm")
    slow_marker = f"{session}-slow"
    result: list[Outcome] = []
    slow_headers = {"x-session-id": session, "x-fake-chunk-delay-ms": "150", "x-fake-reply": LONG_REPLY}

    def slow() -> None:
        with httpx.Client() as client:
            result.append(
                send(client, gateway.url, slow_marker, stream=True, headers=slow_headers, timeout=60, expect=LONG_REPLY)
            )

    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(1.0)  # the stream is under way: its first events are out
    pid = pid_of(gateway, "sidecar")
    t_term = time.monotonic()
    kill(pid, signal.SIGTERM)
    worker.join(60)
    [outcome] = result
    stream_s = outcome.latency_s
    assert outcome.complete, f"the in-flight stream was cut by a graceful stop: {outcome.seen}"
    assert stream_s > 2.0  # it really was in flight when SIGTERM came (19 events, 150 ms apart)
    wait_for(lambda: "sidecar exited with code 0" in up_output(gateway), 30, "the sidecar to exit after draining")
    ensure_healthy(gateway)
    back_s = time.monotonic() - t_term
    log = check_log(gateway.db_url, session, result)
    log.assert_exactly_once()
    assert "incomplete" not in log.flags[slow_marker], log.flags[slow_marker]
    report(
        "sidecar SIGTERM with a 2.8 s stream in flight",
        f"the stream completed ({stream_s:.1f} s, [DONE] and the whole text); new requests fail closed until the "
        f"restarted sidecar serves ({back_s:.0f} s after SIGTERM)",
        log.holds() + ", the stream's record complete (no `incomplete` flag)",
    )


def test_envoy_killed_and_restarted(gateway: Stack, report) -> None:
    ensure_healthy(gateway)
    restarts_before = stack_state(gateway)["supervision"]["envoy"]["restarts"]
    session = new_session("envoy-kill")
    traffic = Traffic(gateway.url, session, rate=20).start()
    try:
        time.sleep(3)
        t_kill = time.monotonic()
        kill(pid_of(gateway, "envoy"))
        recovered_s = traffic.wait_until(
            lambda outs: len(outs) >= 5 and all(o.complete for o in sorted(outs, key=lambda o: o.sent_at)[-5:]),
            120,
            after=t_kill + 0.2,
        )
        time.sleep(2)
    finally:
        outcomes = traffic.stop()
    failed = [o for o in outcomes if not o.complete]
    # refused, reset, or (a stream in flight) cut: never an error answer from a half-dead gateway
    assert {o.status for o in failed} <= {None, 200} and all(o.status is None or o.error for o in failed), summarize(failed)
    sup = stack_state(gateway)["supervision"]["envoy"]
    assert sup["restarts"] == restarts_before + 1 and sup["last_exit"] == "was killed by SIGKILL"
    log = check_log(gateway.db_url, session, outcomes)
    log.assert_exactly_once()
    cut = [m for m, f in log.flags.items() if f.get("incomplete")]
    report(
        "Envoy SIGKILL under 20 req/s",
        f"connections refused or reset for {recovered_s:.1f} s while `up` restarted Envoy; {summarize(outcomes)}",
        log.holds() + f"; {len(cut)} exchanges cut by the kill are logged with flags.incomplete",
        outage_s=round(recovered_s, 1),
    )


def test_envoy_hot_restart_drops_nothing(gateway: Stack, report) -> None:
    ensure_healthy(gateway)
    session = new_session("hot-restart")
    long_marker = f"{session}-long"
    result: list[Outcome] = []

    def long_stream() -> None:
        with httpx.Client() as client:
            headers = {"x-session-id": session, "x-fake-chunk-delay-ms": "200", "x-fake-reply": LONG_REPLY}
            result.append(send(client, gateway.url, long_marker, stream=True, headers=headers, timeout=60, expect=LONG_REPLY))

    traffic = Traffic(gateway.url, session, rate=20).start()
    try:
        time.sleep(2)
        worker = threading.Thread(target=long_stream)
        worker.start()
        time.sleep(0.5)
        kill(stack_state(gateway)["pids"]["up"], signal.SIGHUP)
        wait_for(lambda: "Envoy epoch 0 drained and exited" in up_output(gateway), 60, "the old epoch to drain")
        worker.join(60)
        time.sleep(1)
    finally:
        outcomes = traffic.stop()
    [stream] = result
    assert stream.complete, f"the stream across the hot restart: {stream.seen}"
    failed = [o for o in outcomes if not o.complete]
    assert not failed, summarize(failed)
    sup = stack_state(gateway)["supervision"]["envoy"]
    assert sup["epoch"] == 1 and sup["draining"] == []
    log = check_log(gateway.db_url, session, outcomes + result)
    log.assert_exactly_once()
    report(
        "Envoy hot restart (SIGHUP to `llmproxy up`) under 20 req/s with a 3.6 s stream in flight",
        f"{summarize(outcomes + result)}: no errors; the stream crossed the restart",
        log.holds(),
    )
