"""FakeClaude: an in-process Anthropic Messages server, good enough for the real ``anthropic`` SDK.

Tests and simulations point a ClaudeClient at ``fake.base_url``. A responder decides each answer:
a dict is the tool input of a normal tool_use answer; a FakeFault scripts a failure (or overrides
usage/latency of a normal answer). The responder may be a callable (sync or async) taking
``{"tool_name", "system", "prompt", "body", "headers"}``, or a list/iterator whose items are used
for successive requests (each item a dict, a FakeFault or such a callable).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Union

from aiohttp import web

from .settings import ClaudeSettings

FAULT_KINDS = ("ok", "timeout", "rate_limited", "overloaded", "server_error", "malformed")

Answer = Union[dict, "FakeFault"]
Responder = Callable[[dict], Answer | Awaitable[Answer]]


@dataclass(frozen=True)
class FakeFault:
    """How the fake misbehaves on one request.

    kind:
      ok            a normal answer with ``input`` (default {}), after ``delay_s``, with ``usage`` merged in
      timeout       sleeps ``delay_s`` (default 30 s, longer than any test's client timeout), then answers
      rate_limited  429 rate_limit_error with a retry-after header of ``retry_after`` seconds
      overloaded    529 overloaded_error
      server_error  500 api_error
      malformed     a text-only answer, or when ``input`` is given a tool_use with that (invalid) input
    """

    kind: str = "ok"
    input: dict | None = None
    usage: dict | None = None
    delay_s: float | None = None
    retry_after: float | None = 0.0
    text: str = "I cannot answer that with the tool."

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"FakeFault kind must be one of {FAULT_KINDS}, got {self.kind!r}")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(block.get("text", "") for block in content if isinstance(block, dict))
    return ""


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class FakeClaude:
    def __init__(self, responder: Responder | Iterable[Any], *, host: str = "127.0.0.1") -> None:
        self._responder: Responder | None = None
        self._script: Iterator[Any] | None = None
        if callable(responder) and not isinstance(responder, (list, tuple)):
            self._responder = responder
        else:
            self._script = iter(responder)
        self._host = host
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeClaude is not started")
        return f"http://{self._host}:{self._port}"

    def client_settings(self, **overrides: Any) -> ClaudeSettings:
        """Settings of a ClaudeClient talking to this fake, with test-sized waits unless overridden."""
        fields: dict[str, Any] = dict(
            api_key="test",
            base_url=self.base_url,
            mode="anthropic",
            timeout_s=2.0,
            max_retries=2,
            backoff_base_s=0.01,
            backoff_max_s=0.05,
        )
        fields.update(overrides)
        return ClaudeSettings(**fields)

    async def start(self) -> FakeClaude:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        # A short shutdown: "timeout" faults leave handlers sleeping that stop() must not wait for.
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, 0)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self._port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeClaude:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _answer_for(self, request: dict) -> Answer:
        item: Any
        if self._responder is not None:
            item = self._responder
        else:
            assert self._script is not None
            item = next(self._script, None)
            if item is None:
                return FakeFault(kind="server_error", text="FakeClaude script exhausted")
        if callable(item):
            item = item(request)
            if inspect.isawaitable(item):
                item = await item
        if not isinstance(item, (dict, FakeFault)):
            raise TypeError(f"FakeClaude responder must give a dict or FakeFault, got {type(item).__name__}")
        return item

    async def _messages(self, http: web.Request) -> web.Response:
        body = await http.json()
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {}
        tool_name = choice.get("name") or (tools[0]["name"] if tools else "")
        messages = body.get("messages") or []
        user = [m for m in messages if m.get("role") == "user"]
        request = {
            "tool_name": tool_name,
            "system": _text_of(body.get("system", "")),
            "prompt": _text_of(user[-1]["content"]) if user else "",
            "body": body,
            "headers": {k.lower(): v for k, v in http.headers.items()},
        }
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            answer = await self._answer_for(request)
            return await self._respond(body, tool_name, answer)
        finally:
            self.in_flight -= 1

    async def _respond(self, body: dict, tool_name: str, answer: Answer) -> web.Response:
        fault = answer if isinstance(answer, FakeFault) else FakeFault(kind="ok", input=answer)
        delay = fault.delay_s if fault.delay_s is not None else (30.0 if fault.kind == "timeout" else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if fault.kind == "rate_limited":
            headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return _error(429, "rate_limit_error", "Number of request tokens has exceeded your rate limit", headers)
        if fault.kind == "overloaded":
            return _error(529, "overloaded_error", "Overloaded")
        if fault.kind == "server_error":
            return _error(500, "api_error", fault.text if "exhausted" in fault.text else "Internal server error")
        if fault.kind == "malformed" and fault.input is None:
            content = [{"type": "text", "text": fault.text}]
            stop_reason = "end_turn"
        else:
            content = [
                {
                    "type": "tool_use",
                    "id": "toolu_" + uuid.uuid4().hex[:24],
                    "name": tool_name,
                    "input": fault.input if fault.input is not None else {},
                }
            ]
            stop_reason = "tool_use"
        usage = {
            "input_tokens": _estimate_tokens(json.dumps(body.get("messages", [])) + _text_of(body.get("system"))),
            "output_tokens": _estimate_tokens(json.dumps(content)),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        usage.update(fault.usage or {})
        message = {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        return web.json_response(message, headers={"request-id": "req_" + uuid.uuid4().hex[:16]})


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status, headers=headers or {})


def script(*answers: Any) -> Iterator[Any]:
    """A responder that gives ``answers`` in order, then repeats the last one forever."""
    if not answers:
        raise ValueError("script needs at least one answer")
    return itertools.chain(answers[:-1], itertools.repeat(answers[-1]))
