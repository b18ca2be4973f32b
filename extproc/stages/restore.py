"""Restore: the request's redacted values back into the response, for the client only.

The guard replaced what the policy redacts with placeholders before the request went upstream
(``<EMAIL_1>``); the model answers with those placeholders. They are put back here, after the
record stage kept its copy, so the log holds the placeholders and never the values. Streams are
restored event by event, holding back only a possible partial placeholder.
"""

from __future__ import annotations

from typing import ClassVar

from ..exchange import Exchange, parse_json
from ..pipeline import Chunk, Failure


class RestoreStage:
    name: ClassVar[str] = "restore"
    # A failure must not hand the client placeholders it cannot read silently: withhold and say so.
    failure: ClassVar[Failure] = Failure.CLOSED

    async def response_chunk(self, ex: Exchange, chunk: Chunk) -> None:
        screen = ex.response_screen
        if screen is None:
            return
        if ex.response.streamed:
            if screen.restorer is not None:
                chunk.data = screen.restorer.feed(chunk.data) + (screen.restorer.end() if chunk.end_of_stream else b"")
            return
        if ex.response.buffered and chunk.end_of_stream and screen.mapping:
            doc = parse_json(chunk.data)
            if isinstance(doc, dict):
                restored = screen.restore_json(doc)
                if restored is not None:
                    chunk.data = restored
