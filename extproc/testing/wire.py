"""Putting a fake reply on the wire: JSON, SSE or NDJSON, with the transport switches.

Builders return a :class:`Reply` (already-encoded pieces); :func:`send` applies
gzip, N-byte writes, delays between writes and the mid-stream connection drop.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from .switches import Switches

Dialect = Literal["openai", "anthropic", "ollama"]

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson"


@dataclass(frozen=True, slots=True)
class Exchange:
    """What a builder needs to know about one request."""

    doc: dict[str, Any]
    switches: Switches
    seq: int


@dataclass(slots=True)
class Reply:
    pieces: list[bytes]
    content_type: str = JSON_TYPE
    status: int = 200
    streamed: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def dumps(doc: Any) -> bytes:
    # Raw UTF-8 (not \u escapes), as the real APIs send it: multi-byte characters
    # then really can be split across writes.
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def json_reply(doc: Any, status: int = 200) -> Reply:
    return Reply(pieces=[dumps(doc)], status=status)


def sse_data(doc: Any) -> bytes:
    return b"data: " + dumps(doc) + b"\n\n"


def sse_event(doc: dict[str, Any]) -> bytes:
    return b"event: " + doc["type"].encode() + b"\ndata: " + dumps(doc) + b"\n\n"


def ndjson_line(doc: Any) -> bytes:
    return dumps(doc) + b"\n"


_OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    409: ("invalid_request_error", None),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_reply(dialect: Dialect, status: int, message: str, switches: Switches) -> Reply:
    """An error document in the provider's own format."""
    if dialect == "anthropic":
        kind = _ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
        doc: Any = {"type": "error", "error": {"type": kind, "message": message}}
    elif dialect == "ollama":
        doc = {"error": message}
    else:
        kind, code = _OPENAI_ERRORS.get(status, ("server_error", None) if status >= 500 else ("invalid_request_error", None))
        doc = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    reply = json_reply(doc, status)
    if status == 429 or switches.retry_after is not None:
        reply.headers["retry-after"] = switches.retry_after if switches.retry_after is not None else "0"
    return reply


async def send(request: web.Request, reply: Reply, switches: Switches) -> web.StreamResponse:
    headers = dict(reply.headers)
    split = switches.chunk_bytes > 0 or switches.drop_mid_stream
    if not reply.streamed and not split:
        body = reply.pieces[0] if len(reply.pieces) == 1 else b"".join(reply.pieces)
        if switches.gzip and "gzip" in request.headers.get("accept-encoding", ""):
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        headers["Content-Type"] = reply.content_type
        return web.Response(status=reply.status, body=body, headers=headers)

    headers["Content-Type"] = reply.content_type
    if reply.streamed:
        headers.setdefault("Cache-Control", "no-cache")
    response = web.StreamResponse(status=reply.status, headers=headers)
    pieces = reply.pieces
    if not reply.streamed:
        # A plain body keeps its Content-Length, so a drop shows as a short body.
        response.content_length = sum(len(p) for p in pieces)
    if switches.chunk_bytes > 0:
        joined = b"".join(pieces)
        size = switches.chunk_bytes
        pieces = [joined[i : i + size] for i in range(0, len(joined), size)]
    elif switches.drop_mid_stream and len(pieces) == 1:
        # A one-piece body dropped "mid-stream" is cut at half its bytes.
        half = len(pieces[0]) // 2
        pieces = [pieces[0][:half], pieces[0][half:]]
    await response.prepare(request)

    cut = max(1, len(pieces) // 2) if switches.drop_mid_stream else len(pieces)
    delay = switches.chunk_delay_ms / 1000
    for index, piece in enumerate(pieces[:cut]):
        if index:
            if delay:
                await asyncio.sleep(delay)
            elif switches.chunk_bytes:
                # Let the loop run so each small write leaves as its own send().
                await asyncio.sleep(0)
        await response.write(piece)
    if switches.drop_mid_stream:
        _drop_connection(request)
        return response
    await response.write_eof()
    return response


def _drop_connection(request: web.Request) -> None:
    # abort() closes the socket without the chunked terminator or the rest of
    # the Content-Length: the client sees a truncated body, as when an upstream dies.
    transport = request.transport
    if transport is not None:
        transport.abort()
