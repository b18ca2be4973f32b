"""Server-sent events: incremental decoding and the shared stream-processor plumbing.

A body chunk is not an event: one chunk may carry many events and an event (or a
multi-byte character inside it) may straddle chunks. The decoder keeps only the bytes
of the event in progress, never the whole stream, and splits on blank lines whatever
the line ending (``\\n``, ``\\r\\n`` or ``\\r``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from extproc.providers.base import Endpoint, Folded
from extproc.providers.jsonshape import clone, dumps, loads_object

if TYPE_CHECKING:
    from extproc.toolnames import ToolNameCodec

_LINE_END = re.compile(rb"[\r\n]")
_CR = 0x0D
_LF = 0x0A
DONE = "[DONE]"


@dataclass(frozen=True)
class SSEEvent:
    lines: tuple[bytes, ...]  # field and comment lines, each with its own line ending
    terminator: bytes  # the blank line that ended the event; b"" if the stream ended first
    event: str | None
    data: str | None  # data lines joined with "\n"; None if the event had no data field
    id: str | None

    @property
    def raw(self) -> bytes:
        return b"".join(self.lines) + self.terminator

    @property
    def is_done(self) -> bool:
        return self.data is not None and self.data.strip() == DONE

    @classmethod
    def from_lines(cls, lines: list[bytes], terminator: bytes) -> SSEEvent:
        event = event_id = None
        data_parts: list[bytes] = []
        for raw_line in lines:
            line = raw_line.rstrip(b"\r\n")
            if not line or line.startswith(b":"):
                continue
            name, sep, value = line.partition(b":")
            if sep and value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                data_parts.append(value)
            elif name == b"event":
                event = value.decode("utf-8", "replace")
            elif name == b"id":
                event_id = value.decode("utf-8", "replace")
        data = b"\n".join(data_parts).decode("utf-8", "replace") if data_parts else None
        return cls(tuple(lines), terminator, event, data, event_id)

    def with_data(self, data: str) -> bytes:
        """The event re-encoded with new data; other lines and line endings are kept."""
        out: list[bytes] = []
        replaced = False
        for raw_line in self.lines:
            if not _is_data_line(raw_line):
                out.append(raw_line)
            elif not replaced:
                ending = raw_line[len(raw_line.rstrip(b"\r\n")) :]
                out.append(b"data: " + data.encode("utf-8") + (ending or b"\n"))
                replaced = True
        return b"".join(out) + (self.terminator or b"\n")


def _is_data_line(raw_line: bytes) -> bool:
    line = raw_line.rstrip(b"\r\n")
    return line == b"data" or line.startswith(b"data:")


class SSEDecoder:
    """Turns arbitrary chunks into complete events, holding only the partial tail."""

    def __init__(self) -> None:
        self._buf = bytearray()  # starts at the first byte of the event in progress
        self._line_start = 0  # offset in _buf of the line not yet consumed
        self._search_from = 0  # bytes before this offset hold no line ending of the current line
        self._lines: list[bytes] = []  # complete lines of the event in progress

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if chunk:
            self._buf += chunk
        return self._drain(final=False)

    def end(self) -> list[SSEEvent]:
        events = self._drain(final=True)
        tail = bytes(self._buf[self._line_start :])
        if tail:
            self._lines.append(tail)
        if self._lines:
            events.append(SSEEvent.from_lines(self._lines, b""))
        self._buf.clear()
        self._lines = []
        self._line_start = self._search_from = 0
        return events

    def _drain(self, final: bool) -> list[SSEEvent]:
        buf = self._buf
        events: list[SSEEvent] = []
        pos = self._line_start
        event_start = 0
        while True:
            match = _LINE_END.search(buf, max(pos, self._search_from))
            if match is None:
                self._search_from = len(buf)
                break
            i = match.start()
            if buf[i] == _CR and i + 1 == len(buf) and not final:
                # A lone trailing CR may be the first half of a CRLF split across chunks.
                self._search_from = i
                break
            end = i + 2 if buf[i] == _CR and i + 1 < len(buf) and buf[i + 1] == _LF else i + 1
            line = bytes(buf[pos:end])
            if i == pos:  # blank line: the event is complete
                events.append(SSEEvent.from_lines(self._lines, line))
                self._lines = []
                event_start = end
            else:
                self._lines.append(line)
            pos = end
            self._search_from = end
        if event_start:
            del buf[:event_start]
            pos -= event_start
            self._search_from = max(0, self._search_from - event_start)
        self._line_start = pos
        return events


RestoreFn = Callable[[dict, "ToolNameCodec"], bool]


class SSEStreamProcessor(ABC):
    """Feeds decoded events to an API-specific assembler and, if names need
    restoring, re-encodes the events that carry them.

    Whether to rewrite is decided once, at construction: switching mid-stream would
    lose bytes already handed back unchanged.

    ``END_EVENTS`` names the events (``type`` or the SSE ``event:`` field) that end a stream of this
    API; ``data: [DONE]`` ends any. A stream without one is folded with ``unterminated``.
    """

    END_EVENTS: frozenset[str] = frozenset()

    def __init__(self, endpoint: Endpoint, codec: ToolNameCodec | None, *, drop_usage: bool = False) -> None:
        self._endpoint = endpoint
        self._codec = codec
        self._drop_usage = drop_usage  # leave out the usage-only event the gateway asked for (the client did not)
        self._rewriting = (codec is not None and codec.active) or drop_usage
        self._decoder = SSEDecoder()
        self._error: str | None = None
        self._ended = False  # the API's end event was seen

    # -- StreamProcessor ---------------------------------------------------------------
    def feed(self, chunk: bytes) -> bytes:
        events = self._decoder.feed(chunk)
        if not self._rewriting:
            for ev in events:
                self._observe_event(ev)
            return bytes(chunk)
        return b"".join(self._rewrite_event(ev) for ev in events)

    def end(self) -> bytes:
        events = self._decoder.end()
        if not self._rewriting:
            for ev in events:
                self._observe_event(ev)
            return b""
        out = b"".join(self._rewrite_event(ev) for ev in events)
        return out + self._release_held()

    def result(self) -> Folded:
        message = self._assembled()
        if self._codec is not None:
            self._endpoint.restore_response(message, self._codec)
        folded = self._endpoint.fold(message)
        if self._error is not None and folded.error is None:
            folded = replace(folded, error=self._error)
        if not self._ended:
            folded = replace(folded, unterminated=True)
        return folded

    # -- hooks for subclasses ---------------------------------------------------------
    @abstractmethod
    def _observe(self, event: str | None, obj: dict) -> None:
        """Take one parsed event into the reassembly state."""

    @abstractmethod
    def _assembled(self) -> dict:
        """A fresh upstream-view response object built from what was observed."""

    def _restorer(self, event: str | None, obj: dict) -> RestoreFn | None:
        """The in-place restore function for this event, None if it carries no names."""
        return None

    def _release_held(self) -> bytes:
        return b""

    def _usage_only(self, obj: dict) -> bool:
        """An event that only reports usage (the APIs that report it on request)."""
        return False

    # -- shared steps ------------------------------------------------------------------
    def _observe_event(self, ev: SSEEvent) -> dict | None:
        if ev.data is None:
            return None
        if ev.is_done:
            self._ended = True
            return None
        obj = loads_object(ev.data)
        if obj is not None:
            self._observe(ev.event, obj)
            if self.END_EVENTS:
                kind = obj.get("type", ev.event)
                self._ended = self._ended or (isinstance(kind, str) and kind in self.END_EVENTS)
        return obj

    def _rewrite_event(self, ev: SSEEvent) -> bytes:
        obj = self._observe_event(ev)
        if obj is None:
            return ev.raw
        if self._drop_usage and self._usage_only(obj):
            return b""
        restored = self._restored_copy(ev.event, obj)
        return ev.raw if restored is None else ev.with_data(dumps(restored))

    def _restored_copy(self, event: str | None, obj: dict) -> dict | None:
        restore = self._restorer(event, obj)
        if restore is None:
            return None
        # The assembler may hold references into obj, so restore a copy.
        candidate = clone(obj)
        assert self._codec is not None
        return candidate if restore(candidate, self._codec) else None
