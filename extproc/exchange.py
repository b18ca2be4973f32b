"""One exchange's typed state: what the stages know about a request and its response.

Envoy opens one gRPC stream per HTTP request. ``extproc.server`` makes one :class:`Exchange` per
stream, and the pipeline (``extproc.pipeline``) passes it through the ordered stages
(``extproc.stages.default_stages``) at every phase. Stages talk to each other only through the typed
fields here: a stage writes what it decided, a later stage (and the record) reads it.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from .providers.registry import api_of
from .routing import split_provider_prefix
from .wire import Immediate, Reply

if TYPE_CHECKING:
    from .auth import AuthDecision
    from .providers.base import Endpoint, Folded, RequestView, StreamProcessor
    from .screening import GuardOutcome, ResponseScreen
    from .settings import SidecarSettings
    from .toolnames import ToolNameCodec


class Route(str, enum.Enum):
    """How the request reached the gateway (exchanges.route)."""

    PREFIX = "prefix"  # /openai/v1/..., /anthropic/v1/..., /openrouter/v1/...: the path names the provider
    UNIFIED = "unified"  # /v1/chat/completions etc.: the body's model picks the provider
    FEEDBACK = "feedback"  # POST /v1/feedback: answered by the gateway itself
    LEGACY = "legacy"  # /?target_url=...: the old debug proxy, allowlisted destinations only
    UNKNOWN = "unknown"  # anything else: Envoy's `unrouted` route answers 404; still logged


@dataclass(slots=True)
class RequestState:
    method: str = ""
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    waited_ms: float | None = None  # from Envoy's receipt of the request to its headers here (request.time)
    route: Route = Route.UNKNOWN
    rel_path: str = ""  # the provider-relative path (/v1/chat/completions)
    provider: str | None = None
    endpoint: Endpoint | None = None  # the provider adapter, for model calls
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False  # the whole request is in (no body will follow, or its last chunk came)
    doc: dict[str, Any] | None = None  # the parsed JSON object; stages edit it in place and set `changed`
    view: RequestView | None = None  # the adapter's typed reading of `doc`
    not_json: bool = False  # a body that is not a JSON object
    changed: bool = False  # `doc` was edited: the pipeline forwards it re-rendered
    stream_usage_added: bool = False  # the gateway asked the provider for stream usage the client did not
    forwarded: bytes | None = None  # the body as forwarded, when it differs from the client's
    logged: bytes | None = None  # the client's body as the log keeps it, when redaction changed it


@dataclass(slots=True)
class ResponseState:
    status: int | None = None
    content_type: str = ""
    has_body: bool = False
    upstream_ms: float | None = None
    ttft_ms: float | None = None
    streamed: bool = False  # SSE / NDJSON: chunk by chunk
    buffered: bool = False  # a JSON response held whole (mode_override BUFFERED) for a rewrite
    decoder: StreamProcessor | None = None  # the adapter's stream decoder: restores names, folds the stream
    folded: Folded | None = None  # the complete response (parsed, or reassembled from the stream)
    upstream_log: bytearray = field(default_factory=bytearray)  # what the provider sent, as the log keeps it
    client_log: bytearray = field(default_factory=bytearray)  # what the client got, placeholders unrestored
    truncated: bool = False


@dataclass(slots=True)
class Notes:
    """What stages decided, for later stages and for the record's ``flags`` (keys kept stable)."""

    screening: dict[str, Any] = field(default_factory=dict)  # guard: policy, detections, edits, redactions
    claude_verdict: dict[str, Any] | None = None
    enhancement: dict[str, Any] | None = None
    tool_names_aliased: int = 0
    credentials: str | None = None  # "injected": the operator's provider key went upstream
    policy_route: dict[str, Any] | None = None
    response_policy: dict[str, Any] | None = None
    stage_errors: list[str] = field(default_factory=list)
    # The record stage: the response body reached its end (Envoy's end_of_stream); and, when the exchange
    # did not complete normally, why: "aborted" (no response), "cut" (the response stopped part-way),
    # "no_end_event" (a stream closed without its API's end event).
    response_ended: bool = False
    incomplete: str | None = None
    shed: bool = False  # admission: refused unscreened because the sidecar was overloaded

    def flags(self, request: RequestState) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.screening)
        for key in ("claude_verdict", "enhancement", "credentials", "policy_route", "response_policy"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.tool_names_aliased:
            out["tool_names_aliased"] = self.tool_names_aliased
        if request.not_json and request.body:
            out["request_not_json"] = True
        if self.stage_errors:
            out["stage_errors"] = list(self.stage_errors)
        if self.incomplete is not None:
            out["incomplete"] = self.incomplete
        if self.shed:
            out["shed"] = True
        return out


class Exchange:
    """The per-request state machine's state. The pipeline owns the order; stages own the decisions."""

    __slots__ = (
        "settings", "request_id", "t0", "started_at", "client_addr", "client", "session_id", "auth",
        "request", "response", "notes", "reply", "answer", "error", "record", "finished",
        "screen", "response_screen", "tool_codec", "tool_schemas", "verdict",
    )  # fmt: skip

    def __init__(self, settings: SidecarSettings) -> None:
        from .auth import PASSTHROUGH

        self.settings = settings
        self.request_id = ""
        self.t0 = time.monotonic()
        self.started_at = datetime.now(UTC)
        self.client_addr: str | None = None
        self.client: str | None = None  # a fingerprint of the credential, or the gateway key's id
        self.session_id: str | None = None
        self.auth: AuthDecision = PASSTHROUGH
        self.request = RequestState()
        self.response = ResponseState()
        self.notes = Notes()
        self.reply = Reply()  # what the current phase answers Envoy; stages add to it
        self.answer: Immediate | None = None  # the gateway answered the client itself
        self.error: str | None = None
        self.record = True  # False: not an exchange to log (feedback posts)
        self.finished = False
        # Objects one stage hands a later one (typed where they are built):
        self.screen: GuardOutcome | None = None  # the request's screening, for the response side
        self.response_screen: ResponseScreen | None = None
        self.tool_codec: ToolNameCodec | None = None
        self.tool_schemas: dict[str, dict[str, Any]] = {}
        self.verdict: Any = None  # extproc.claude_gate.PendingVerdict: a claude_verdict rule holds the request

    @property
    def api(self) -> str | None:
        """The calling API (chat, messages, ...): also the format the gateway's own errors take."""
        view = self.request.view
        if view is not None:
            return view.api
        return api_of(self.request.rel_path or split_provider_prefix(self.request.path)[1])

    def session(self) -> str:
        """``x-session-id``, else derived: a conversation resends its opening turns, so they identify it."""
        if self.session_id is None:
            view = self.request.view
            opening = (view.first_user or view.last_user or "") if view is not None else ""
            system = (view.system or "") if view is not None else ""
            seed = f"{self.client or self.client_addr}|{system[:2000]}|{opening[:2000]}"
            self.session_id = "s_" + hashlib.sha256(seed.encode("utf-8", "replace")).hexdigest()[:16]
        return self.session_id

    def answered(self, imm: Immediate) -> Immediate:
        """The gateway answers the client itself (a refusal, an error, feedback's 202)."""
        imm.headers["x-llmproxy-request-id"] = self.request_id
        self.answer = imm
        self.response.status = imm.status
        self.error = self.error or imm.details
        return imm

    def render_request(self) -> None:
        """After the request phases: the edited body goes upstream with a matching content-length."""
        if self.request.changed and self.request.doc is not None:
            self.request.forwarded = dumps(self.request.doc)
            self.reply.body = self.request.forwarded
            self.reply.set_headers["content-length"] = str(len(self.request.forwarded))

    def keep(self, buf: bytearray, data: bytes) -> None:
        """Append to a log copy of the response, up to the body cap."""
        room = self.settings.log_body_max - len(buf)
        if room <= 0:
            self.response.truncated = self.response.truncated or bool(data)
            return
        buf += data[:room]
        if len(data) > room:
            self.response.truncated = True


def dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON, as a forwarded or logged body."""
    try:
        return orjson.dumps(doc)
    except (TypeError, orjson.JSONEncodeError):  # integers past 64 bits, odd keys: the stdlib renders them exactly
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def loads_for_log(data: bytes | bytearray) -> Any:
    """A body for the log or a summary (never forwarded): fast, and None when it is not JSON."""
    if not data:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


# A \uD800-\uDFFF escape: half of a UTF-16 surrogate pair, valid only as a pair.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def parse_json(data: bytes | bytearray) -> Any:
    """The document, or None for bad JSON, invalid UTF-8, nesting bombs, duplicate keys and lone
    surrogate escapes.

    Duplicate keys are refused because parsers disagree on them: the gateway would screen the last
    ``messages`` while a provider might read the first. A lone surrogate (``"\\ud800"``) is valid
    JSON syntax but no Unicode text: the detectors and the log cannot encode it (it failed the screen
    with a 503), and providers disagree on it too; orjson, which rejects exactly those, checks bodies
    that hold such an escape.
    """
    if not data:
        return None
    try:
        doc = json.loads(data, object_pairs_hook=_unique_keys)
        if _SURROGATE_ESCAPE.search(data) is not None:
            orjson.loads(data)
        return doc
    except (ValueError, RecursionError):  # orjson.JSONDecodeError is a ValueError
        return None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return doc


__all__ = ["Exchange", "Notes", "RequestState", "ResponseState", "Route", "dumps", "parse_json"]
