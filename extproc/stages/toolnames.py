"""Tool names: provider-safe aliases on the way out, the client's own names on the way back.

OpenAI and Anthropic reject tool names such as ``github.search``; the request's declared tools,
``tool_choice`` and history are aliased in place (extproc.toolnames.ToolNameCodec), and every name
the model produces is restored schema-aware, in whole JSON responses and in streams. The provider
adapter's stream decoder does the restoring and also folds the stream into the complete message the
record keeps, so this stage feeds it every chunk even when no name needs restoring.
"""

from __future__ import annotations

from typing import ClassVar

from ..exchange import Exchange, dumps, parse_json
from ..pipeline import Chunk, Failure
from ..providers.toolschema import declared_schemas
from ..toolnames import ToolNameCodec


class ToolNamesStage:
    name: ClassVar[str] = "tool_names"
    # A failure here garbles names at worst, never screening: the exchange goes on.
    failure: ClassVar[Failure] = Failure.OPEN

    async def request_body(self, ex: Exchange) -> None:
        req = ex.request
        if req.doc is None or req.endpoint is None:
            return
        api = req.view.api if req.view is not None else None
        ex.tool_schemas = declared_schemas(api, req.doc)  # the record counts invalid tool arguments against them
        codec = ToolNameCodec(namespace=req.headers.get("x-tool-namespace") or None)
        ex.tool_codec = codec
        if req.endpoint.alias_request(req.doc, codec):
            req.changed = True
            ex.notes.tool_names_aliased = len(codec.mapping)

    async def response_headers(self, ex: Exchange) -> None:
        resp = ex.response
        endpoint = ex.request.endpoint
        if endpoint is None or not resp.has_body:
            return
        active = ex.tool_codec is not None and ex.tool_codec.active
        if resp.streamed:
            drop = ex.request.stream_usage_added  # the client never asked for that event: it does not get it
            resp.decoder = endpoint.stream(ex.tool_codec if active else None, drop_usage=drop)
            if active or drop:
                ex.reply.remove_headers.append("content-length")
        elif active and "json" in resp.content_type:
            resp.buffered = True
            ex.reply.buffer_response_body = True
            ex.reply.remove_headers.append("content-length")

    async def response_chunk(self, ex: Exchange, chunk: Chunk) -> None:
        resp = ex.response
        if resp.decoder is not None:
            chunk.data = resp.decoder.feed(chunk.data) + (resp.decoder.end() if chunk.end_of_stream else b"")
            return
        codec = ex.tool_codec
        endpoint = ex.request.endpoint
        if not (resp.buffered and chunk.end_of_stream and codec is not None and codec.active and endpoint is not None):
            return
        doc = parse_json(chunk.data)
        if isinstance(doc, dict) and endpoint.restore_response(doc, codec):
            chunk.data = dumps(doc)
