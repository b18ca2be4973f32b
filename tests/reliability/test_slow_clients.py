"""Clients that read a long stream very slowly: the gateway's memory stays bounded and the other clients'
latency is not held up behind them (no head-of-line blocking in Envoy or the sidecar)."""

from __future__ import annotations

import statistics
import threading
import time

import httpx
import pytest

from tests.e2e.conftest import Stack

from .harness import Traffic, check_log, new_session, pid_of, prompt_of, rss_mb, summarize

pytestmark = pytest.mark.e2e

SLOW_CLIENTS = 3
WORDS = 4000  # a stream of ~4,000 events, ~900 KB
READ_BYTES, READ_PAUSE_S = 1024, 0.05  # 20 KB/s
SLOW_FOR_S = 8.0


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))] if s else 0.0


def _latencies(outcomes) -> list[float]:
    return [o.latency_s * 1000 for o in outcomes if o.complete and not o.stream]


def test_slow_readers_do_not_block_others(gateway: Stack, report) -> None:
    session = new_session("slow")
    sidecar = pid_of(gateway, "sidecar")
    envoy = pid_of(gateway, "envoy")
    baseline = Traffic(gateway.url, session, rate=20).start()
    time.sleep(4)
    base = baseline.stop()
    rss_before = {"sidecar": rss_mb(sidecar), "envoy": rss_mb(envoy)}

    read: list[int] = []
    spent: list[float] = []
    slow_ids: list[str] = []

    def slow_reader(i: int) -> None:
        got = 0
        headers = {"authorization": "Bearer sk-slow", "x-session-id": session, "x-fake-reply-words": str(WORDS)}
        body = {
            "model": "gpt-4o-mini",
            "stream": True,
            "messages": [{"role": "user", "content": prompt_of(f"{session}-slow{i}")}],
        }
        with (
            httpx.Client() as client,
            client.stream("POST", gateway.url + "/openai/v1/chat/completions", json=body, headers=headers, timeout=60) as resp,
        ):
            assert resp.status_code == 200, resp.status_code
            slow_ids.append(resp.headers.get("x-llmproxy-request-id", ""))
            start = time.monotonic()
            for chunk in resp.iter_raw(READ_BYTES):
                got += len(chunk)
                if time.monotonic() - start > SLOW_FOR_S:
                    break  # the client gives up half-way: the connection closes
                time.sleep(READ_PAUSE_S)
        read.append(got)
        spent.append(time.monotonic() - start)

    readers = [threading.Thread(target=slow_reader, args=(i,)) for i in range(SLOW_CLIENTS)]
    for r in readers:
        r.start()
    time.sleep(0.5)
    others = Traffic(gateway.url, session, rate=20, label="o").start()
    peak = dict(rss_before)
    while any(r.is_alive() for r in readers):
        peak = {"sidecar": max(peak["sidecar"], rss_mb(sidecar)), "envoy": max(peak["envoy"], rss_mb(envoy))}
        time.sleep(0.5)
    during = others.stop()
    failed = [o for o in base + during if not o.complete]
    assert not failed, summarize(failed)
    base_p50, base_p99 = _p(_latencies(base), 0.5), _p(_latencies(base), 0.99)
    p50, p99 = _p(_latencies(during), 0.5), _p(_latencies(during), 0.99)
    # the others are served at their usual pace: no request waits behind a slow reader
    assert p99 < base_p99 + 1000, (base_p99, p99)
    growth = {k: peak[k] - rss_before[k] for k in peak}
    assert growth["sidecar"] < 150, growth  # bounded: the log keeps at most 1 MiB per body (--log-body-max)
    # they really read slowly, for the whole time (the stream is ~900 KB)
    assert len(read) == SLOW_CLIENTS and min(spent) >= SLOW_FOR_S and 20_000 < max(read) < 400_000, (read, spent)
    log = check_log(gateway.db_url, session, base + during)
    log.assert_exactly_once()
    report(
        f"{SLOW_CLIENTS} clients reading a ~900 KB stream at 20 KB/s, then leaving",
        f"others at 20 req/s: {len(during)} requests, no errors, p50 {p50:.0f} ms / p99 {p99:.0f} ms "
        f"(before: p50 {base_p50:.0f} / p99 {base_p99:.0f} ms, median {statistics.median(_latencies(base) or [0]):.0f}); "
        f"RSS growth sidecar {growth['sidecar']:.0f} MB, Envoy {growth['envoy']:.0f} MB",
        log.holds() + "; the slow readers' exchanges are logged as the gateway sent them (Envoy buffers for the client)",
    )
