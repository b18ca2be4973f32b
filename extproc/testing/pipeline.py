"""Driving exchanges through the real pipeline without gRPC or Envoy: for stage and pipeline tests.

``Driver(ctx)`` runs the default stages (or the ones given); ``await driver.send(ex, phase, event)``
is what the gRPC server does for one message. ``ListRecorder`` keeps the records the record stage
hands over. Headers and bodies are built with :func:`request_headers` and :func:`json_chunk`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from intelligence.records import ExchangeRecord

from ..context import Context
from ..exchange import Exchange
from ..pipeline import Pipeline
from ..settings import SidecarSettings
from ..stages import default_stages
from ..wire import BodyChunk, Headers, Immediate, Phase, Reply


class ListRecorder:
    """A Recorder that keeps what it is given (the real one writes to Postgres)."""

    def __init__(self) -> None:
        self.records: list[ExchangeRecord] = []

    def submit(self, record: ExchangeRecord) -> None:
        self.records.append(record)


def context(recorder: ListRecorder | None = None, **settings: Any) -> Context:
    return Context(settings=SidecarSettings(**settings), recorder=recorder or ListRecorder())


def request_headers(path: str, *, method: str = "POST", eos: bool = False, peer: str = "10.1.2.3:5555", **extra: str) -> Headers:
    headers = {":method": method, ":path": path, "x-request-id": "rid-1", "content-type": "application/json", **extra}
    return Headers(headers, eos, {"source.address": peer})


def json_chunk(doc: Any, end: bool = True) -> BodyChunk:
    return BodyChunk(doc if isinstance(doc, bytes) else json.dumps(doc).encode(), end)


def response_headers(status: int = 200, content_type: str = "application/json", eos: bool = False) -> Headers:
    return Headers({":status": str(status), "content-type": content_type}, eos)


@dataclass
class Round:
    """The replies of one exchange driven end to end (None where a phase never ran)."""

    ex: Exchange
    request_headers: Reply | Immediate | None = None
    request_body: Reply | Immediate | None = None
    response_headers: Reply | Immediate | None = None
    response_body: list[Reply | Immediate] = field(default_factory=list)

    @property
    def answer(self) -> Immediate | None:
        for reply in (self.request_headers, self.request_body, self.response_headers, *self.response_body):
            if isinstance(reply, Immediate):
                return reply
        return None


class Driver:
    def __init__(self, ctx: Context, stages: Sequence[Any] | None = None) -> None:
        self.ctx = ctx
        self.pipeline = Pipeline(stages if stages is not None else default_stages(ctx))

    def exchange(self) -> Exchange:
        return Exchange(self.ctx.settings)

    async def send(self, ex: Exchange, phase: Phase, event: Headers | BodyChunk | None) -> Reply | Immediate:
        return await self.pipeline.process(ex, phase, event)

    async def round(
        self,
        headers: Headers,
        body: BodyChunk | None = None,
        *,
        response: Headers | None = None,
        chunks: Sequence[bytes] = (),
    ) -> Round:
        """One exchange: request headers, body, then (unless answered) response headers and chunks."""
        ex = self.exchange()
        r = Round(ex)
        r.request_headers = await self.send(ex, Phase.REQUEST_HEADERS, headers)
        if isinstance(r.request_headers, Immediate):
            return r
        if body is not None:
            r.request_body = await self.send(ex, Phase.REQUEST_BODY, body)
            if isinstance(r.request_body, Immediate):
                return r
        if response is None:
            return r
        r.response_headers = await self.send(ex, Phase.RESPONSE_HEADERS, response)
        if isinstance(r.response_headers, Immediate) or response.end_of_stream:
            return r
        for i, data in enumerate(chunks or (b"",)):
            reply = await self.send(ex, Phase.RESPONSE_BODY, BodyChunk(data, i == max(len(chunks), 1) - 1))
            r.response_body.append(reply)
            if isinstance(reply, Immediate):
                break
        return r

    async def abort(self, ex: Exchange, reason: str = "stream cut") -> None:
        await self.pipeline.abort(ex, reason)


__all__ = ["Bound", "Driver", "ListRecorder", "Round", "context", "json_chunk", "request_headers", "response_headers"]


class Bound:
    """One exchange bound to a pipeline, for tests that drive phases by hand:
    ``await bound.handle(phase, event)``; ``bound.ex`` is the exchange's state."""

    def __init__(self, ctx: Context, stages: Sequence[Any] | None = None) -> None:
        self.driver = Driver(ctx, stages)
        self.ex = self.driver.exchange()

    async def handle(self, phase: Phase, event: Headers | BodyChunk | None) -> Reply | Immediate:
        return await self.driver.send(self.ex, phase, event)

    async def abort(self, reason: str = "stream cut") -> None:
        await self.driver.abort(self.ex, reason)

    @property
    def flags(self) -> dict[str, Any]:
        """What the record's ``flags`` would say now."""
        return self.ex.notes.flags(self.ex.request)

    @property
    def provider(self) -> str | None:
        return self.ex.request.provider
