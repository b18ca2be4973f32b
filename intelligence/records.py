"""Plain value types shared by the hot path (extproc) and the persistence side.

extproc builds an :class:`ExchangeRecord` when an exchange ends and hands it to a
:class:`Recorder`; nothing here knows protobuf, SQL or provider JSON. The record is
JSON-serialisable (``to_json``/``from_json``) because the recorder spools it to disk
when the database is away.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class Body:
    """A body as seen at one point of the exchange.

    ``json`` holds the parsed document when the bytes were valid JSON; otherwise
    ``text`` holds the bytes decoded with replacement characters (never the raw
    bytes: Postgres text and JSON cannot hold every byte sequence). ``size`` is the
    byte length on the wire, ``truncated`` says the stored text was cut.
    """

    json: Any = None
    text: str | None = None
    size: int = 0
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"json": self.json, "text": self.text, "size": self.size, "truncated": self.truncated}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Body | None:
        if d is None:
            return None
        return cls(json=d.get("json"), text=d.get("text"), size=d.get("size", 0), truncated=d.get("truncated", False))


@dataclass(frozen=True, slots=True)
class ExchangeRecord:
    """One request/response exchange, as the audit trail stores it."""

    request_id: str
    started_at: datetime
    finished_at: datetime
    method: str
    path: str
    session_id: str | None = None
    client_key_fp: str | None = None
    client_addr: str | None = None
    provider: str | None = None
    model: str | None = None
    api: str | None = None  # chat | responses | embeddings | messages | legacy | None
    route: str | None = None  # prefix | unified | legacy | unknown
    status: int | None = None
    streamed: bool = False
    latency_ms: float | None = None
    ttft_ms: float | None = None
    upstream_ms: float | None = None
    usage: Usage = field(default_factory=Usage)
    request_client: Body | None = None
    request_forwarded: Body | None = None
    response_upstream: Body | None = None
    response_client: Body | None = None
    tool_names: tuple[str, ...] = ()
    # What pattern memory embeds, extracted by the provider adapter so no one else parses provider JSON.
    prompt_system: str | None = None
    prompt_user: str | None = None  # the last user turn
    tool_args_invalid: int = 0  # tool calls whose arguments were not valid JSON for the declared schema
    tool_aliases: dict[str, str] = field(default_factory=dict)  # alias -> original
    finish_reason: str | None = None
    error: str | None = None
    request_headers: dict[str, str] = field(default_factory=dict)  # credentials removed
    flags: dict[str, Any] = field(default_factory=dict)
    # A provider-neutral summary of the response as the client got it (filled by the provider adapter,
    # so readers never parse provider JSON): the reply text, and each tool call as
    # {"name": client-facing name, "upstream_name": name the provider used, "arguments": JSON text}.
    response_text: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> str:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["started_at"] = self.started_at.isoformat()
        d["finished_at"] = self.finished_at.isoformat()
        d["usage"] = self.usage.to_dict()
        for k in ("request_client", "request_forwarded", "response_upstream", "response_client"):
            d[k] = getattr(self, k).to_dict() if getattr(self, k) is not None else None
        d["tool_names"] = list(self.tool_names)
        d["tool_calls"] = [dict(c) for c in self.tool_calls]
        try:  # on the hot path (the recorder's journal): orjson, about 10x faster than the stdlib
            return orjson.dumps(d).decode()
        except (TypeError, orjson.JSONEncodeError):  # integers past 64 bits, lone surrogates, odd keys
            return json.dumps(d, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, s: str) -> ExchangeRecord:
        d = json.loads(s)
        d["started_at"] = _parse_dt(d["started_at"])
        d["finished_at"] = _parse_dt(d["finished_at"])
        d["usage"] = Usage(**(d.get("usage") or {}))
        for k in ("request_client", "request_forwarded", "response_upstream", "response_client"):
            d[k] = Body.from_dict(d.get(k))
        d["tool_names"] = tuple(d.get("tool_names") or ())
        d["tool_calls"] = tuple(dict(c) for c in d.get("tool_calls") or () if isinstance(c, dict))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _parse_dt(s: str) -> datetime:
    dt = datetime.fromisoformat(s)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class Recorder(Protocol):
    """What the hot path needs from persistence: a non-blocking hand-off."""

    def submit(self, record: ExchangeRecord) -> None:
        """Accept a finished exchange. Must never block or raise."""
        ...
