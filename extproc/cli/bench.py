"""`llmproxy bench`: the sidecar's cost, measured side by side in one run on this machine.

Four set-ups against the same local fake upstream (a separate process):
  direct          load generator -> fake upstream
  envoy           -> Envoy (same envoy.yaml, ext_proc filter removed) -> fake
  sidecar-json    -> Envoy + sidecar (+ recorder into Postgres), non-streamed chat
  sidecar-sse     -> Envoy + sidecar, streamed chat (time to first token)
(plus envoy-sse for the TTFT baseline). The load is open-loop at a fixed rate, so latency is not
hidden by coordinated omission. For the sidecar set-ups it also reports the sidecar's CPU time per
request. Figures only: no pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure direct vs Envoy vs Envoy+sidecar (req/s, p50/p99, TTFT)")
    p.add_argument("--rate", type=float, default=200.0, help="requests per second, fixed (default 200)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per set-up (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured warm-up per set-up")
    p.add_argument(
        "--memory-requests",
        type=int,
        default=0,
        help="after the latency runs, send N more requests through the sidecar and report its RSS growth",
    )
    p.add_argument("--database-url", default=None, help="Postgres for the sidecar's log (default: temporary embedded)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


CHAT = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Summarise the benefits of unit tests in one line."},
    ],
}


async def _load(url: str, *, rate: float, duration: float, stream: bool) -> dict[str, Any]:
    import aiohttp

    body = dict(CHAT, stream=stream)
    payload = json.dumps(body).encode()
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
    lat: list[float] = []
    ttft: list[float] = []
    errors = 0
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:

        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=payload, headers=headers) as resp:
                    first = None
                    async for chunk in resp.content.iter_any():
                        if first is None and chunk:
                            first = time.perf_counter()
                    if resp.status != 200:
                        errors += 1
                        return
                t1 = time.perf_counter()
                lat.append((t1 - t0) * 1000)
                if first is not None:
                    ttft.append((first - t0) * 1000)
            except Exception:  # noqa: BLE001 - a failed request is counted, never fatal to the bench
                errors += 1

        tasks = []
        start = time.perf_counter()
        n = int(rate * duration)
        for i in range(n):
            target = start + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {
        "requests": n,
        "errors": errors,
        "rps": len(lat) / elapsed if elapsed else 0.0,
        "p50_ms": _percentile(lat, 0.50),
        "p99_ms": _percentile(lat, 0.99),
        "ttft_p50_ms": _percentile(ttft, 0.50) if stream else None,
        "ttft_p99_ms": _percentile(ttft, 0.99) if stream else None,
    }


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace) -> int:
    from intelligence.ops.health import envoy_ready, grpc_healthy

    from . import envoy_config
    from .up import _envoy_bin

    procs: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix="llmproxy-bench-"))
    pg = None
    results: dict[str, Any] = {}
    try:
        fake_port = _free_port()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "extproc.testing.fakes", "--port", str(fake_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait(lambda: _port_open(fake_port), "fake upstream")
        db_url = args.database_url or os.environ.get("DATABASE_URL")
        if not db_url:
            from intelligence.embedded_pg import start_embedded

            pg = start_embedded(tmp)
            db_url = pg.url
        from intelligence.store.migrate import upgrade

        upgrade(db_url)
        sidecar_port = _free_port()
        sidecar = subprocess.Popen(
            [sys.executable, "-m", "extproc", "--port", str(sidecar_port), "--database-url", db_url, "--data-dir", str(tmp)],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "sidecar.log", "wb"),
        )
        procs.append(sidecar)
        _wait(lambda: grpc_healthy(sidecar_port), "sidecar")

        template = envoy_config.find_template()
        ups = envoy_config.parse_upstream_specs([f"openai=http://127.0.0.1:{fake_port}"])
        ports = {}
        for name, with_sidecar in (("envoy", False), ("sidecar", True)):
            port, admin = _free_port(), _free_port()
            cfg = envoy_config.render(
                template, listen_host="127.0.0.1", port=port, admin_port=admin, sidecar_port=sidecar_port, upstreams=ups
            )
            if not with_sidecar:
                _drop_ext_proc(cfg)
            path = envoy_config.write(cfg, tmp / f"{name}.yaml")
            procs.append(
                subprocess.Popen(
                    [_envoy_bin(), "-c", str(path), "--disable-hot-restart", "-l", "error"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            _wait(lambda a=admin: envoy_ready(a), name)
            ports[name] = port

        runs = [
            ("direct", f"http://127.0.0.1:{fake_port}/v1/chat/completions", False),
            ("envoy", f"http://127.0.0.1:{ports['envoy']}/openai/v1/chat/completions", False),
            ("sidecar-json", f"http://127.0.0.1:{ports['sidecar']}/openai/v1/chat/completions", False),
            ("direct-sse", f"http://127.0.0.1:{fake_port}/v1/chat/completions", True),
            ("envoy-sse", f"http://127.0.0.1:{ports['envoy']}/openai/v1/chat/completions", True),
            ("sidecar-sse", f"http://127.0.0.1:{ports['sidecar']}/openai/v1/chat/completions", True),
        ]
        for name, url, stream in runs:
            asyncio.run(_load(url, rate=args.rate, duration=args.warmup, stream=stream))
            cpu_before = _cpu_seconds(sidecar.pid)
            results[name] = asyncio.run(_load(url, rate=args.rate, duration=args.duration, stream=stream))
            if name.startswith("sidecar") and results[name]["requests"]:
                # CPU per request holds up on a shared machine where latency percentiles do not.
                results[name]["sidecar_cpu_ms_per_req"] = (
                    (_cpu_seconds(sidecar.pid) - cpu_before) * 1000 / results[name]["requests"]
                )
            print(f"bench: {name:<13} done", file=sys.stderr)
        if args.memory_requests:
            before = _rss_kb(sidecar.pid)
            sent, samples = 0, []
            while sent < args.memory_requests:
                n = min(5000, args.memory_requests - sent)
                asyncio.run(
                    _load(
                        f"http://127.0.0.1:{ports['sidecar']}/openai/v1/chat/completions",
                        rate=1000,
                        duration=n / 1000,
                        stream=sent % 10000 == 5000,
                    )
                )
                sent += n
                samples.append((sent, _rss_kb(sidecar.pid)))
            half = samples[len(samples) // 2][1] if samples else before
            # Warm-up (allocator arenas, caches filling to their caps) shows in the first half; a leak keeps growing.
            results["memory"] = {
                "requests": sent,
                "rss_before_kb": before,
                "rss_after_kb": _rss_kb(sidecar.pid),
                "rss_at_half_kb": half,
                "samples_kb": samples,
            }
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        if pg is not None:
            pg.stop()
    _report(results, args)
    return 0


def _drop_ext_proc(cfg: dict) -> None:
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                tc = f.get("typed_config", {})
                if "http_filters" in tc:
                    tc["http_filters"] = [h for h in tc["http_filters"] if h["name"] != "envoy.filters.http.ext_proc"]
                    for vh in tc["route_config"]["virtual_hosts"]:
                        for r in vh["routes"]:
                            (r.get("typed_per_filter_config") or {}).pop("envoy.filters.http.ext_proc", None)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise SystemExit(f"llmproxy bench: {what} did not start")


def _report(results: dict[str, Any], args: argparse.Namespace) -> None:
    base, base_sse = results.get("envoy", {}), results.get("envoy-sse", {})
    for name, r in results.items():
        if name == "memory":
            continue
        ref = base_sse if name.endswith("sse") else base
        if ref.get("p50_ms") and r.get("p50_ms"):
            r["p50_ratio_to_envoy"] = r["p50_ms"] / ref["p50_ms"]
            r["p99_ratio_to_envoy"] = r["p99_ms"] / ref["p99_ms"]
            r["p50_added_ms"] = r["p50_ms"] - ref["p50_ms"]
            r["p99_added_ms"] = r["p99_ms"] - ref["p99_ms"]
        if r.get("ttft_p50_ms") and ref.get("ttft_p50_ms"):
            r["ttft_p50_added_ms"] = r["ttft_p50_ms"] - ref["ttft_p50_ms"]
    out = {"rate": args.rate, "duration_s": args.duration, "results": results}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    print(f"fixed load {args.rate:.0f} req/s for {args.duration:.0f}s per set-up (non-streamed chat unless -sse)\n")
    print(
        f"{'set-up':<14}{'req/s':>8}{'err':>6}{'p50 ms':>9}{'p99 ms':>9}{'ttft50':>9}{'ttft99':>9}{'p50 x env':>10}{'p99 x env':>10}{'cpu ms/req':>11}"
    )
    for name, r in results.items():
        if name == "memory":
            continue
        print(
            f"{name:<14}{r['rps']:>8.1f}{r['errors']:>6}{fmt(r['p50_ms']):>9}{fmt(r['p99_ms']):>9}"
            f"{fmt(r.get('ttft_p50_ms')):>9}{fmt(r.get('ttft_p99_ms')):>9}"
            f"{fmt(r.get('p50_ratio_to_envoy')):>10}{fmt(r.get('p99_ratio_to_envoy')):>10}"
            f"{fmt(r.get('sidecar_cpu_ms_per_req')):>11}"
        )
    if "memory" in results:
        m = results["memory"]
        print(
            f"\nsidecar RSS over {m['requests']} requests (JSON and SSE alternating): {m['rss_before_kb'] / 1024:.1f} MiB"
            f" -> {m['rss_at_half_kb'] / 1024:.1f} MiB at half -> {m['rss_after_kb'] / 1024:.1f} MiB at the end"
        )
        print("  samples (requests: MiB): " + ", ".join(f"{n}: {kb / 1024:.0f}" for n, kb in m["samples_kb"]))
