"""The stage runner: every phase of an exchange through one ordered list of stages.

A stage owns one concern and implements only the phases it cares about, each an ``async`` method
taking the :class:`~extproc.exchange.Exchange`:

- ``request_headers(ex)``: the request line and headers are in (``ex.request``).
- ``request_body(ex)``: the whole request is in (buffered body, or no body at all). Runs once.
- ``response_headers(ex)``: the upstream's (or Envoy's own) response headers are in.
- ``response_chunk(ex, chunk)``: a piece of the response body; rewrite ``chunk.data`` to change what
  the client gets. Only the guard may change ``chunk.upstream`` (the log never keeps a masked value).
- ``response_complete(ex)``: once per exchange, when it ends for any reason (last chunk, an answer of
  the gateway's own, a cut stream). Cannot answer anymore.

Every phase passes the stages in the list's order, the response too. A stage that returns an
:class:`~extproc.wire.Immediate` answers the client now: later stages do not run, and the exchange
completes. Each stage declares its failure mode. ``closed``: an exception refuses the exchange with a
5xx in the calling API's error format (a request is never forwarded unscreened). ``open``: the
exception is logged and counted and the exchange goes on as if the stage had done nothing. The
runner applies the mode, logs once, counts, and notes the failure in the record.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from .errors import gateway_error
from .exchange import Exchange
from .logjson import set_request_id
from .overload import request_age_ms
from .wire import BodyChunk, Headers, Immediate, Phase, Reply

log = logging.getLogger("llmproxy.pipeline")


class Failure(str, enum.Enum):
    CLOSED = "closed"  # an exception refuses the exchange (5xx in the API's format)
    OPEN = "open"  # an exception is logged and counted; the exchange goes on without this stage


@dataclass(slots=True)
class Chunk:
    """One piece of a response body on its way to the client."""

    data: bytes  # what goes on to the client: stages rewrite it
    upstream: bytes  # what the provider sent, as the log may keep it (the guard masks it)
    end_of_stream: bool


class Stage(Protocol):
    """One concern of the sidecar. Implement any of the phase methods (see the module docstring)."""

    name: ClassVar[str]
    failure: ClassVar[Failure]


PhaseHook = Callable[..., Awaitable[Immediate | None]]
_REQUEST_PHASES = ("request_headers", "request_body")
STATS_KEYS = ("exchanges", "aborted", "answered", "stage_errors")


class Pipeline:
    """Runs the stages; ``on_stage_error(stage, phase, failure)`` is an optional metrics hook."""

    def __init__(
        self,
        stages: Sequence[Any],
        *,
        on_stage_error: Callable[[str, str, Failure], None] | None = None,
        on_phase: Callable[[str, float], None] | None = None,
    ) -> None:
        self.stages = tuple(stages)
        for stage in self.stages:
            if not isinstance(getattr(stage, "failure", None), Failure) or not getattr(stage, "name", ""):
                raise TypeError(f"{type(stage).__name__} must declare `name` and `failure` (Failure.CLOSED or OPEN)")
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        phases = (*_REQUEST_PHASES, "response_headers", "response_chunk", "response_complete")
        self._hooks: dict[str, tuple[tuple[Any, PhaseHook], ...]] = {
            phase: tuple((s, getattr(s, phase)) for s in self.stages if hasattr(s, phase)) for phase in phases
        }
        self.on_stage_error = on_stage_error
        self.on_phase = on_phase  # (phase, seconds of sidecar time on that message): a metrics hook
        self.stats = dict.fromkeys(STATS_KEYS, 0)

    # ------------------------------------------------------------------ phases
    async def process(self, ex: Exchange, phase: Phase, event: Headers | BodyChunk | None) -> Reply | Immediate:
        """Envoy's message for ``phase`` in; the reply for Envoy out."""
        if self.on_phase is None:
            return await self._process(ex, phase, event)
        t0 = time.perf_counter()
        try:
            return await self._process(ex, phase, event)
        finally:
            self.on_phase(phase.value, time.perf_counter() - t0)

    async def _process(self, ex: Exchange, phase: Phase, event: Headers | BodyChunk | None) -> Reply | Immediate:
        ex.reply = Reply()
        if phase is Phase.REQUEST_HEADERS:
            assert isinstance(event, Headers)
            begin_request(ex, event)
            answer = await self._run(ex, "request_headers")
            if answer is None and event.end_of_stream:  # no body will follow: the request is complete
                ex.request.complete = True
                answer = await self._run(ex, "request_body")
                ex.render_request()
        elif phase is Phase.REQUEST_BODY:
            assert isinstance(event, BodyChunk)
            ex.request.body += event.data
            if not event.end_of_stream or ex.request.complete:
                return ex.reply
            ex.request.complete = True
            answer = await self._run(ex, "request_body")
            ex.render_request()
        elif phase is Phase.RESPONSE_HEADERS:
            assert isinstance(event, Headers)
            begin_response(ex, event)
            answer = await self._run(ex, "response_headers")
            if answer is None and event.end_of_stream:
                await self.complete(ex)
        elif phase is Phase.RESPONSE_BODY:
            assert isinstance(event, BodyChunk)
            if ex.response.ttft_ms is None and event.data:
                ex.response.ttft_ms = (time.monotonic() - ex.t0) * 1000
            chunk = Chunk(event.data, event.data, event.end_of_stream)
            answer = await self._run(ex, "response_chunk", chunk)
            if answer is None:
                if chunk.data != event.data:
                    ex.reply.body = chunk.data
                if event.end_of_stream:
                    await self.complete(ex)
        else:  # trailers: nothing to do
            return ex.reply
        if answer is not None:
            self.stats["answered"] += 1
            ex.answered(answer)
            await self.complete(ex)
            return answer
        return ex.reply

    async def complete(self, ex: Exchange) -> None:
        """The exchange ended (for any reason): ``response_complete`` of every stage, once."""
        if ex.finished:
            return
        ex.finished = True
        self.stats["exchanges"] += 1
        await self._run(ex, "response_complete")

    async def abort(self, ex: Exchange, reason: str) -> None:
        """The gRPC stream ended before the exchange did (client gone, Envoy reset, sidecar stopping)."""
        if not ex.finished and ex.request_id:
            self.stats["aborted"] += 1
            ex.error = ex.error or reason
            await self.complete(ex)

    # ------------------------------------------------------------------ runner
    async def _run(self, ex: Exchange, phase: str, *args: Any) -> Immediate | None:
        for stage, hook in self._hooks[phase]:
            try:
                answer = await hook(ex, *args)
            except Exception as exc:  # noqa: BLE001 - the stage's declared failure mode decides
                answer = self._failed(stage, phase, ex, exc)
            if answer is not None:
                return answer
        return None

    def _failed(self, stage: Any, phase: str, ex: Exchange, exc: Exception) -> Immediate | None:
        self.stats["stage_errors"] += 1
        mode: Failure = stage.failure
        log.error(
            "request %s: stage %s failed in %s (%s: %s); failing %s",
            ex.request_id, stage.name, phase, type(exc).__name__, exc, mode.value, exc_info=exc,
        )  # fmt: skip
        ex.notes.stage_errors.append(f"{stage.name}/{phase}: {type(exc).__name__}")
        ex.error = ex.error or f"sidecar error in {stage.name} ({phase}): {type(exc).__name__}"
        if self.on_stage_error is not None:
            self.on_stage_error(stage.name, phase, mode)
        if mode is Failure.OPEN or phase == "response_complete":
            return None
        if phase in _REQUEST_PHASES:
            return gateway_error(
                500,
                f"llmproxy: the gateway failed while checking this request (stage {stage.name}); it was not forwarded",
                api=ex.api,
                code="gateway_stage_error",
            )
        return gateway_error(
            502,
            f"llmproxy: the gateway failed while checking the response (stage {stage.name}); it was withheld",
            api=ex.api,
            code="gateway_stage_error",
        )


