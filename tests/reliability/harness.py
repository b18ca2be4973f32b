"""The fault suite's tools: clients that remember every request they sent and what they saw, the check
that every exchange sent appears exactly once in the request log, and the per-fault report.

Every request carries a unique marker in its prompt (``Summarise ticket <marker> in one line.``: plain
enough that the injection detector leaves it alone) and the suite's session id, so
the log can be checked by content, not only by request id: a client request that reached the log twice
(under two request ids) is a duplicate even though ``exchanges.request_id`` is a primary key.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import LLMPROXY, Stack

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order by id",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
        },
    }
]


@dataclass
class Outcome:
    """One client request and what the client saw."""

    marker: str
    stream: bool
    sent_at: float  # time.monotonic()
    status: int | None = None  # None: no HTTP response at all (connection refused or reset)
    request_id: str | None = None
    complete: bool = False  # 200, the whole body arrived, and it is the answer to this prompt
    error: str | None = None
    latency_s: float = 0.0
    body: str = ""

    @property
    def seen(self) -> str:
        """What the client saw, in a few words (for the report)."""
        if self.complete:
            return "200 complete"
        if self.status is None:
            return f"no response ({self.error})"
        return f"{self.status} {self.error or ''}".strip()


def prompt_of(marker: str) -> str:
    return f"Summarise ticket {marker} in one line."


def marker_of(prompt: str | None) -> str:
    return (prompt or "").removeprefix("Summarise ticket ").split(" ", 1)[0]


def chat_body(marker: str, *, stream: bool, tools: bool = False, pad: int = 0) -> dict[str, Any]:
    text = prompt_of(marker) + (" lorem" * pad)
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "stream": stream}
    if tools:
        body["tools"] = TOOLS
    return body


def expected_text(marker: str) -> str:
    return f"echo: {prompt_of(marker)}"


def send(
    client: httpx.Client,
    url: str,
    marker: str,
    *,
    stream: bool,
    headers: dict[str, str] | None = None,
    tools: bool = False,
    timeout: float = 30.0,
    read_delay: float = 0.0,
    expect: str | None = None,
) -> Outcome:
    """One chat completion through the gateway, read to the end; never raises."""
    out = Outcome(marker, stream, time.monotonic())
    try:
        with client.stream(
            "POST",
            url + "/openai/v1/chat/completions",
            json=chat_body(marker, stream=stream, tools=tools),
            headers={"authorization": "Bearer sk-reliability", **(headers or {})},
            timeout=timeout,
        ) as resp:
            out.status = resp.status_code
            out.request_id = resp.headers.get("x-llmproxy-request-id")
            chunks: list[bytes] = []
            for chunk in resp.iter_raw(4096 if read_delay else None):
                chunks.append(chunk)
                if read_delay:
                    time.sleep(read_delay)
            out.body = b"".join(chunks).decode("utf-8", "replace")
    except httpx.HTTPError as exc:
        out.error = f"{type(exc).__name__}"
        out.latency_s = time.monotonic() - out.sent_at
        return out
    out.latency_s = time.monotonic() - out.sent_at
    if out.status != 200:
        out.error = _error_of(out.body)
        return out
    text = stream_text(out.body) if stream else _message_text(out.body)
    want = expect if expect is not None else expected_text(marker)
    if text is None:
        out.error = "incomplete body" + (" (no [DONE])" if stream else "")
    elif not tools and text != want:
        out.error = f"unexpected answer {text[:60]!r}"
    else:
        out.complete = True
    return out


def stream_text(body: str) -> str | None:
    """The text of an OpenAI chat stream, or None when it did not end with [DONE]."""
    parts: list[str] = []
    done = False
    for block in body.split("\n\n"):
        for line in block.splitlines():
            if not line.startswith("data: "):
                continue
            data = line[6:].strip()
            if data == "[DONE]":
                done = True
                continue
            try:
                doc = json.loads(data)
            except ValueError:
                return None
            for choice in doc.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if isinstance(content, str):
                    parts.append(content)
    return "".join(parts) if done else None


def _message_text(body: str) -> str | None:
    try:
        doc = json.loads(body)
        message = doc["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return message.get("content") or ("" if message.get("tool_calls") else None)


def _error_of(body: str) -> str:
    try:
        doc = json.loads(body)
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict):
            return str(err.get("code") or err.get("type") or err.get("message"))[:80]
    except ValueError:
        pass
    return body.strip()[:80] or "empty body"


class Traffic:
    """Steady client traffic from threads: ``rate`` requests a second, ``stream_share`` of them SSE, some
    with tools. Every request is remembered (:class:`Outcome`)."""

    def __init__(
        self,
        url: str,
        session: str,
        *,
        rate: float = 20.0,
        stream_share: float = 0.3,
        threads: int = 4,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        label: str = "",
    ) -> None:
        self.url = url
        self.session = session
        self.label = label  # markers are <session>-<label><n>: two Traffic objects on one session need two labels
        self.rate = rate
        self.stream_share = stream_share
        self.threads = threads
        self.headers = {"x-session-id": session, **(headers or {})}
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counter = itertools.count()
        self._workers: list[threading.Thread] = []

    def next_marker(self) -> tuple[str, int]:
        n = next(self._counter)
        return f"{self.session}-{self.label}{n}", n

    def one(self, client: httpx.Client, **kw: Any) -> Outcome:
        marker, n = self.next_marker()
        stream = kw.pop("stream", (n % 10) < int(self.stream_share * 10))
        out = send(client, self.url, marker, stream=stream, headers=self.headers, timeout=self.timeout, **kw)
        with self._lock:
            self.outcomes.append(out)
        return out

    def burst(self, n: int, **kw: Any) -> list[Outcome]:
        with httpx.Client() as client:
            return [self.one(client, **kw) for _ in range(n)]

    def start(self) -> Traffic:
        interval = self.threads / self.rate

        def loop() -> None:
            with httpx.Client() as client:
                next_at = time.monotonic()
                while not self._stop.is_set():
                    self.one(client)
                    next_at += interval
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        self._stop.wait(delay)
                    else:
                        next_at = time.monotonic()

        self._workers = [threading.Thread(target=loop, daemon=True, name=f"traffic-{i}") for i in range(self.threads)]
        for w in self._workers:
            w.start()
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for w in self._workers:
            w.join(self.timeout + 5)
        return self.outcomes

    def since(self, t: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.sent_at >= t]

    def wait_until(self, predicate: Callable[[list[Outcome]], bool], timeout: float, after: float) -> float:
        """Seconds until ``predicate(outcomes sent after ``after``)`` holds (raises when it never does)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.since(after)):
                return time.monotonic() - after
            time.sleep(0.2)
        raise AssertionError(f"traffic did not recover within {timeout:.0f} s: {summarize(self.since(after))}")


