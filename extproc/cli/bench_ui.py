"""`llmproxy bench ui`: how fast a request shows up on the Live page, and how fast every page loads.

Starts the real stack (``llmproxy up``: embedded or given PostgreSQL, sidecar, Envoy, the pattern worker,
the intelligence process, the dashboard) on free loopback ports with a fake provider upstream, opens the
Live page in headless Chromium (Debian's /usr/bin/chromium through Playwright; never a downloaded
browser) and measures, per request, from the moment the client has the whole response to the moment the
row is in the page's DOM (a MutationObserver on the live table stamps each row as it is inserted).

* default: ``--requests 50`` requests one after another (0.2-0.5 s apart), the first one the first
  request the fresh stack ever serves;
* ``--rate R --duration S``: an open-loop load of R requests/s for S seconds; figures per minute show
  whether the page keeps up (no growing lag);
* ``--pages N``: full page loads of every page instead (navigation start to the last element rendered),
  N per page, each in a fresh browser context, with the gateway idle.

``--json`` prints one object with ``p50_ms``, ``p99_ms``, ``max_ms``, ``n`` (and more). Run it as
``python -m extproc.cli.bench_ui`` or, once hooked under ``llmproxy bench``, ``llmproxy bench ui``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# what each page shows last (its final section): a page is complete once this is there and the DOM is quiet
PAGES = [
    ("live", "", "Live traffic", "live: pushed over a WebSocket"),
    ("explorer", "explorer", "Explorer", "Open by request id"),
    ("analytics", "analytics", "Analytics", "Export and report"),
    ("patterns", "patterns", "Patterns", "Search similar prompts"),
    ("security", "security", "Security", "Unacknowledged only"),  # lazy tabs: the Alerts tab is what opens
    ("experiments", "experiments", "Experiments", "History"),
    ("system", "system", "System", "Versions"),
]
QUIET_MS = (
    500.0  # the DOM is done when nothing changed for this long after its last section is there (fragments refresh every 3-5 s)
)

# Stamps every row the live table gets (epoch ms) and the page's last DOM change (ms since navigation start).
_ROW_STAMPS = """
(() => {
  const view = window.__llmproxyLive;
  if (!view) return false;
  window.__benchSeen = window.__benchSeen || {};
  const seen = window.__benchSeen;
  new MutationObserver((records) => {
    const now = performance.timeOrigin + performance.now();
    for (const r of records) for (const n of r.addedNodes) {
      const rid = n.dataset && n.dataset.rid;
      if (rid && !(rid in seen)) seen[rid] = now;
    }
  }).observe(view.el.tbody, { childList: true });
  for (const tr of view.el.tbody.children) if (!(tr.dataset.rid in seen)) seen[tr.dataset.rid] = 0;
  return true;
})()
"""
_LAST_CHANGE = """
window.__benchLast = 0;
const benchObserver = new MutationObserver((records) => {
  for (const r of records) {
    const el = r.target instanceof Element ? r.target : r.target.parentElement;
    if (el && el.closest('[data-testid="stStatusWidget"], [data-testid="stToolbar"], [data-testid="stDecoration"], [data-testid="stHeader"]')) continue;
    window.__benchLast = performance.now();
    break;
  }
});
const benchOptions = { subtree: true, childList: true, attributes: true, characterData: true };
benchObserver.observe(document, benchOptions);
// components render inside shadow roots, which a document observer does not see
const benchAttach = Element.prototype.attachShadow;
Element.prototype.attachShadow = function (init) {
  const root = benchAttach.call(this, init);
  benchObserver.observe(root, benchOptions);
  return root;
};
"""


def register(bench_subparsers: argparse._SubParsersAction) -> None:
    p = bench_subparsers.add_parser("ui", help="response end -> row on the Live page in Chromium; full page loads (--pages)")
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=50, help="requests one after another (default 50)")
    p.add_argument("--rate", type=float, default=None, help="instead: an open-loop load of this many requests/s ...")
    p.add_argument("--duration", type=float, default=300.0, help="... for this many seconds (default 300)")
    p.add_argument("--pages", type=int, default=0, help="instead: full page loads, N per page (gateway idle)")
    p.add_argument("--data-dir", type=Path, default=None, help="stack data dir (default: a temporary one, removed after)")
    p.add_argument("--database-url", default=None, help="PostgreSQL to use (default: embedded in the data dir)")
    p.add_argument("--no-worker", action="store_true", help="without the pattern-memory worker (default: full stack)")
    p.add_argument("--no-intelligence", action="store_true", help="without the intelligence process (default: full stack)")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="with --pages: before each load wait (up to 120 s) until the machine's CPUs were this idle over the "
        "last second (e.g. 0.8), so other work on a shared machine does not land in the figures; default: don't wait",
    )
    p.add_argument(
        "--dashboard", default=None, help="measure a running stack's dashboard (URL) instead of starting one (with --pages)"
    )
    p.add_argument("--chromium", default=CHROMIUM, help=f"Chromium binary (default {CHROMIUM})")
    p.add_argument("--screenshot", type=Path, default=None, help="save a screenshot of the Live page at the end")
    p.add_argument("--json", action="store_true", help="print one JSON object")


# ---------------------------------------------------------------------------------------------- the stack


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _llmproxy() -> list[str]:
    script = Path(sys.executable).with_name("llmproxy")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from extproc.cli import main; main()"]


@dataclass
class Stack:
    gateway: str
    dashboard: str
    database_url: str
    proc: subprocess.Popen[bytes]
    log: Path
    data_dir: Path
    started: float = field(default_factory=time.monotonic)


@contextlib.contextmanager
def running_stack(args: argparse.Namespace, upstream: str) -> Iterator[Stack]:
    """``llmproxy up`` on free loopback ports; stopped (by its pid) and cleaned up afterwards."""
    import httpx

    temp = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="llmproxy-bench-ui-")) if temp else args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = {name: _free_port() for name in ("port", "admin-port", "sidecar-port", "ui-port", "control-port")}
    cmd = [*_llmproxy(), "up", "--data-dir", str(data_dir)]
    for name, port in ports.items():
        cmd += [f"--{name}", str(port)]
    for provider, suffix in (("openai", ""), ("anthropic", ""), ("openrouter", "/api")):
        cmd += ["--upstream", f"{provider}={upstream}{suffix}"]
    if args.no_worker:
        cmd.append("--no-worker")
    if args.no_intelligence:
        cmd.append("--no-intelligence")
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "OPENROUTER_API_KEY", "SECRET_KEY")}
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    else:
        env.pop("DATABASE_URL", None)
    log = data_dir / "bench-up.log"
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    gateway, dashboard = f"http://127.0.0.1:{ports['port']}", f"http://127.0.0.1:{ports['ui-port']}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llmproxy up exited {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (
                    httpx.get(f"{gateway}/healthz", timeout=1).status_code == 200
                    and httpx.get(f"{dashboard}/_stcore/health", timeout=1).text == "ok"
                ):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not come up in 180 s:\n{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.2)
        db_url = args.database_url or ""
        while not db_url:  # `up` writes stack.json once everything it started is up
            with contextlib.suppress(OSError, ValueError):
                db_url = json.loads((data_dir / "stack.json").read_text()).get("database_url") or ""
            if not db_url and time.monotonic() > deadline:
                raise RuntimeError(f"no stack.json in {data_dir} after 180 s")
            time.sleep(0.1)
        yield Stack(gateway, dashboard, db_url, proc, log, data_dir)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the group `up` leads: only what this command started
                proc.wait()
        if temp:
            shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def chromium(path: str) -> Iterator[Any]:
    if not Path(path).exists():
        raise SystemExit(f"llmproxy bench ui: {path} is missing (Debian: apt-get install -y chromium, or `make sysdeps`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class NotifyClock:
    """Hears ``NOTIFY llmproxy_exchanges`` like the dashboard does and notes when each request id arrived."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.arrivals: dict[str, float] = {}
        self.error: str | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="bench-notify", daemon=True)
        self._thread.start()
        self._ready.wait(15)

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.arrivals.setdefault(payload, time.time())

    async def _run(self) -> None:
        import asyncpg

        from intelligence.store.engine import asyncpg_dsn
        from intelligence.store.repositories import NOTIFY_CHANNEL

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            conn = await asyncpg.connect(asyncpg_dsn(self.url))
        except Exception as exc:  # noqa: BLE001 - the figures then lack this stage; say why
            self.error = f"{type(exc).__name__}: {exc}"
            self._ready.set()
            return
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._heard)
            self._ready.set()
            await self._stop.wait()
        finally:
            await conn.close()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


