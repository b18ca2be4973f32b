"""`llmproxy bench load`: a sustained mixed workload through real gateways, and whether the log kept up.

Starts a local fake provider (its own process), a database (``--database-url``, else ``DATABASE_URL``,
else a temporary embedded PostgreSQL) and ``--replicas`` gateways (`llmproxy up`: Envoy + sidecar each,
sharing the one database), then sends an open-loop workload at ``--rate`` requests a second for
``--duration`` seconds after ``--warmup``: 70 % non-streamed and 30 % SSE chat completions, a fifth of
them with tools (half of those answered with a tool call), prompts and answers of varied sizes, spread
over 50 sessions and over the replicas.

Reported: throughput, latency percentiles, errors, the sidecars' RSS after warm-up and at the end, the
request log's write lag (from the end of an exchange to its row committed, from the recorders' state
files) and, at the end, the log compared with what the clients got back: every response carries
``x-llmproxy-request-id``; ``lost_records`` are ids the clients saw that the log does not hold,
``duplicate_records`` client requests (each has a unique marker in its prompt) logged more than once.
With two or more replicas it also checks that a gateway key's per-minute budget holds across them.

Run it with ``python -m extproc.cli.bench_load`` or, once hooked, ``llmproxy bench load``; docs/reliability.md
has the soak command and the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SENTENCES = (
    "The quarterly report shows steady growth in the northern region.",
    "Customers asked for clearer invoices and faster delivery times.",
    "Our team reviewed the onboarding guide and found two outdated steps.",
    "The warehouse inventory was reconciled on Friday afternoon.",
    "The finance team closed the books for March without open items.",
    "The new release improves search speed on large catalogues.",
    "Support tickets about password resets dropped after the change.",
    "Marketing plans a small campaign for the spring catalogue.",
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order by its id",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "refund",
            "description": "Refund an order",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}, "amount": {"type": "number"}}},
        },
    },
]
PROMPT_SENTENCES = ((1, 0.7), (6, 0.25), (30, 0.05))  # (sentences in the prompt, share)
REPLY_WORDS = ((20, 0.7), (80, 0.25), (300, 0.05))  # (words in the answer, share)
SESSIONS = 50


def register(bench_subparsers: argparse._SubParsersAction) -> None:
    """Adds `load` under `llmproxy bench`."""
    p = bench_subparsers.add_parser("load", help="sustained mixed load through real gateways; checks the log kept up")
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=300.0, help="requests per second, open loop (default 300)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of measured load (default 60; the soak: 600)")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds of load before measuring (default 20)")
    p.add_argument("--replicas", type=int, default=1, help="gateways (Envoy + sidecar each) sharing the database")
    p.add_argument("--stream-share", type=float, default=0.3, help="share of SSE requests (default 0.3)")
    p.add_argument("--tools-share", type=float, default=0.2, help="share of requests with tools (default 0.2)")
    p.add_argument("--sample-interval", type=float, default=10.0, help="seconds between time-series samples")
    p.add_argument("--database-url", default=None, help="PostgreSQL for the log (default: DATABASE_URL, else a temporary one)")
    p.add_argument("--budget-rpm", type=int, default=120, help="with --replicas >= 2: the per-minute budget of the key checked")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, spool) for a look afterwards")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m extproc.cli.bench_load", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


# ------------------------------------------------------------------------------------------ processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    index: int
    data_dir: Path
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.data_dir / "stack.json").read_text()))
        except (OSError, ValueError):
            return {}

    def sidecar_pid(self) -> int | None:
        pid = self.state().get("pids", {}).get("sidecar")
        return int(pid) if pid else None

    def recorder(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.data_dir / "spool" / "recorder.json").read_text()))
        except (OSError, ValueError):
            return {}


def _start_gateway(index: int, tmp: Path, db_url: str, fake_url: str) -> Gateway:
    llmproxy = str(Path(sys.executable).with_name("llmproxy"))
    data_dir = tmp / f"gateway-{index}"
    port, admin, sidecar = _free_port(), _free_port(), _free_port()
    cmd = [
        llmproxy,
        "up",
        "--no-ui",
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
        "--upstream",
        f"openai={fake_url}",
    ]
    out = open(tmp / f"up-{index}.log", "wb")
    proc = subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        # an operator key for the fake provider: requests made with a gateway key (the budget check) need one
        env={**os.environ, "DATABASE_URL": db_url, "LLMPROXY_OPENAI_API_KEY": "sk-bench-operator"},
    )
    out.close()
    return Gateway(index, data_dir, port, proc)


def _wait_healthy(gw: Gateway, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise SystemExit(f"llmproxy bench load: gateway {gw.index} exited ({gw.proc.returncode}); see its up log")
        if (gw.data_dir / "stack.json").exists():
            try:
                if httpx.get(gw.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    raise SystemExit(f"llmproxy bench load: gateway {gw.index} not healthy after {timeout:.0f} s")


def _rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# ------------------------------------------------------------------------------------------ the load


@dataclass
class Result:
    index: int
    marker: str
    stream: bool
    gateway: int
    measured: bool
    status: int | None = None
    request_id: str | None = None
    ok: bool = False
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    error: str | None = None
    done_at: float = 0.0


@dataclass
class Workload:
    run_id: str
    rate: float
    stream_share: float
    tools_share: float
    seed: int
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def request(self, i: int) -> tuple[dict[str, Any], dict[str, str], bool]:
        rng = self.rng
        stream = rng.random() < self.stream_share
        sentences = _pick(rng, PROMPT_SENTENCES)
        words = _pick(rng, REPLY_WORDS)
        context = " ".join(rng.choice(SENTENCES) for _ in range(sentences - 1))
        marker = f"{self.run_id}-{i}"
        text = (context + " " if context else "") + f"Summarise ticket {marker} in one line."
        body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "stream": stream}
        headers = {
            "authorization": "Bearer sk-bench-load",
            "content-type": "application/json",
            "x-session-id": f"bench-{self.run_id}-{i % SESSIONS}",
            "x-fake-reply-words": str(words),
        }
        if rng.random() < self.tools_share:
            body["tools"] = TOOLS
            if rng.random() < 0.5:
                headers["x-fake-tool-call"] = "1"
        return body, headers, stream


def _pick(rng: random.Random, choices: tuple[tuple[int, float], ...]) -> int:
    x, acc = rng.random(), 0.0
    for value, share in choices:
        acc += share
        if x < acc:
            return value
    return choices[-1][0]


async def _one(session: Any, url: str, body: bytes, headers: dict[str, str], result: Result) -> None:
    t0 = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            result.status = resp.status
            result.request_id = resp.headers.get("x-llmproxy-request-id")
            tail = b""
            async for chunk in resp.content.iter_any():
                if result.ttft_ms is None and chunk:
                    result.ttft_ms = (time.perf_counter() - t0) * 1000
                tail = (tail + chunk)[-64:]
            if resp.status != 200:
                # whose answer it was: the gateway's own code (a policy block, shedding) or, without one, the
                # upstream's or Envoy's
                result.error = f"HTTP {resp.status} {resp.headers.get('x-llmproxy-error') or 'upstream/envoy'}"
            elif result.stream and b"[DONE]" not in tail:
                result.error = "stream without [DONE]"
            else:
                result.ok = True
    except Exception as exc:  # noqa: BLE001 - a failed request is counted, never fatal to the bench
        result.error = type(exc).__name__
    result.latency_ms = (time.perf_counter() - t0) * 1000
    result.done_at = time.monotonic()


async def _drive(args: argparse.Namespace, gateways: list[Gateway], work: Workload, log) -> tuple[list[Result], list[dict], dict]:
    import aiohttp

    results: list[Result] = []
    samples: list[dict[str, Any]] = []
    marks: dict[str, Any] = {}
    total = int(args.rate * (args.warmup + args.duration))
    warm_n = int(args.rate * args.warmup)
    connector = aiohttp.TCPConnector(limit=2048, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.monotonic()

        async def sampler() -> None:
            last_t = time.monotonic()
            last_counts = _lag_counts(gateways)
            while True:
                await asyncio.sleep(args.sample_interval)
                now = time.monotonic()
                window = [r for r in results if last_t <= r.done_at < now]
                counts = _lag_counts(gateways)
                states = [g.recorder() for g in gateways]
                lat = sorted(r.latency_ms for r in window if r.ok)
                sample = {
                    "t_s": round(now - start, 1),
                    "completed_per_s": round(len(window) / (now - last_t), 1),
                    "errors": sum(1 for r in window if not r.ok),
                    "p50_ms": _pct(lat, 0.50),
                    "p99_ms": _pct(lat, 0.99),
                    "in_flight": len(tasks),
                    "sidecar_rss_mb": [_round(_rss_mb(g.sidecar_pid())) for g in gateways],
                    "write_lag_p99_ms": _lag_p99(_minus(counts, last_counts)),
                    "recorder_queue": sum(int(s.get("queue") or 0) for s in states),
                    "spool": sum(int(s.get("spool") or 0) for s in states),
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                }
                samples.append(sample)
                log(
                    f"t={sample['t_s']:>6.0f}s  {sample['completed_per_s']:>6.1f}/s  err {sample['errors']:<4} "
                    f"p50 {sample['p50_ms']} p99 {sample['p99_ms']} ms  rss {sample['sidecar_rss_mb']} MB  "
                    f"lag p99 {sample['write_lag_p99_ms']} ms  load {sample['load_avg_1m']}"
                )
                last_t, last_counts = now, counts

        sampling = asyncio.create_task(sampler())
        for i in range(total):
            target = start + i / args.rate
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if i == warm_n:
                marks["measure_start"] = time.monotonic()
                marks["rss_start"] = [_rss_mb(g.sidecar_pid()) for g in gateways]
                marks["cpu_start"] = [_cpu_s(g.sidecar_pid()) for g in gateways]
                marks["lag_counts_start"] = _lag_counts(gateways)
                log(f"warm-up done ({warm_n} requests); measuring")
            body, headers, stream = work.request(i)
            gw = gateways[i % len(gateways)]
            result = Result(i, f"{work.run_id}-{i}", stream, gw.index, measured=i >= warm_n)
            results.append(result)
            task = asyncio.create_task(
                _one(session, gw.url + "/openai/v1/chat/completions", json.dumps(body).encode(), headers, result)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        marks["sent_end"] = time.monotonic()
        if tasks:
            await asyncio.wait(set(tasks), timeout=150)
        marks["rss_end"] = [_rss_mb(g.sidecar_pid()) for g in gateways]
        marks["cpu_end"] = [_cpu_s(g.sidecar_pid()) for g in gateways]
        marks["measure_end"] = time.monotonic()
        sampling.cancel()
    if "measure_start" not in marks:
        marks["measure_start"] = marks["sent_end"]
        marks["rss_start"] = marks["rss_end"]
        marks["cpu_start"] = marks["cpu_end"]
        marks["lag_counts_start"] = _lag_counts(gateways)
    return results, samples, marks


def _lag_counts(gateways: list[Gateway]) -> list[int]:
    total: list[int] = []
    for g in gateways:
        counts = g.recorder().get("lag_ms_counts") or []
        if len(total) < len(counts):
            total += [0] * (len(counts) - len(total))
        for i, c in enumerate(counts):
            total[i] += int(c)
    return total


def _minus(a: list[int], b: list[int]) -> list[int]:
    return [x - (b[i] if i < len(b) else 0) for i, x in enumerate(a)]


def _lag_p99(counts: list[int]) -> float | None:
    """The p99 write lag from a histogram of the recorders' buckets (intelligence.ingest.LAG_BOUNDS_MS)."""
    from intelligence.ingest import LAG_BOUNDS_MS

    n = sum(counts)
    if n <= 0:
        return None
    want, acc = 0.99 * n, 0
    for i, c in enumerate(counts):
        acc += c
        if acc >= want:
            return LAG_BOUNDS_MS[i] if i < len(LAG_BOUNDS_MS) else float("inf")
    return None


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))], 1)


