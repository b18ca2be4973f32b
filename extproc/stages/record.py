"""Record: exactly one ExchangeRecord per exchange, handed to the recorder without blocking.

Also when the gateway answered itself (a refusal, an error) or the stream was cut (client gone,
Envoy reset): the record carries the reason. What the log keeps is masked: the request as the guard
redacted it, or with every secret it found masked when the policy forwarded or refused it anyway,
and a request the guard never read (not JSON, not a model call, refused before its body was read)
goes through the secret masker before it is stored. Fails open: a record that cannot be built is
logged as an error, never a reason to fail the client.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

from intelligence.records import Body, ExchangeRecord, Usage
from intelligence.store.sanitize import redact_url, redact_urls_in_text

from .. import metrics, tracing
from ..context import Context
from ..exchange import Exchange, loads_for_log
from ..pipeline import Chunk, Failure
from ..providers.base import Folded
from ..providers.toolschema import invalid_calls

log = logging.getLogger("llmproxy.record")

# Headers that carry credentials: never logged, never stored.
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "proxy-authorization", "cookie", "set-cookie", "api-key"})


class RecordStage:
    name: ClassVar[str] = "record"
    failure: ClassVar[Failure] = Failure.OPEN

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.limit = ctx.settings.log_body_max

    async def response_chunk(self, ex: Exchange, chunk: Chunk) -> None:
        ex.keep(ex.response.upstream_log, chunk.upstream)
        ex.keep(ex.response.client_log, chunk.data)  # placeholders, not the restored values
        if chunk.end_of_stream:
            ex.notes.response_ended = True

    async def response_complete(self, ex: Exchange) -> None:
        if not ex.record or not ex.request_id:
            return
        record = self.build(ex)
        self.ctx.recorder.submit(record)
        metrics.observe_exchange(record)  # never raises
        tracing.record_exchange(record, ex.request.headers.get("traceparent"), ex.request.headers.get("tracestate"))
        if ex.auth.key_id is not None and self.ctx.meter is not None:
            self.ctx.meter.record(ex.auth.key_id, record.usage.total_tokens or 0)

    # ------------------------------------------------------------------ building
    def build(self, ex: Exchange) -> ExchangeRecord:
        req, resp = ex.request, ex.response
        limit = self.limit
        # Parsed once: what the client got (the fold reads it too) and what the provider sent.
        client_doc = loads_for_log(resp.client_log) if resp.client_log and not resp.streamed and not resp.truncated else None
        upstream_doc = client_doc if resp.upstream_log == resp.client_log else None
        folded = self._fold(ex, client_doc)
        ex.notes.incomplete = ex.notes.incomplete or incomplete(ex, folded)
        view = req.view
        sent, forwarded = self._requests_for_log(ex)
        if ex.answer is not None:
            response_client = _body(ex.answer.body, limit)
        elif folded is not None and resp.streamed:
            response_client = Body(json=folded.message, size=len(resp.client_log), truncated=resp.truncated)
        elif resp.status is not None:
            response_client = _body(bytes(resp.client_log), limit, resp.truncated, doc=client_doc)
        else:
            response_client = None
        error = ex.error or (folded.error if folded is not None else None)
        if error is None and resp.status is not None and resp.status >= 400:
            error = f"HTTP {resp.status}"
        codec = ex.tool_codec
        aliases = dict(codec.mapping) if codec is not None else {}
        model = view.model if view is not None else None
        if model is None and folded is not None and isinstance(folded.message, dict):
            model = folded.message.get("model")
        return ExchangeRecord(
            request_id=ex.request_id,
            started_at=ex.started_at,
            finished_at=datetime.now(UTC),
            method=req.method,
            path=redact_url(req.path),  # a legacy target_url can carry credentials in its query
            session_id=ex.session() if req.complete else ex.session_id,
            client_key_fp=ex.client,
            client_addr=ex.client_addr,
            provider=req.provider,
            model=model,
            api=ex.api,
            route=req.route.value,
            status=resp.status,
            streamed=resp.streamed,
            latency_ms=(time.monotonic() - ex.t0) * 1000,
            ttft_ms=resp.ttft_ms,
            upstream_ms=resp.upstream_ms,
            usage=folded.usage if folded is not None else Usage(),
            request_client=sent,
            request_forwarded=forwarded,
            response_upstream=_body(bytes(resp.upstream_log), limit, resp.truncated, doc=upstream_doc) if resp.upstream_log else None,
            response_client=response_client,
            tool_names=tuple(view.tool_names) if view is not None else (),
            prompt_system=view.system if view is not None else None,
            prompt_user=view.last_user if view is not None else None,
            tool_args_invalid=invalid_calls(folded.tool_calls, ex.tool_schemas) if folded is not None and folded.tool_calls else 0,
            tool_aliases=aliases,
            finish_reason=folded.finish_reason if folded is not None else None,
            error=redact_urls_in_text(error) if error else error,
            request_headers=safe_headers(req.headers),
            flags=ex.notes.flags(req),
            response_text=folded.text if folded is not None and folded.text else None,
            tool_calls=_tool_calls(folded, aliases),
        )  # fmt: skip

    def _requests_for_log(self, ex: Exchange) -> tuple[Body | None, Body | None]:
        """(the client's request, the forwarded one) as the log may keep them."""
        req = ex.request
        if not req.body:
            return None, None
        size = len(req.body)
        screened = ex.screen is not None and ex.screen.secrets_scanned
        if req.logged is not None:  # redacted or masked by the guard
            sent = _body(req.logged, self.limit, size=size)
        elif not screened:  # never read by the guard: through the secret masker first
            sent = _body(self._mask(bytes(req.body[: self.limit])), self.limit, size=size)
        elif not req.changed and req.doc is not None and size <= self.limit:
            sent = Body(json=req.doc, size=size)  # the parsed request, unchanged: no second parse
        else:
            sent = _body(bytes(req.body), self.limit, size=size)
        if req.forwarded is None:
            return sent, sent
        if req.logged is not None or not screened:
            return sent, _body(req.forwarded, self.limit)
        return sent, Body(json=req.doc, size=len(req.forwarded)) if len(req.forwarded) <= self.limit else _body(
            req.forwarded, self.limit
        )

    def _mask(self, raw: bytes) -> bytes:
        """Secrets masked in a body the guard did not read (its whole text, up to the log cap)."""
        from intelligence.detectors.secrets import redact_secrets, shared_secret_detector

        guard = self.ctx.guard
        detector = guard.secrets if guard is not None else shared_secret_detector()
        text = raw.decode("utf-8", "replace")
        masked = redact_secrets(text, detector)
        return raw if masked == text else masked.encode()

    def _fold(self, ex: Exchange, client_doc: Any) -> Folded | None:
        resp, endpoint = ex.response, ex.request.endpoint
        if resp.folded is not None or endpoint is None:
            return resp.folded
        try:
            if resp.decoder is not None:
                resp.folded = resp.decoder.result()
            elif ex.answer is None:
                doc = client_doc if client_doc is not None else loads_for_log(resp.client_log)
                if isinstance(doc, dict):
                    resp.folded = endpoint.fold(doc)
        except Exception:
            log.exception("request %s: folding the response failed", ex.request_id)
        return resp.folded


def incomplete(ex: Exchange, folded: Folded | None) -> str | None:
    """Why the exchange did not complete, for ``flags.incomplete``; None when it did.

    "aborted": the exchange ended before any response (client gone, stream reset, sidecar stopping);
    "cut": the response started but its body never reached its end (upstream reset mid-stream, the
    route's idle timeout, the client leaving); "no_end_event": the stream closed cleanly without its
    API's end event ([DONE], message_stop, response.completed, Ollama's done line).
    An answer of the gateway's own is complete.
    """
    if ex.answer is not None:
        return None
    resp = ex.response
    if resp.status is None:
        return "aborted"
    if resp.has_body and not ex.notes.response_ended:
        return "cut"
    if resp.streamed and folded is not None and folded.unterminated and resp.status < 400:
        return "no_end_event"
    return None


def safe_headers(headers: dict[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in headers.items()
        if k not in _SECRET_HEADERS and not any(s in k for s in ("token", "secret", "key")) and not k.startswith(":")
    }


def _tool_calls(folded: Folded | None, aliases: dict[str, str]) -> tuple[dict[str, Any], ...]:
    if folded is None or not folded.tool_calls:
        return ()
    upstream_of = {original: alias for alias, original in aliases.items()}
    return tuple(
        {"name": c.name, "upstream_name": upstream_of.get(c.name, c.name), "arguments": c.arguments} for c in folded.tool_calls
    )


def _body(data: bytes | None, limit: int, truncated: bool = False, size: int | None = None, doc: Any = None) -> Body | None:
    """``data`` as the log stores it: JSON when it parses (``doc``: already parsed), else text, cut at
    ``limit``. ``size`` is the length on the wire when ``data`` is a (masked, cut) rendering of it."""
    if data is None:
        return None
    size = len(data) if size is None else max(size, len(data))
    if size <= limit and len(data) <= limit:
        doc = doc if doc is not None else loads_for_log(data)
        if doc is not None:
            return Body(json=doc, size=size, truncated=truncated)
    text = data[:limit].decode("utf-8", "replace")
    return Body(text=text, size=size, truncated=truncated or size > limit)
