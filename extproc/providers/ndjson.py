"""Newline-delimited JSON streams (Ollama native API): one JSON object per line."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from typing import TYPE_CHECKING

from extproc.providers.base import Endpoint, Folded
from extproc.providers.jsonshape import clone, dumps, loads_object

if TYPE_CHECKING:
    from extproc.toolnames import ToolNameCodec


class NDJSONDecoder:
    """Splits chunks into complete lines (each with its ``\\n``), holding the partial tail."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._search_from = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        if chunk:
            self._buf += chunk
        lines: list[bytes] = []
        start = 0
        search = self._search_from
        while (i := self._buf.find(b"\n", search)) != -1:
            lines.append(bytes(self._buf[start : i + 1]))
            start = search = i + 1
        del self._buf[:start]
        self._search_from = len(self._buf)
        return lines

    def end(self) -> list[bytes]:
        tail = bytes(self._buf)
        self._buf.clear()
        self._search_from = 0
        return [tail] if tail else []


class NDJSONStreamProcessor(ABC):
    """Shared plumbing for NDJSON streams; subclasses assemble and restore per line."""

    def __init__(self, endpoint: Endpoint, codec: ToolNameCodec | None) -> None:
        self._endpoint = endpoint
        self._codec = codec
        self._rewriting = codec is not None and codec.active
        self._decoder = NDJSONDecoder()
        self._error: str | None = None
        self._ended = False  # the final line (``"done": true``) was seen

    def feed(self, chunk: bytes) -> bytes:
        lines = self._decoder.feed(chunk)
        if not self._rewriting:
            for line in lines:
                self._observe_line(line)
            return bytes(chunk)
        return b"".join(self._rewrite_line(line) for line in lines)

    def end(self) -> bytes:
        lines = self._decoder.end()
        if not self._rewriting:
            for line in lines:
                self._observe_line(line)
            return b""
        return b"".join(self._rewrite_line(line) for line in lines)

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

    @abstractmethod
    def _observe(self, obj: dict) -> None:
        """Take one parsed line into the reassembly state."""

    @abstractmethod
    def _assembled(self) -> dict:
        """A fresh upstream-view response object built from what was observed."""

    @abstractmethod
    def _may_carry_names(self, obj: dict) -> bool:
        """Cheap pre-check so lines without tool names are not copied."""

    def _observe_line(self, line: bytes) -> dict | None:
        obj = loads_object(line) if line.strip() else None
        if obj is not None:
            self._observe(obj)
            if obj.get("done") is True:
                self._ended = True
        return obj

    def _rewrite_line(self, line: bytes) -> bytes:
        obj = self._observe_line(line)
        if obj is None or not self._may_carry_names(obj):
            return line
        candidate = clone(obj)
        assert self._codec is not None
        if not self._endpoint.restore_response(candidate, self._codec):
            return line
        body = line.rstrip(b"\r\n")
        return dumps(candidate).encode("utf-8") + line[len(body) :]