def _cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (all threads), from /proc/<pid>/stat."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


# ------------------------------------------------------------------------------------------ the log


async def _log_rows(db_url: str, run_id: str) -> list[tuple[str, str | None]]:
    import asyncpg

    from intelligence.store.engine import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(db_url), timeout=30)
    try:
        rows = await conn.fetch(
            "select request_id, prompt_user from exchanges where session_id like $1",
            f"bench-{run_id}-%",
        )
        return [(r["request_id"], r["prompt_user"]) for r in rows]
    finally:
        await conn.close()


def _wait_drained(gateways: list[Gateway], timeout: float, log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [g.recorder() for g in gateways]
        if all(s and not s.get("queue") and not s.get("spool") and not s.get("held") for s in states):
            return
        time.sleep(0.5)
    log("recorders did not drain in time; comparing anyway")


def _compare(results: list[Result], rows: list[tuple[str, str | None]]) -> dict[str, Any]:
    logged_ids = {rid for rid, _ in rows}
    seen_ids = {r.request_id for r in results if r.request_id}
    lost = sorted(seen_ids - logged_ids)
    markers: dict[str, int] = {}
    for _, prompt in rows:
        text = prompt or ""
        at = text.find("Summarise ticket ")
        if at >= 0:
            marker = text[at + len("Summarise ticket ") :].split(" ", 1)[0]
            markers[marker] = markers.get(marker, 0) + 1
    duplicates = {m: n for m, n in markers.items() if n > 1}
    return {
        "logged": len(logged_ids & seen_ids),
        "lost_records": len(lost),
        "lost_examples": lost[:10],
        "duplicate_records": sum(n - 1 for n in duplicates.values()),
    }


# ------------------------------------------------------------------------------------------ budgets


def _budget_check(gateways: list[Gateway], db_url: str, rpm: int, log) -> dict[str, Any]:
    """A gateway key with an `rpm` budget, 2 x rpm requests within seconds spread over every replica."""
    import httpx

    llmproxy = str(Path(sys.executable).with_name("llmproxy"))
    made = subprocess.run(
        [llmproxy, "keys", "create", "--database-url", db_url, "--name", "bench-budget", "--rpm", str(rpm), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if made.returncode != 0:
        return {"error": f"keys create failed: {made.stderr.strip()[-300:]}"}
    doc = json.loads(made.stdout)
    secret = doc["key"]
    time.sleep(3)  # the key reaches every replica's snapshot (NOTIFY, else the 2 s poll)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarise ticket budget in one line."}]}
    statuses: dict[int, int] = {}
    per_replica: dict[int, int] = {}
    t0 = time.monotonic()
    with httpx.Client(timeout=30) as client:
        for i in range(2 * rpm):
            gw = gateways[i % len(gateways)]
            r = client.post(gw.url + "/openai/v1/chat/completions", json=body, headers={"authorization": f"Bearer {secret}"})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 200:
                per_replica[gw.index] = per_replica.get(gw.index, 0) + 1
    took = time.monotonic() - t0
    accepted = statuses.get(200, 0)
    log(f"budget: key rpm {rpm}, sent {2 * rpm} over {len(gateways)} replicas in {took:.1f} s: accepted {accepted}")
    return {
        "rpm": rpm,
        "sent": 2 * rpm,
        "seconds": round(took, 1),
        "accepted": accepted,
        "accepted_by_replica": per_replica,
        "statuses": statuses,
        "held": accepted <= rpm,
    }


# ------------------------------------------------------------------------------------------ run


def run(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        print(f"bench load: {msg}", file=sys.stderr, flush=True)

    def _interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM too: stop the gateways and the database on the way out

    signal.signal(signal.SIGTERM, _interrupted)
    tmp = Path(tempfile.mkdtemp(prefix="llmproxy-bench-load-"))
    procs: list[subprocess.Popen] = []
    gateways: list[Gateway] = []
    pg = None
    out: dict[str, Any] = {}
    try:
        fake_port = _free_port()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "extproc.testing.fakes", "--port", str(fake_port)],
                stdout=subprocess.DEVNULL,
                stderr=open(tmp / "fake.log", "wb"),
                start_new_session=True,
            )
        )
        db_url = args.database_url or os.environ.get("DATABASE_URL")
        if not db_url:
            from intelligence.embedded_pg import start_embedded

            log("starting a temporary PostgreSQL")
            pg = start_embedded(tmp / "pg")
            db_url = pg.url
        from intelligence.store.migrate import upgrade

        upgrade(db_url)
        log(f"starting {args.replicas} gateway(s)")
        gateways = [_start_gateway(i, tmp, db_url, f"http://127.0.0.1:{fake_port}") for i in range(args.replicas)]
        for gw in gateways:
            _wait_healthy(gw)
        # decimal, like the sentences plain text: hex run ids made the injection detector's embedding layer
        # score about 1 prompt in 700 above its threshold (a 400 that is the policy's doing, not a fault)
        run_id = str(random.SystemRandom().randrange(10**9, 10**10))
        work = Workload(run_id, args.rate, args.stream_share, args.tools_share, args.seed)
        log(f"run {run_id}: {args.rate:g} req/s for {args.warmup:g} s warm-up + {args.duration:g} s")
        results, samples, marks = asyncio.run(_drive(args, gateways, work, log))
        _wait_drained(gateways, 120, log)
        deadline = time.monotonic() + 30  # the last batches commit within a flush or two of the state file
        while True:
            compared = _compare(results, asyncio.run(_log_rows(db_url, run_id)))
            if not compared["lost_records"] or time.monotonic() > deadline:
                break
            time.sleep(1)
        measured = [r for r in results if r.measured]
        lat = sorted(r.latency_ms for r in measured if r.ok)
        ttft = sorted(r.ttft_ms for r in measured if r.ok and r.stream and r.ttft_ms is not None)
        span = max(1e-9, marks["measure_end"] - marks["measure_start"])
        errors: dict[str, int] = {}
        for r in results:
            if not r.ok:
                errors[r.error or "?"] = errors.get(r.error or "?", 0) + 1
        rss_start = [x for x in marks["rss_start"] if x is not None]
        rss_end = [x for x in marks["rss_end"] if x is not None]
        lag_total = _minus(_lag_counts(gateways), marks["lag_counts_start"])
        out = {
            "rate": args.rate,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "replicas": args.replicas,
            "sent": len(results),
            "ok": sum(1 for r in results if r.ok),
            "errors": sum(1 for r in results if not r.ok),
            "error_kinds": errors,
            "throughput_rps": round(sum(1 for r in measured if r.ok) / span, 1),
            "p50_ms": _pct(lat, 0.50),
            "p90_ms": _pct(lat, 0.90),
            "p99_ms": _pct(lat, 0.99),
            "max_ms": round(lat[-1], 1) if lat else None,
            "ttft_p50_ms": _pct(ttft, 0.50),
            "ttft_p99_ms": _pct(ttft, 0.99),
            "rss_start_mb": round(sum(rss_start), 1) if rss_start else None,
            "rss_end_mb": round(sum(rss_end), 1) if rss_end else None,
            "rss_growth_pct": round(100 * (sum(rss_end) - sum(rss_start)) / sum(rss_start), 1) if rss_start and rss_end else None,
            "write_lag_p99_ms": _lag_p99(lag_total),
            "sidecar_cpu_ms_per_req": _cpu_per_request(marks, len(measured)),
            **compared,
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "samples": samples,
        }
        if args.replicas >= 2:
            out["budget"] = _budget_check(gateways, db_url, args.budget_rpm, log)
    finally:
        for gw in gateways:
            if gw.proc.poll() is None:
                gw.proc.send_signal(signal.SIGTERM)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [gw.proc for gw in gateways] + procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        if pg is not None:
            pg.stop()
        if args.keep:
            log(f"kept {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    _report(out, args)
    return 0 if out and out["errors"] == 0 and out["lost_records"] == 0 and out["duplicate_records"] == 0 else 1


def _cpu_per_request(marks: dict[str, Any], n: int) -> float | None:
    pairs = [(a, b) for a, b in zip(marks.get("cpu_start") or [], marks.get("cpu_end") or []) if a is not None and b is not None]
    if not pairs or not n:
        return None  # a sidecar restarted during the run: its CPU time started again
    return round(sum(b - a for a, b in pairs) * 1000 / n, 2)


def _report(out: dict[str, Any], args: argparse.Namespace) -> None:
    if not out:
        return
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(
        f"\n{out['replicas']} gateway(s), {out['rate']:g} req/s offered for {out['duration_s']:g} s (+{out['warmup_s']:g} s warm-up)\n"
        f"  sent {out['sent']}, ok {out['ok']}, errors {out['errors']} {out['error_kinds'] or ''}\n"
        f"  throughput {out['throughput_rps']} req/s; latency p50 {out['p50_ms']} / p90 {out['p90_ms']} / p99 {out['p99_ms']} ms "
        f"(TTFT p50 {out['ttft_p50_ms']} / p99 {out['ttft_p99_ms']} ms)\n"
        f"  sidecar RSS {out['rss_start_mb']} MB after warm-up -> {out['rss_end_mb']} MB at the end ({out['rss_growth_pct']} %)\n"
        f"  log: {out['logged']} logged, {out['lost_records']} lost, {out['duplicate_records']} duplicated; "
        f"write lag p99 {out['write_lag_p99_ms']} ms; sidecar CPU {out['sidecar_cpu_ms_per_req']} ms per request\n"
        f"  load average {out['load_avg']}"
    )
    if "budget" in out:
        b = out["budget"]
        print(
            f"  key budget {b.get('rpm')} rpm across replicas: accepted {b.get('accepted')} of {b.get('sent')} "
            f"(by replica {b.get('accepted_by_replica')}; statuses {b.get('statuses')}) {b.get('error', '')}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