def begin_request(ex: Exchange, ev: Headers) -> None:
    """The typed request line from Envoy's headers (what every stage may read from the start)."""
    h = ev.headers
    ex.request.headers = h
    ex.request.method = h.get(":method", "")
    ex.request.path = h.get(":path", "")
    # Envoy is the edge and mints x-request-id itself (envoy.yaml: a client's own is not kept).
    ex.request_id = h.get("x-request-id") or str(uuid.uuid4())
    ex.client_addr = _client_addr(ev)
    ex.request.waited_ms = request_age_ms(ev.attributes.get("request.time"))
    set_request_id(ex.request_id)  # every log line of this stream's task names the request


def begin_response(ex: Exchange, ev: Headers) -> None:
    h = ev.headers
    resp = ex.response
    try:
        resp.status = int(h.get(":status", "0"))
    except ValueError:
        resp.status = None
    resp.content_type = h.get("content-type", "")
    resp.has_body = not ev.end_of_stream
    # SSE and NDJSON go chunk by chunk (for model calls the adapters know how to read)
    resp.streamed = ex.request.endpoint is not None and (
        "text/event-stream" in resp.content_type or "ndjson" in resp.content_type
    )
    if "x-envoy-upstream-service-time" in h:
        try:
            resp.upstream_ms = float(h["x-envoy-upstream-service-time"])
        except ValueError:
            pass
    # Clients refer to an exchange by this id (feedback, support): on every response.
    ex.reply.set_headers["x-llmproxy-request-id"] = ex.request_id


def _client_addr(ev: Headers) -> str | None:
    # Envoy's view of the peer (the `source.address` attribute); never a client-sent header.
    addr = ev.attributes.get("source.address", "")
    if not addr:
        return None
    if addr.count(":") == 1:  # ipv4:port
        return addr.split(":")[0]
    if addr.startswith("[") and "]:" in addr:
        return addr[1 : addr.index("]")]
    return addr


__all__ = ["Chunk", "Failure", "Pipeline", "Stage", "begin_request", "begin_response"]
