"""`llmproxy bench`: its parser, its helpers, its report, and the floor processor behind real Envoy.

No timing assertions: the bench prints figures, these tests only check that it measures what it says.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from extproc.cli import bench, build_parser
from extproc.testing import floor

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------------ parsing


def test_bench_without_subcommand_runs_the_performance_bench() -> None:
    args = build_parser().parse_args(["bench", "--json"])
    assert args.func is bench.run
    assert args.json is True
    assert args.only == bench.SECTIONS
    assert (args.rate, args.cpu_rate, args.cpu_requests, args.cpu_clients, args.stream_chunks) == (200.0, 150.0, 2000, 8, 30)


def test_bench_options_parse() -> None:
    args = build_parser().parse_args(
        ["bench", "--only", "memory,cpu", "--memory-requests", "200000", "--no-worker", "--no-intelligence", "--sequential", "5"]
    )
    assert args.only == ("cpu", "memory")  # run in the documented order, whatever order was given
    assert args.memory_requests == 200000 and args.no_worker and args.no_intelligence and args.sequential == 5


def test_bench_only_rejects_unknown_sections(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--only", "cpu,warp"])
    assert "sections are" in capsys.readouterr().err


def test_bench_ui_parses_as_a_subcommand() -> None:
    from extproc.cli import bench_ui

    args = build_parser().parse_args(["bench", "ui", "--json"])
    assert args.func is bench_ui.run
    assert args.json is True


@pytest.mark.skipif(importlib.util.find_spec("extproc.cli.bench_load") is None, reason="bench_load not written yet")
def test_bench_load_parses_as_a_subcommand() -> None:
    from extproc.cli import bench_load

    args = build_parser().parse_args(["bench", "load", "--json"])
    assert args.func is bench_load.run
    assert args.json is True


def test_sidecar_workers_option_follows_up() -> None:
    parser = build_parser()
    up = parser._subparsers._group_actions[0].choices["up"]  # type: ignore[union-attr]
    bench_parser = parser._subparsers._group_actions[0].choices["bench"]  # type: ignore[union-attr]
    assert bench._has_option(up, "--sidecar-workers") == bench._has_option(bench_parser, "--sidecar-workers")


# ------------------------------------------------------------------------------------------------ helpers


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert bench.percentile(values, 0.5) == 50.0
    assert bench.percentile(values, 0.99) == 99.0
    assert bench.percentile(values, 1.0) == 100.0
    assert bench.percentile(values, 0.0) == 1.0
    assert bench.percentile([7.0], 0.99) == 7.0
    assert bench.percentile([], 0.5) is None
    assert bench.summarize([1.0, 2.0, 3.0]) == {"n": 3, "p50_ms": 2.0, "p99_ms": 3.0, "max_ms": 3.0}


def test_memory_marks() -> None:
    assert bench.memory_marks(40_000, 16_000) == (20_000, [20_000, 25_000, 30_000, 35_000])
    assert bench.memory_marks(200_000, 0)[1][:2] == [5_000, 10_000]
    first, marks = bench.memory_marks(8_000, 1_000)  # a short run: half the goal is the first mark
    assert first == 4_000 and first in marks and all(1_000 < m < 8_000 for m in marks)


def test_saturation_verdict_names_the_part_at_its_ceiling() -> None:
    ceilings = bench._ceilings(cores=2, procs=4, sidecar_processes=1)
    assert ceilings["sidecar"] == 100 and ceilings["loadgen"] == 200 and ceilings["machine"] == 200
    pct = {"sidecar": 97.0, "envoy": 60.0, "postgres": 10.0, "upstream": 20.0, "loadgen": 10.0, "machine": 198.0, "others": 1.0}
    first, why = bench.saturation_verdict(pct, ceilings)
    assert first == "sidecar" and "one Python process" in why
    pct = {"sidecar": 60.0, "envoy": 50.0, "postgres": 10.0, "upstream": 5.0, "loadgen": 5.0, "machine": 195.0, "others": 65.0}
    assert bench.saturation_verdict(pct, ceilings)[0] == "machine"
    pct = {"sidecar": 30.0, "envoy": 20.0, "postgres": 5.0, "upstream": 5.0, "loadgen": 5.0, "machine": 70.0, "others": 5.0}
    assert bench.saturation_verdict(pct, ceilings)[0] is None


PARENT = """
import subprocess, sys
sys.stdin.readline()
subprocess.run([sys.executable, "-c", "sum(range(10_000_000))"])  # a child that burns CPU and is reaped
print("done", flush=True)
sys.stdin.readline()
"""


def test_cpu_snapshot_counts_reaped_children() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdin is not None and parent.stdout is not None
        before = bench.cpu_snapshot({"tree": [parent.pid]})["tree"]
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "done"
        after = bench.cpu_snapshot({"tree": [parent.pid]})["tree"]
        assert after - before > 0.05  # the child's CPU, through the parent's cutime
        assert bench.cpu_snapshot({"none": [2**22 + 12345]}) == {"none": 0}
    finally:
        parent.kill()
        parent.wait(10)


async def _read(raw: bytes) -> tuple[int, bool, bytes]:
    reader = asyncio.StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    status, keep = await bench.read_response(reader)
    return status, keep, await reader.read()


async def test_read_response_content_length_and_chunked() -> None:
    rest = b"NEXT"
    assert await _read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + rest) == (200, True, rest)
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\n"
    assert await _read(chunked + rest) == (200, True, rest)
    assert await _read(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n") == (503, False, b"")
    assert await _read(b"HTTP/1.0 200 OK\r\n\r\nuntil eof") == (200, False, b"")


def test_request_bytes_is_one_well_formed_request() -> None:
    target = bench.Target("gateway", 1234)
    raw = bench.stream_request(target, 30)
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /openai/v1/chat/completions HTTP/1.1\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert b"x-fake-reply-words: 27" in head  # role + 27 words + finish + [DONE] = 30 events
    assert json.loads(body)["stream"] is True


def test_floor_parses_sse_split_across_chunks() -> None:
    stats = floor.new_stats()
    event = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    rest = floor.parse_sse(event[:10], stats)
    rest = floor.parse_sse(rest + event[10:] + b"data: [DONE]\n\n", stats)
    assert rest == b"" and stats["sse_events_parsed"] == 1 and stats["errors"] == 0


# ------------------------------------------------------------------------------------------------ report


def _synthetic_report() -> dict[str, Any]:
    setup = {"n": 1000, "p50_ms": 1.0, "p99_ms": 2.0, "max_ms": 3.0, "errors": 0, "error_sample": None}
    setups = {"direct": setup, "envoy": {**setup, "p50_ms": 1.5}, "gateway": {**setup, "p50_ms": 4.0, "p99_ms": 9.0}}
    pair = {
        "floor": {"processor_cpu_ms_per_req": 1.0, "envoy_cpu_ms_per_req": 0.5, "achieved_rps": 150.0, "errors": 0},
        "gateway": {
            "sidecar_cpu_ms_per_req": 1.6,
            "envoy_cpu_ms_per_req": 0.5,
            "postgres_cpu_ms_per_req": 0.2,
            "achieved_rps": 149.0,
            "errors": 0,
        },
    }
    pct = {
        "sidecar": 99.0,
        "envoy": 50.0,
        "postgres": 10.0,
        "upstream": 10.0,
        "loadgen": 8.0,
        "worker": 1.0,
        "intelligence": 1.0,
        "machine": 190.0,
        "others": 11.0,
    }
    return {
        "machine": {
            "cpu_model": "Test CPU",
            "cores": 2,
            "cores_usable": 2,
            "python": "3.11",
            "loadavg_start": [1.0, 2.0, 3.0],
            "loadavg_end": [1.5, 2.0, 3.0],
        },
        "settings": {"only": list(bench.SECTIONS)},
        "gateway": {"command": "llmproxy up --no-ui", "worker": True, "intelligence": True, "embedded_postgres": True},
        "notes": ["sidecar scaling not measured"],
        "first": {
            "ready_source": "ready line",
            "startup_s": 12.0,
            "ready_to_first_send_ms": 0.1,
            "first_ms": 40.0,
            "next_ms": [4.0] * 9,
            "next_p50_ms": 4.0,
            "errors": 0,
        },
        "unloaded": {
            "requests": 1000,
            "warmup_requests": 100,
            "setups": setups,
            "gateway_minus_envoy": {"p50_ms": 2.5, "p99_ms": 7.0},
        },
        "loaded": {
            "rate": 200.0,
            "duration_s": 10.0,
            "setups": {k: {**v, "achieved_rps": 200.0} for k, v in setups.items()},
            "gateway_minus_envoy": {"p50_ms": 2.5, "p99_ms": 7.0},
        },
        "cpu": {
            "rate": 150.0,
            "clients": 8,
            "requests": 2000,
            **pair,
            "ratio_to_floor": 1.6,
            "sidecar_ms_on_reference_scale": 1.152,
            "target_ratio": 1.4,
        },
        "stream": {
            "chunks": 30,
            "reply_words": 27,
            "rate": 150.0,
            "clients": 32,
            "requests": 2000,
            "chunks_seen_by_floor": 30.0,
            **pair,
            "ratio_to_floor": 1.6,
            "nonstreamed_floor_ms": 1.0,
            "sidecar_ms_on_reference_scale": 1.152,
            "target_ms_on_reference_scale": 1.5,
            "target_ms_here": 2.083,
        },  # fmt: skip
        "saturation": {
            "seconds": 10.0,
            "clients": 64,
            "loadgen_processes": 4,
            "rps": 900.0,
            "ok": 9000,
            "errors": 0,
            "error_sample": None,
            "loadgen_failures": [],
            "p50_ms": 60.0,
            "p99_ms": 120.0,
            "max_ms": 200.0,
            "cpu_pct": pct,
            "ceiling_pct": bench._ceilings(2, 4, 1),
            "saturates_first": "sidecar",
            "verdict": "sidecar at 99 %",
            "target_rps": 1500,
        },  # fmt: skip
        "memory": {
            "rss_at_mark_mb": 600.0,
            "requests_at_mark": 20000,
            "rss_end_mb": 606.0,
            "requests_end": 40000,
            "growth_pct": 1.0,
            "errors": 0,
            "samples": [[20000, 600.0], [40000, 606.0]],
            "target_growth_pct": 5.0,
        },  # fmt: skip
    }


def test_report_prints_every_figure_with_its_target() -> None:
    report = _synthetic_report()
    text = bench.format_report(report)
    for expected in (
        "Test CPU, 2 cores",
        "load average 1.00 2.00 3.00 at start, 1.50 2.00 3.00 at end",
        "1st: 40.0 ms",
        "Envoy alone",
        "gateway - Envoy",
        "200 req/s open loop",
        "ratio 1.60 x floor (target <= 1.4)",
        "30 SSE events",
        "target <= 1.5",
        "900 req/s (target >= 1500), 0 errors",
        "saturates first: sidecar",
        "load generator 8%",
        "growth 1.0 % (target: flat within 5 %)",
        "note: sidecar scaling not measured",
    ):
        assert expected in text, expected
    assert json.loads(json.dumps(report)) == report  # the --json object is plain JSON


def test_report_with_only_some_sections() -> None:
    report = _synthetic_report()
    for name in ("first", "unloaded", "loaded", "saturation", "memory", "cpu"):
        del report[name]
    report["stream"]["nonstreamed_floor_ms"] = None
    text = bench.format_report(report)
    assert "Saturation" not in text and "run the cpu section too" in text


# ------------------------------------------------------------------------------------------------ the floor behind Envoy


def _counters(proc: subprocess.Popen, stats: Path) -> dict[str, int]:
    before = stats.stat().st_mtime_ns if stats.exists() else 0
    os.kill(proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if stats.exists() and stats.stat().st_mtime_ns != before:
            try:
                return json.loads(stats.read_text())
            except ValueError:
                pass
        time.sleep(0.02)
    raise AssertionError("the floor processor did not write its counters")


async def _send(target: bench.Target, raws: list[bytes]) -> list[int]:
    conn = await bench.Conn.open(target)
    statuses = []
    for raw in raws:
        status, _keep = await conn.send(raw)
        statuses.append(status)
    conn.close()
    return statuses


def test_floor_processor_answers_the_four_phases_behind_envoy(tmp_path: Path) -> None:
    procs = bench.Processes(tmp_path)
    try:
        upstream_port, floor_port = bench._free_port(), bench._free_port()
        upstream = procs.start("upstream", [sys.executable, "-m", "extproc.testing.fakes", "--port", str(upstream_port)])
        stats = tmp_path / "stats.json"
        proc = procs.start(
            "floor", [sys.executable, "-m", "extproc.testing.floor", "--port", str(floor_port), "--stats", str(stats)]
        )
        bench._wait(lambda: bench._port_open(upstream_port), "upstream", upstream)
        bench._wait(lambda: bench._port_open(floor_port), "floor", proc)
        target, _pid = bench.start_envoy(procs, tmp_path, "floor-envoy", upstream_port, floor_port)
        alone, _pid = bench.start_envoy(procs, tmp_path, "envoy", upstream_port, None)

        plain = bench.request_bytes(target)
        statuses = asyncio.run(_send(target, [plain, plain, plain, bench.stream_request(target, 30)]))
        assert statuses == [200, 200, 200, 200]
        seen = _counters(proc, stats)
        assert seen["streams"] == 4
        assert (seen["request_headers"], seen["request_body"], seen["response_headers"]) == (4, 4, 4)
        assert seen["json_parsed"] == 4 + 3  # every request body, every non-streamed response body
        assert seen["sse_events_parsed"] == 29  # role, 27 words, finish ([DONE] is not JSON)
        assert seen["response_body"] >= 3 + 2  # the stream reached it STREAMED, in several chunks
        assert seen["errors"] == 0

        # Envoy alone (ext_proc removed) serves the same route without asking the processor
        assert asyncio.run(_send(alone, [bench.request_bytes(alone)])) == [200]
        assert _counters(proc, stats)["streams"] == 4
    finally:
        procs.stop_all()


# ------------------------------------------------------------------------------------------------ smoke (slow)


@pytest.mark.e2e
def test_bench_smoke_tiny_counts() -> None:
    """The whole bench end to end with tiny counts (about a minute: `llmproxy up` starts once). Figures unchecked."""
    cmd = [
        sys.executable, "-c", "from extproc.cli import main; main()", "bench", "--json",
        "--no-worker", "--no-intelligence", "--sequential", "20", "--rate", "50", "--duration", "1", "--warmup", "0.5",
        "--cpu-rate", "100", "--cpu-requests", "40", "--stream-clients", "8", "--saturation-seconds", "1",
        "--saturation-clients", "4", "--saturation-procs", "2", "--memory-requests", "400",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert set(bench.SECTIONS) <= set(report)
    assert report["first"]["errors"] == 0 and report["first"]["first_ms"] is not None
    assert set(report["unloaded"]["setups"]) == {"direct", "envoy", "gateway"}
    assert report["cpu"]["floor"]["processor_cpu_ms_per_req"] is not None
    assert report["cpu"]["gateway"]["sidecar_cpu_ms_per_req"] is not None
    assert report["stream"]["chunks_seen_by_floor"] > 1
    assert report["saturation"]["ok"] > 0 and "sidecar" in report["saturation"]["cpu_pct"]
    assert report["memory"]["requests_end"] >= 400 and report["memory"]["rss_end_mb"] > 0
    assert report["machine"]["loadavg_end"]
    assert report["unloaded"]["setups"]["gateway"]["errors"] == 0


def test_requests_never_repeat_a_user_turn_and_warm_up_on_other_texts() -> None:
    """The detectors remember texts: a bench that repeats one request would measure a cache."""
    from extproc.cli.bench import Requests, Target, _rotation, _warmup_of

    reqs = Requests(Target("gateway", 1))
    bodies = [reqs.at(i).split(b"\r\n\r\n", 1)[1] for i in range(500)]
    assert len(set(bodies)) == 500
    turns = {json.loads(b)["messages"][-1]["content"] for b in bodies}
    assert len(turns) == 500
    warm = _warmup_of(reqs)
    assert isinstance(warm, Requests)
    assert not {warm.at(i) for i in range(500)} & {reqs.at(i) for i in range(500)}
    following = _rotation(reqs)
    assert [following() for _ in range(3)] == [reqs.at(0), reqs.at(1), reqs.at(2)]
    mixed = Requests(Target("gateway", 1), stream_every=10)
    streamed = [i for i in range(30) if json.loads(mixed.at(i).split(b"\r\n\r\n", 1)[1])["stream"]]
    assert streamed == [0, 10, 20]


def test_a_user_turns_reference_is_no_phone_number() -> None:
    """The distinct reference in each user turn must not send every request through the PII phone
    recogniser (a ten-digit run did): the bench measures a small chat, not that recogniser."""
    from extproc.cli.bench import Requests, Target
    from intelligence.detectors.pii import _longest_run

    for start in (0, 3 * 10**9, 35 * 10**8, 4 * 10**9, 45 * 10**8):
        reqs = Requests(Target("gateway", 1), start=start)
        for i in range(0, 5000, 97):
            turn = json.loads(reqs.at(i).split(b"\r\n\r\n", 1)[1])["messages"][-1]["content"]
            assert _longest_run(turn) < 7, turn


def test_bench_pii_measures_every_shape_and_reports_where_the_budget_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    from extproc.cli import bench_pii

    args = build_parser().parse_args(["bench", "pii", "--size", "2000", "--budget-ms", "0", "--repeat", "1", "--json"])
    assert args.func is bench_pii.run
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {row["shape"]: row for row in out["shapes"]}
    assert set(rows) == set(bench_pii.SHAPES) and all(row["chars"] == 2000 for row in rows.values())
    assert rows["prose with an e-mail"]["spans"] > 0  # the full scan reads (and finds) everything
    # a budget of 0 ms is past before the first window: nothing read, and the scan says so
    assert all(not row["budgeted_complete"] and row["budgeted_scanned_chars"] == 0 for row in rows.values())