# ---------------------------------------------------------------------------------------------- measuring


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _summary(values_ms: list[float]) -> dict[str, Any]:
    return {
        "n": len(values_ms),
        "p50_ms": _round(_pct(values_ms, 0.5)),
        "p99_ms": _round(_pct(values_ms, 0.99)),
        "max_ms": _round(max(values_ms) if values_ms else None),
        "mean_ms": _round(statistics.fmean(values_ms) if values_ms else None),
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def open_live_page(browser: Any, dashboard: str) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.goto(dashboard)
    page.locator('.llp[data-state="live"]').wait_for(timeout=120_000)
    if not page.evaluate(_ROW_STAMPS):
        raise RuntimeError("the Live page has no live view (window.__llmproxyLive missing)")
    return context, page


def _chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "bench ui: how long to the live page?"}]}


def sequential(stack: Stack, page: Any, n: int, notify: NotifyClock | None) -> dict[str, Any]:
    import httpx

    on_page: list[float] = []
    to_notify: list[float] = []
    to_dom: list[float] = []
    first: float | None = None
    with httpx.Client(base_url=stack.gateway, timeout=60) as client:
        for i in range(n):
            response = client.post("/openai/v1/chat/completions", json=_chat(f"gpt-bench-{uuid.uuid4().hex[:8]}"))
            done = time.time() * 1000.0  # the client has every byte of the response
            if response.status_code != 200:
                raise RuntimeError(f"request {i} answered {response.status_code}: {response.text[:300]}")
            rid = response.headers["x-llmproxy-request-id"]
            deadline = time.monotonic() + 30
            seen = None
            while seen is None:
                seen = page.evaluate("(rid) => (window.__benchSeen || {})[rid] ?? null", rid)
                if seen is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"request {i} ({rid}) never reached the live page")
                    time.sleep(0.01)
            on_page.append(seen - done)
            if i == 0:
                first = seen - done
            if notify is not None and rid in notify.arrivals:
                to_notify.append(notify.arrivals[rid] * 1000.0 - done)
                to_dom.append(seen - notify.arrivals[rid] * 1000.0)
            time.sleep(random.uniform(0.2, 0.5))  # a moment apart, as traffic is, not in lock-step with anything
    return {
        **_summary(on_page),
        "first_ms": _round(first),
        "values_ms": [_round(v) for v in on_page],
        "notify": _summary(to_notify),  # response end -> NOTIFY: the gateway's recorder and the database
        "notify_to_dom": _summary(to_dom),  # NOTIFY -> row in the DOM: the dashboard's share
    }


