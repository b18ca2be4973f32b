"""Local fake LLM providers (OpenAI-compatible, OpenRouter, Anthropic, Ollama) on one port.

They stand in for paid outside APIs in tests and in ``llmproxy bench``: the
official SDKs talk to them with ``base_url=...`` exactly as to the real services.
Replies are deterministic ("echo: <last user text>", or a tool call when asked)
and request headers ``x-fake-*`` switch on errors, delays, odd chunking and
dropped streams (see docs in :mod:`extproc.testing.switches` and the README).
Two more faults are handled here: ``x-fake-no-end-event: 1`` closes a stream cleanly
but without its end event (``data: [DONE]``, ``message_stop``, ``response.completed``,
Ollama's ``"done": true`` line), as a provider that dies between events does; and
``x-fake-reset: N`` resets the connection before sending a single byte, for the first
N requests of its ``x-fake-key`` (a provider's load balancer dropping connections).
``x-fake-reply-words: N`` replies with N words (``w0 w1 ...``; a long stream without a huge header).

Run standalone: ``python -m extproc.testing.fakes --port N`` prints the port and
serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import itertools
import json
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import anthropic_fake, ollama_fake, openai_fake
from .switches import Scripted, Switches
from .wire import Dialect, Exchange, Reply, error_reply, send

Builder = Callable[[Exchange], Reply]

# Routes: (method, path, dialect, builder). OpenRouter serves the OpenAI API under /api/v1.
_OPENAI_ROUTES: list[tuple[str, str, Builder]] = [
    ("POST", "/chat/completions", openai_fake.chat_completion),
    ("POST", "/responses", openai_fake.response),
    ("POST", "/embeddings", openai_fake.embeddings),
    ("GET", "/models", openai_fake.models),
]
ROUTES: list[tuple[str, str, Dialect, Builder]] = [
    *((method, prefix + path, "openai", builder) for prefix in ("/v1", "/api/v1") for method, path, builder in _OPENAI_ROUTES),
    ("POST", "/v1/messages", "anthropic", anthropic_fake.message),
    ("POST", "/api/chat", "ollama", ollama_fake.chat),
    ("POST", "/api/generate", "ollama", ollama_fake.generate),
    ("GET", "/api/tags", "ollama", ollama_fake.tags),
]

SHUTDOWN_TIMEOUT_S = 0.5


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any  # parsed body, or None when empty or not JSON


class FakeProvider:
    """All fake providers behind one aiohttp server.

    ``requests`` lists every request received (when ``record``); ``script()``
    queues canned replies that the next requests consume in order.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, record: bool = True) -> None:
        self.host = host
        self.port = port
        self.record = record
        self.requests: list[ReceivedRequest] = []
        self._script: collections.deque[Scripted] = collections.deque()
        self._failures_by_key: dict[str, int] = {}
        self._seq = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- control ----------------------------------------------------------------

    def clear(self) -> None:
        """Forget recorded requests, queued scripts and fail-times counters."""
        self.requests.clear()
        self._script.clear()
        self._failures_by_key.clear()

    def script(self, *responses: Scripted) -> None:
        self._script.extend(responses)

    # --- lifecycle ----------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for method, path, dialect, builder in ROUTES:
            app.router.add_route(method, path, self._handler(dialect, builder))
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def start(self) -> None:
        # No access log: the bench drives hundreds of requests a second at this.
        runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=1024)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def start_in_thread(self) -> FakeProvider:
        """Serve from a daemon thread with its own loop (sync tests, CLI)."""
        if self._thread is not None:
            raise RuntimeError("fake provider already running in a thread")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        thread = threading.Thread(target=run, name=f"fake-provider-{id(self):x}", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._loop, self._thread = loop, thread
        return self

    def stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    async def __aenter__(self) -> FakeProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __enter__(self) -> FakeProvider:
        return self.start_in_thread()

    def __exit__(self, *exc_info: object) -> None:
        self.stop_thread()

    # --- request handling -------------------------------------------------------------

    def _handler(self, dialect: Dialect, builder: Builder) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, dialect, builder)

        return handle

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        await self._receive(request)
        switches = Switches()
        reply = error_reply("openai", 404, f"fake provider: no route for {request.method} {request.path}", switches)
        return await send(request, reply, switches)

    async def _receive(self, request: web.Request) -> tuple[dict[str, str], Any, bool]:
        """Read and (when recording) store the request; returns headers, parsed JSON, whether it parsed."""
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        doc: Any = None
        parsed = False
        if body:
            try:
                doc = json.loads(body)
                parsed = True
            except ValueError:
                pass
        if self.record:
            self.requests.append(
                ReceivedRequest(
                    method=request.method,
                    path=request.path,
                    query=dict(request.query),
                    headers=headers,
                    body=body,
                    json=doc,
                )
            )
        return headers, doc, parsed or not body

    async def _serve(self, request: web.Request, dialect: Dialect, builder: Builder) -> web.StreamResponse:
        headers, doc, well_formed = await self._receive(request)
        resets = headers.get("x-fake-reset", "")
        if resets.isdigit() and self._count_failure("reset:" + headers.get("x-fake-key", ""), int(resets)):
            if request.transport is not None:
                request.transport.abort()  # no status line, no byte: the client sees a reset
            raise web.HTTPInternalServerError()  # never written: the connection is gone
        switches = Switches.from_headers(headers)
        words = headers.get("x-fake-reply-words", "")
        if words.isdigit():
            switches = dataclasses.replace(switches, reply=" ".join(f"w{i}" for i in range(min(int(words), 200_000))))
        scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            switches = switches.overlay(scripted)
        if switches.delay_ms > 0:
            await asyncio.sleep(switches.delay_ms / 1000)

        if switches.status >= 400 and self._should_fail(switches):
            if scripted is not None and scripted.raw_body is not None:
                return await send(request, self._scripted_reply(scripted, switches.status), switches)
            message = f"fake provider error (status {switches.status})"
            reply = error_reply(dialect, switches.status, message, switches)
            reply.headers.update(scripted.headers if scripted else {})
            return await send(request, reply, switches)
        if scripted is not None and scripted.raw_body is not None:
            return await send(
                request, self._scripted_reply(scripted, 200 if switches.status >= 400 else switches.status), switches
            )
        if not well_formed or (request.method == "POST" and not isinstance(doc, dict)):
            reply = error_reply(dialect, 400, "fake provider: request body is not a JSON object", switches)
            return await send(request, reply, switches)

        seq = next(self._seq)
        reply = builder(Exchange(doc=doc if isinstance(doc, dict) else {}, switches=switches, seq=seq))
        reply.headers["x-request-id"] = f"req_fake{seq:06d}"
        if scripted is not None:
            reply.headers.update(scripted.headers)
        if reply.streamed and headers.get("x-fake-no-end-event", "") == "1":
            reply.pieces = [p for p in reply.pieces if not _is_end_event(p)]
        return await send(request, reply, switches)

    def _should_fail(self, switches: Switches) -> bool:
        if switches.fail_times is None:
            return True
        return self._count_failure(switches.fail_key, switches.fail_times)

    def _count_failure(self, key: str, times: int) -> bool:
        """True for the first ``times`` calls with ``key`` (then False): failures that recover."""
        failed = self._failures_by_key.get(key, 0)
        if failed >= times:
            return False
        self._failures_by_key[key] = failed + 1
        return True

    @staticmethod
    def _scripted_reply(scripted: Scripted, status: int) -> Reply:
        body = scripted.raw_body or b""
        content_type = scripted.content_type or "application/json"
        streamed = content_type.startswith(("text/event-stream", "application/x-ndjson"))
        return Reply(pieces=[body], content_type=content_type, status=status, streamed=streamed, headers=dict(scripted.headers))


_END_MARKERS = (b"data: [DONE]", b'"type":"message_stop"', b'"type":"response.completed"')


def _is_end_event(piece: bytes) -> bool:
    """The piece that ends a stream of its API (SSE end events, Ollama's final NDJSON line)."""
    if any(marker in piece for marker in _END_MARKERS):
        return True
    if piece.startswith(b"{") and b'"done":true' in piece:
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m extproc.testing.fakes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--record", action="store_true", help="keep every request in memory (off: nobody reads them)")
    args = parser.parse_args(argv)

    async def serve() -> None:
        provider = FakeProvider(host=args.host, port=args.port, record=args.record)
        await provider.start()
        print(provider.port, flush=True)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        try:
            await stopping.wait()
        finally:
            await provider.stop()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