def summarize(outcomes: list[Outcome]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in outcomes:
        out[o.seen] = out.get(o.seen, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


# ------------------------------------------------------------------------------------------- the log


@dataclass
class LogCheck:
    rows: int
    complete_sent: int
    missing: list[str] = field(default_factory=list)  # markers a client got complete, absent from the log
    duplicates: dict[str, int] = field(default_factory=dict)  # marker -> rows
    wrong_id: list[str] = field(default_factory=list)  # the client's request id is not the row of its marker
    failed_logged: int = 0  # requests the client saw fail that the log holds anyway (with their error)
    failed_absent: int = 0
    session_count: int | None = None  # sessions.request_count (double counting on replay shows here)
    flags: dict[str, dict[str, Any]] = field(default_factory=dict)  # marker -> flags
    statuses: dict[str, int | None] = field(default_factory=dict)  # marker -> logged status
    errors: dict[str, str | None] = field(default_factory=dict)  # marker -> logged error

    def assert_exactly_once(self) -> None:
        assert not self.missing, f"{len(self.missing)} exchanges the clients completed are not in the log: {self.missing[:5]}"
        assert not self.duplicates, f"exchanges logged more than once: {self.duplicates}"
        assert not self.wrong_id, f"rows under another request id than the client was given: {self.wrong_id[:5]}"
        assert self.session_count == self.rows, f"sessions.request_count {self.session_count} != {self.rows} rows"

    def holds(self) -> str:
        return (
            f"{self.rows} rows for {self.complete_sent} completed + {self.failed_logged} failed exchanges; "
            f"{len(self.missing)} missing, {len(self.duplicates)} duplicated"
        )


async def _rows(db_url: str, session: str) -> tuple[list[Any], int | None]:
    import asyncpg

    from intelligence.store.engine import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(db_url), timeout=10)
    try:
        rows = await conn.fetch(
            "select request_id, prompt_user, status, error, flags, xmin::text::bigint as tx from exchanges"
            " where session_id = $1 order by finished_at",
            session,
        )
        count = await conn.fetchval("select request_count from sessions where session_id = $1", session)
        return list(rows), count
    finally:
        await conn.close()


def check_log(db_url: str, session: str, outcomes: list[Outcome], *, wait: float = 60.0, all_logged: bool = False) -> LogCheck:
    """Wait (up to ``wait`` s) until every exchange a client completed is logged (``all_logged``: every
    exchange the clients sent, failed ones too), then compare."""
    complete = [o for o in outcomes if o.complete]
    awaited = outcomes if all_logged else complete
    deadline = time.monotonic() + wait
    while True:
        try:
            rows, count = asyncio.run(_rows(db_url, session))
        except (OSError, Exception):
            rows, count = [], None
        by_marker: dict[str, list[Any]] = {}
        for r in rows:
            marker = marker_of(r["prompt_user"])
            by_marker.setdefault(marker, []).append(r)
        missing = [o.marker for o in complete if o.marker not in by_marker]
        absent = [o.marker for o in awaited if o.marker not in by_marker]
        if (not absent and count == len(rows)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    check = LogCheck(rows=len(rows), complete_sent=len(complete), missing=missing, session_count=count)
    check.duplicates = {m: len(rs) for m, rs in by_marker.items() if len(rs) > 1}
    for o in complete:
        rs = by_marker.get(o.marker)
        if rs and o.request_id and rs[0]["request_id"] != o.request_id:
            check.wrong_id.append(o.marker)
    for o in outcomes:
        if not o.complete:
            if o.marker in by_marker:
                check.failed_logged += 1
            else:
                check.failed_absent += 1
    for m, rs in by_marker.items():
        flags = rs[0]["flags"]
        check.flags[m] = json.loads(flags) if isinstance(flags, str) else (flags or {})
        check.statuses[m] = rs[0]["status"]
        check.errors[m] = rs[0]["error"]
    return check


def transaction_order(db_url: str, session: str) -> list[int]:
    """The writing transaction of each row, in the order the exchanges finished (replay order check)."""
    rows, _ = asyncio.run(_rows(db_url, session))
    return [int(r["tx"]) for r in rows]


# ------------------------------------------------------------------------------------------- the stack


def start_full_stack(tmp: Path, db_url: str | None, fake, *extra: str, env: dict[str, str] | None = None) -> Stack:
    """`llmproxy up` with every part: worker, intelligence process and dashboard (start_stack leaves the
    dashboard out). ``db_url`` None: the embedded PostgreSQL under `up`'s own supervision."""
    from tests.e2e.conftest import free_port

    port, admin, sidecar, ui, control = (free_port() for _ in range(5))
    data_dir = tmp / "data"
    args = [
        LLMPROXY,
        "up",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--admin-port",
        str(admin),
        "--sidecar-port",
        str(sidecar),
        "--ui-port",
        str(ui),
        "--control-port",
        str(control),
        "--upstream",
        f"openai={fake.base_url}",
        "--upstream",
        f"anthropic={fake.base_url}",
        *extra,
    ]
    base_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    out = open(tmp / "up.log", "wb")
    proc = subprocess.Popen(
        args,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**base_env, **({"DATABASE_URL": db_url} if db_url else {}), **(env or {})},
    )
    stack = Stack(proc, data_dir, port, admin, sidecar, db_url or "", fake, extra={"ui_port": ui, "control_port": control})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llmproxy up exited {proc.returncode}:\n{(tmp / 'up.log').read_text()}")
        state = data_dir / "stack.json"
        if state.exists():
            try:
                if httpx.get(f"{stack.url}/healthz", timeout=1).status_code == 200:
                    stack.db_url = json.loads(state.read_text())["database_url"]
                    return stack
            except (httpx.HTTPError, ValueError, KeyError):
                pass
        time.sleep(0.2)
    stack.stop()
    raise RuntimeError(f"stack did not come up:\n{(tmp / 'up.log').read_text()}")


def stack_state(stack: Stack) -> dict[str, Any]:
    return json.loads((stack.data_dir / "stack.json").read_text())


def pid_of(stack: Stack, part: str) -> int:
    return int(stack_state(stack)["pids"][part])


def status(stack: Stack, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    r = subprocess.run(
        [LLMPROXY, "status", "--data-dir", str(stack.data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
    )
    return r.returncode, json.loads(r.stdout)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def up_output(stack: Stack) -> str:
    p = stack.data_dir.parent / "up.log"
    return p.read_text(errors="replace") if p.exists() else ""


def kill(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    os.kill(pid, sig)


def new_session(label: str) -> str:
    return f"rel-{label}-{uuid.uuid4().hex[:8]}"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def python() -> str:
    return sys.executable
