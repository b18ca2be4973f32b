"""Per-request behaviour switches of the fake providers.

Tests steer a fake through request headers (the gateway forwards them unchanged)
or through a queue of :class:`Scripted` replies; both end up as one
:class:`Switches` value, so the handlers only ever look at that.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FINISH_REASONS = frozenset({"stop", "length", "content_filter"})
MAX_TOOL_CALLS = 8


@dataclass(frozen=True, slots=True)
class Scripted:
    """One canned reply, consumed by the next request before default behaviour.

    Every field left as ``None`` keeps what the request headers (or the default)
    say. ``json``/``body`` replace the generated reply with exactly these bytes
    (sent with ``status``, default 200); a ``status`` >= 400 without a body gives
    that provider's own error document.
    """

    status: int | None = None
    reply: str | None = None
    tool_calls: int | None = None
    finish: str | None = None
    delay_ms: int | None = None
    chunk_delay_ms: int | None = None
    chunk_bytes: int | None = None
    drop_mid_stream: bool | None = None
    json: Any = None
    body: bytes | None = None
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def raw_body(self) -> bytes | None:
        if self.body is not None:
            return self.body
        if self.json is not None:
            return json.dumps(self.json, ensure_ascii=False).encode()
        return None


@dataclass(frozen=True, slots=True)
class Switches:
    status: int = 200
    fail_times: int | None = None
    fail_key: str = ""
    retry_after: str | None = None
    delay_ms: int = 0
    chunk_delay_ms: int = 0
    chunk_bytes: int = 0
    finish: str = "stop"
    gzip: bool = False
    reply: str | None = None
    drop_mid_stream: bool = False
    # None: decide from the conversation ("call tool" in the last user turn); 0: never.
    tool_calls: int | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Switches:
        if not any(name.startswith("x-fake-") for name in headers):
            return _DEFAULT
        finish = headers.get("x-fake-finish", "stop").strip().lower()
        tool_calls = _int(headers.get("x-fake-tool-call"))
        return cls(
            status=_int(headers.get("x-fake-status")) or 200,
            fail_times=_int(headers.get("x-fake-fail-times")),
            fail_key=headers.get("x-fake-key", ""),
            retry_after=headers.get("x-fake-retry-after"),
            delay_ms=_int(headers.get("x-fake-delay-ms")) or 0,
            chunk_delay_ms=_int(headers.get("x-fake-chunk-delay-ms")) or 0,
            chunk_bytes=_int(headers.get("x-fake-chunk-bytes")) or 0,
            finish=finish if finish in FINISH_REASONS else "stop",
            gzip=headers.get("x-fake-gzip", "") == "1",
            reply=headers.get("x-fake-reply"),
            drop_mid_stream=headers.get("x-fake-drop-mid-stream", "") == "1",
            tool_calls=None if tool_calls is None else max(0, min(tool_calls, MAX_TOOL_CALLS)),
        )

    def overlay(self, scripted: Scripted) -> Switches:
        """The scripted reply wins over headers; its failures are not gated by fail-times."""
        changes: dict[str, Any] = {}
        if scripted.status is not None:
            changes["status"] = scripted.status
            changes["fail_times"] = None
        for name in ("reply", "tool_calls", "finish", "delay_ms", "chunk_delay_ms", "chunk_bytes", "drop_mid_stream"):
            value = getattr(scripted, name)
            if value is not None:
                changes[name] = value
        return dataclasses.replace(self, **changes) if changes else self


_DEFAULT = Switches()


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None