def open_loop(stack: Stack, page: Any, rate: float, duration: float, notify: NotifyClock | None) -> dict[str, Any]:
    """R requests/s for S seconds from a thread; the page's stamps read at the end."""
    sent: list[tuple[float, str, float]] = []  # (scheduled at, request id, response end epoch ms)
    errors = 0

    async def load() -> None:
        nonlocal errors
        import aiohttp

        conn = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:
            start = time.monotonic()

            async def one(at: float) -> None:
                nonlocal errors
                try:
                    async with session.post(
                        f"{stack.gateway}/openai/v1/chat/completions", json=_chat(f"gpt-rate-{uuid.uuid4().hex[:8]}")
                    ) as r:
                        await r.read()
                        done = time.time() * 1000.0
                        if r.status == 200:
                            sent.append((at, r.headers["x-llmproxy-request-id"], done))
                        else:
                            errors += 1
                except Exception:  # noqa: BLE001 - counted
                    errors += 1

            tasks = []
            i = 0
            while (at := i / rate) < duration:
                delay = start + at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(at)))
                i += 1
            await asyncio.gather(*tasks)

    worker = threading.Thread(target=lambda: asyncio.run(load()), name="bench-load", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(1.0)
        page.evaluate("1")  # keep the page's event loop observed (and the test honest about a live browser)
    time.sleep(5.0)  # let the last rows arrive
    seen: dict[str, float] = page.evaluate("window.__benchSeen || {}")
    interval = 60.0 if duration >= 240 else max(10.0, duration / 6)
    lat: list[float] = []
    notify_lat: list[float] = []
    dashboard_lat: list[float] = []
    buckets: dict[int, list[float]] = {}
    notify_buckets: dict[int, list[float]] = {}
    missing = 0
    for at, rid, done in sent:
        arrived = notify.arrivals.get(rid) if notify is not None else None
        if arrived is not None:
            notify_lat.append(arrived * 1000.0 - done)
            notify_buckets.setdefault(int(at // interval), []).append(arrived * 1000.0 - done)
        t = seen.get(rid)
        if not t:
            missing += 1
            continue
        lat.append(t - done)
        buckets.setdefault(int(at // interval), []).append(t - done)
        if arrived is not None:
            dashboard_lat.append(t - arrived * 1000.0)
    view = page.evaluate("(() => { const v = window.__llmproxyLive; return v ? v.stats : null; })()")
    return {
        **_summary(lat),
        "rate": rate,
        "duration_s": duration,
        "sent": len(sent),
        "errors": errors,
        "missing": missing,  # rows pushed out of the 200-row table in the same frame they arrived (never in the DOM)
        "interval_s": interval,
        "per_interval": [
            {"from_s": k * interval, **_summary(v), "notify_p50_ms": _round(_pct(notify_buckets.get(k, []), 0.5))}
            for k, v in sorted(buckets.items())
        ],
        "notify": _summary(notify_lat),  # response end -> NOTIFY: the gateway's recorder and the database
        "notify_to_dom": _summary(dashboard_lat),  # NOTIFY -> row in the DOM: the dashboard's share
        "page": view,
    }


def _cpu_idle(interval: float = 1.0) -> float:
    """The fraction of CPU time all cores spent idle over ``interval`` seconds (/proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    t0, i0 = sample()
    time.sleep(interval)
    t1, i1 = sample()
    return (i1 - i0) / max(1, t1 - t0)


def _wait_for_idle(fraction: float, limit_s: float = 120.0) -> float:
    """Wait until the machine was at least ``fraction`` idle for a second (at most ``limit_s``); the idleness seen."""
    deadline = time.monotonic() + limit_s
    idle = _cpu_idle()
    while idle < fraction and time.monotonic() < deadline:
        idle = _cpu_idle()
    return idle


def _load_once(context: Any, url: str, name: str, ready: str) -> float:
    """Navigation start -> the last DOM change before the page stayed quiet for QUIET_MS (ms), once its final
    section (``ready``) is there, its script run has finished and nothing shows a skeleton or spinner."""
    page = context.new_page()
    try:
        page.goto(url, wait_until="commit")
        page.get_by_text(ready).first.wait_for(state="attached", timeout=120_000)
        deadline = time.monotonic() + 60
        while True:
            state = page.evaluate(
                "({now: performance.now(), last: window.__benchLast, busy: document.querySelectorAll("
                '\'[data-testid="stSkeleton"], [data-testid="stSpinner"], [data-test-script-state="running"]\').length})'
            )
            if not state["busy"] and state["now"] - state["last"] >= QUIET_MS:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not settle in 60 s")
            time.sleep(0.05)
        if page.locator('[data-testid="stException"]').count():
            raise RuntimeError(f"{name} shows an exception: {page.inner_text('body')[:500]}")
        return float(state["last"])
    finally:
        page.close()


def page_loads(stack: Stack, browser: Any, repeat: int, wait_idle: float = 0.0) -> dict[str, Any]:
    """Navigation start -> the last element rendered, for every page: ``cold`` in a fresh browser context each
    time (no HTTP cache: Chromium compiles Streamlit's bundle first), ``warm`` reloaded in one context that has
    loaded the dashboard before (a returning user's browser)."""
    cold: dict[str, list[float]] = {name: [] for name, *_ in PAGES}
    warm: dict[str, list[float]] = {name: [] for name, *_ in PAGES}
    first_page: float | None = None
    idle_seen: list[float] = []
    returning = browser.new_context(viewport={"width": 1440, "height": 1000})
    returning.add_init_script(_LAST_CHANGE)
    try:
        for round_ in range(repeat + 1):  # round 0: the dashboard process's very first pages (imports, pools): apart
            for name, path, _title, ready in PAGES:
                context = browser.new_context(viewport={"width": 1440, "height": 1000})
                context.add_init_script(_LAST_CHANGE)
                try:
                    if wait_idle:
                        idle_seen.append(_wait_for_idle(wait_idle))
                    loaded = _load_once(context, f"{stack.dashboard}/{path}", name, ready)
                finally:
                    context.close()
                if wait_idle:
                    idle_seen.append(_wait_for_idle(wait_idle))
                again = _load_once(returning, f"{stack.dashboard}/{path}", name, ready)
                if round_ == 0:
                    first_page = loaded if first_page is None else first_page
                    continue
                cold[name].append(loaded)
                warm[name].append(again)
    finally:
        returning.close()

    def table(results: dict[str, list[float]]) -> dict[str, Any]:
        return {name: {**_summary(v), "values_ms": [_round(x) for x in v]} for name, v in results.items()}

    return {
        "first_page_of_the_process_ms": _round(first_page),
        "cold": table(cold),
        "warm": table(warm),
        "max_cold_ms": _round(max((max(v) for v in cold.values() if v), default=None)),
        "max_warm_ms": _round(max((max(v) for v in warm.values() if v), default=None)),
        "cpu_idle_before_loads": {
            "min": _round(min(idle_seen) * 100) if idle_seen else None,
            "median": _round(statistics.median(idle_seen) * 100) if idle_seen else None,
        },
    }


# ---------------------------------------------------------------------------------------------- command


def run(args: argparse.Namespace) -> int:
    from extproc.testing.fakes import FakeProvider

    if args.dashboard:
        if not args.pages:
            raise SystemExit("llmproxy bench ui: --dashboard measures page loads only (with --pages N)")
        with chromium(args.chromium) as browser:
            stack = Stack("", args.dashboard.rstrip("/"), "", None, Path("-"), Path("-"))  # type: ignore[arg-type]
            result = {"mode": "pages", **page_loads(stack, browser, args.pages, args.wait_idle)}
        result["stack"] = {"dashboard": args.dashboard, "load_average": list(os.getloadavg())}
        print(json.dumps(result)) if args.json else _print(result)
        return 0
    fake = FakeProvider(record=False).start_in_thread()
    notify: NotifyClock | None = None
    try:
        with running_stack(args, fake.base_url) as stack, chromium(args.chromium) as browser:
            if args.pages:
                result: dict[str, Any] = {"mode": "pages", **page_loads(stack, browser, args.pages, args.wait_idle)}
            else:
                context, page = open_live_page(browser, stack.dashboard)
                try:
                    if stack.database_url:
                        notify = NotifyClock(stack.database_url)
                    if args.rate:
                        result = {"mode": "rate", **open_loop(stack, page, args.rate, args.duration, notify)}
                    else:
                        result = {"mode": "sequential", **sequential(stack, page, args.requests, notify)}
                    if args.screenshot:
                        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                        page.screenshot(path=str(args.screenshot))
                finally:
                    context.close()
            if notify is not None:
                result["notifications_heard"] = len(notify.arrivals)
                if notify.error:
                    result["notify_error"] = notify.error
            result["stack"] = {
                "worker": not args.no_worker,
                "intelligence": not args.no_intelligence,
                "database": "given" if args.database_url else "embedded",
                "load_average": list(os.getloadavg()),
            }
    finally:
        if notify is not None:
            notify.close()
        fake.stop_thread()
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0


def _print(result: dict[str, Any]) -> None:
    if result["mode"] == "pages":
        print(f"first page of a fresh dashboard process: {result['first_page_of_the_process_ms']} ms")
        for name in result["cold"]:
            c, w = result["cold"][name], result["warm"][name]
            print(f"{name:12s} fresh browser: median {c['p50_ms']} ms, max {c['max_ms']} ms; ", end="")
            print(f"returning browser: median {w['p50_ms']} ms, max {w['max_ms']} ms ({c['n']} loads each)")
        return
    print(f"response end -> row in the Live page's DOM: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, ")
    print(f"max {result['max_ms']} ms over {result['n']} requests")
    if result["mode"] == "sequential":
        print(f"first request after start: {result['first_ms']} ms; response end -> NOTIFY p50 {result['notify']['p50_ms']} ms")
    else:
        for m in result["per_interval"]:
            print(f"  from {m['from_s']:5.0f} s: p50 {m['p50_ms']} ms, p99 {m['p99_ms']} ms ({m['n']} rows)")
        print(f"  sent {result['sent']}, errors {result['errors']}, never in the DOM {result['missing']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m extproc.cli.bench_ui", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
