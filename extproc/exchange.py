"""One exchange: the per-request state machine driven by the ext_proc phases.

Envoy opens one gRPC stream per HTTP request and sends, in order, request headers, the buffered
request body, response headers and the response body (one message when buffered, one per socket read
when streamed). :class:`Exchange` answers each with a typed reply and, when the exchange ends (or the
stream is cut), hands one :class:`ExchangeRecord` to the recorder. It never raises into the stream:
a bug in handling degrades to "pass through untouched, log what we have".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from intelligence.keys.cache import KeySnapshot
from intelligence.records import Body, ExchangeRecord, Recorder, Usage

from .auth import PASSTHROUGH, AuthDecision, AuthMode, authenticate, budget_refusal, check_scope, gateway_key_headers
from .errors import gateway_error
from .providers.registry import endpoint_for
from .providers.toolschema import declared_schemas, invalid_calls
from .routing import PROVIDERS, UNIFIED_PATHS, ModelRouter, split_provider_prefix
from .settings import SidecarSettings
from .toolnames import ToolNameCodec
from .wire import BodyChunk, Headers, Immediate, Phase, Reply

log = logging.getLogger("llmproxy.exchange")

# Headers that carry credentials: never logged, never stored.
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "proxy-authorization", "cookie", "set-cookie", "api-key"})
_KEY_ENV_HINT = {
    "openai": "LLMPROXY_OPENAI_API_KEY",
    "anthropic": "LLMPROXY_ANTHROPIC_API_KEY",
    "openrouter": "LLMPROXY_OPENROUTER_API_KEY",
}
_AUTH_HEADER = {"openai": "authorization", "openrouter": "authorization", "anthropic": "x-api-key"}


FEEDBACK_PATHS = frozenset({"/v1/feedback", "/feedback"})


class FeedbackSink(Protocol):
    """Stores client feedback; raises ValueError (message fit for a 400) on invalid input."""

    async def submit(self, payload: Any) -> int: ...


@dataclass
class Context:
    """What every exchange shares: settings, routing rules, the recorder, counters."""

    settings: SidecarSettings
    recorder: Recorder
    feedback: FeedbackSink | None = None
    guard: Any = None  # extproc.guard.Guard: detectors + policy; None runs no screening
    keys: Any = None  # has .snapshot -> KeySnapshot (extproc.auth.KeyCache); None: no gateway keys loaded
    meter: Any = None  # extproc.auth.UsageMeter: shared-database budgets per gateway key
    enhancer: Any = None  # intelligence.enhance.live.Enhancer: applies enhancements/experiments; None applies none
    router: ModelRouter = field(init=False)
    auth_mode: AuthMode = field(init=False)
    stats: dict[str, int] = field(default_factory=lambda: {"exchanges": 0, "errors": 0, "aborted": 0})

    def __post_init__(self) -> None:
        self.router = ModelRouter(self.settings.model_routes)
        self.auth_mode = AuthMode.parse(self.settings.auth_mode)

    @property
    def key_snapshot(self) -> KeySnapshot:
        return self.keys.snapshot if self.keys is not None else KeySnapshot.empty()


def key_fingerprint(headers: dict[str, str]) -> str | None:
    """A stable, non-reversible identity for the client's credential (never the key itself)."""
    raw = headers.get("x-api-key") or headers.get("authorization", "")
    raw = raw.removeprefix("Bearer ").removeprefix("bearer ").strip()
    if not raw:
        return None
    return "key_" + hashlib.sha256(raw.encode()).hexdigest()[:16]


def safe_headers(headers: dict[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in headers.items()
        if k not in _SECRET_HEADERS and not any(s in k for s in ("token", "secret", "key")) and not k.startswith(":")
    }


class Exchange:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.t0 = time.monotonic()
        self.started_at = datetime.now(UTC)
        self.request_id = ""
        self.method = ""
        self.path = ""
        self.rel_path = ""
        self.route = "unknown"
        self.provider: str | None = None
        self.endpoint = None
        self.view = None
        self.codec: ToolNameCodec | None = None
        self.headers: dict[str, str] = {}
        self.client_addr: str | None = None
        self.key_fp: str | None = None
        self.session_id: str | None = None
        self.request_client: bytes = b""
        self.request_forwarded: bytes | None = None
        self.status: int | None = None
        self.upstream_ms: float | None = None
        self.ttft_ms: float | None = None
        self.streamed = False
        self.stream_proc = None
        self.rewrite_response = False
        self.resp_upstream = bytearray()
        self.resp_client = bytearray()
        self.resp_truncated = False
        self.folded = None
        self.error: str | None = None
        self.flags: dict[str, Any] = {}
        self.finished = False
        self.immediate_body: bytes | None = None
        self.auth: AuthDecision = PASSTHROUGH
        self.tool_schemas: dict[str, dict] = {}
        self.request_logged: bytes | None = None  # the client's request as logged, when it differs (redaction)
        self.guarded = None  # extproc.guard.GuardOutcome of the request, for the response side
        self.screen = None  # extproc.guard.ResponseScreen: restore / mask / edit the response
        self.mask_stage = None  # SSE text rewriters of a screened stream (before / after the log's copy)
        self.restore_stage = None

    # ------------------------------------------------------------------ dispatch
    def handle(self, phase: Phase, event: Headers | BodyChunk | None) -> Reply | Immediate | Awaitable[Immediate]:
        try:
            if phase is Phase.REQUEST_HEADERS:
                return self._request_headers(event)
            if phase is Phase.REQUEST_BODY:
                return self._request_body(event)
            if phase is Phase.RESPONSE_HEADERS:
                return self._response_headers(event)
            if phase is Phase.RESPONSE_BODY:
                return self._response_body(event)
            return Reply()
        except Exception as exc:  # contain: a bug here must not kill the client's stream
            self.ctx.stats["errors"] += 1
            log.exception("request %s: %s handling failed; passing through", self.request_id, phase.value)
            self.error = self.error or f"sidecar error in {phase.value}: {type(exc).__name__}"
            if phase is Phase.RESPONSE_BODY and isinstance(event, BodyChunk) and event.end_of_stream:
                self.finish()
            return Reply()

    # ------------------------------------------------------------------ request
    def _request_headers(self, ev: Headers) -> Reply | Immediate:
        h = ev.headers
        self.headers = h
        self.request_id = h.get("x-request-id") or str(uuid.uuid4())
        self.method = h.get(":method", "")
        self.path = h.get(":path", "")
        self.client_addr = _client_addr(ev)
        self.key_fp = key_fingerprint(h)
        self.session_id = h.get("x-session-id") or None
        reply = Reply(remove_headers=[k for k in h if k.startswith("x-llmproxy-")] + ["accept-encoding"])
        # A client must not pick a route by sending the routing header itself.
        reply.clear_route_cache = any(k.startswith("x-llmproxy-") for k in h)

        provider, rel = split_provider_prefix(self.path)
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        if provider:
            self.route, self.provider, self.rel_path = "prefix", provider, rel
        elif rel in UNIFIED_PATHS:
            self.route, self.rel_path = "unified", rel
        elif rel in FEEDBACK_PATHS:
            self.route, self.rel_path = "feedback", rel
        elif rel == "/" and "target_url" in query:
            early = self._legacy_target(query["target_url"][0], reply)
            if early is not None:
                return early
        else:
            self.rel_path = rel
        self.endpoint = endpoint_for(self.rel_path, self.method) if self.rel_path else None

        # Gateway keys: decided here, before the body is read, with no database round trip.
        reply.remove_headers.extend(gateway_key_headers(h))
        self.auth = authenticate(h, self.ctx.key_snapshot, self.started_at, self.ctx.auth_mode)
        if not self.auth.ok:
            return self._answer(self.auth.immediate(_api_of(self.rel_path)))
        if self.auth.key_id is not None:
            self.key_fp = self.auth.key_id  # the client is the gateway key, not a provider-key hash
            hit = self.ctx.meter.admit(self.auth.key_id) if self.ctx.meter is not None else None
            if hit is not None:
                return self._answer(budget_refusal(hit, self.auth.key_id).immediate(_api_of(self.rel_path)))

        if self.route == "feedback":  # answered by the gateway itself, in the body phase
            if self.method != "POST" or ev.end_of_stream:
                return self._answer(
                    gateway_error(
                        405 if self.method != "POST" else 400,
                        "llmproxy: POST a JSON body {request_id, score|thumbs, comment} to /v1/feedback",
                        code="feedback_usage",
                    ),
                    record=False,
                )
            return reply
        if ev.end_of_stream:  # no body will follow
            if self.route == "unified":
                return self._answer(
                    gateway_error(
                        400,
                        "llmproxy: this route needs a JSON body with a `model`",
                        api=_api_of(self.rel_path),
                        code="body_required",
                    )
                )
            denied = self._scope_and_credentials(reply, None)
            if denied is not None:
                return denied
        elif self.provider:
            denied = self._scope_and_credentials(reply, None, model_known=False)
            if denied is not None:
                return denied
        return reply

    def _legacy_target(self, target: str, reply: Reply) -> Immediate | None:
        """Legacy debug-proxy parity: POST /?target_url=URL, to allowlisted hosts only."""
        self.route = "legacy"
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return self._answer(
                gateway_error(
                    400, f"llmproxy: invalid target_url {target[:200]!r}: need an absolute http(s) URL", code="invalid_target_url"
                )
            )
        host = parts.hostname.lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        allowed = self.ctx.settings.legacy_allowlist
        if host not in allowed and f"{host}:{port}" not in allowed:
            return self._answer(
                gateway_error(
                    403,
                    f"llmproxy: target host {host}:{port} is not on the gateway's allowlist "
                    "(LLMPROXY_LEGACY_ALLOWLIST / --allow-target)",
                    code="target_not_allowed",
                )
            )
        path = parts.path or "/"
        self.rel_path = path
        self.provider = "legacy"
        reply.set_headers.update(
            {
                ":path": path + (f"?{parts.query}" if parts.query else ""),
                "x-llmproxy-legacy": parts.scheme,
                "x-llmproxy-target-host": f"{host}:{port}",
            }
        )
        reply.clear_route_cache = True
        return None

    def _request_body(self, ev: BodyChunk) -> Reply | Immediate | Awaitable[Reply]:
        self.request_client += ev.data
        if not ev.end_of_stream:
            return Reply()
        reply = Reply()
        doc = _parse_json(self.request_client)
        if self.route == "feedback":
            return self._feedback(doc)
        api = _api_of(self.rel_path)
        if self.route == "unified":
            if not isinstance(doc, dict):
                return self._answer(
                    gateway_error(
                        400,
                        "llmproxy: request body must be a JSON object with a `model` field"
                        + (
                            " (content-type is not application/json)"
                            if "json" not in self.headers.get("content-type", "")
                            else ""
                        ),
                        api=api,
                        code="invalid_json",
                    )
                )
            model = doc.get("model")
            provider = self.ctx.router.provider_for(model)
            if provider is None:
                return self._answer(
                    gateway_error(
                        400, f"llmproxy: unknown model {model!r}: no provider route matches it", api=api, code="unknown_model"
                    )
                )
            self.provider = provider
            reply.set_headers["x-llmproxy-provider"] = provider
            reply.clear_route_cache = True
            denied = self._scope_and_credentials(reply, model)
            if denied is not None:
                return denied
        elif self.auth.key is not None and isinstance(doc, dict):
            denied = self._scope_only(doc.get("model"))  # prefix route: the model is known only now
            if denied is not None:
                return denied
        if self.endpoint is not None and isinstance(doc, dict):
            self.view = self.endpoint.parse_request(doc)
            self.tool_schemas = declared_schemas(self.view.api, doc)
            changed = False
            if self.ctx.guard is not None:
                blocked = self._guard(doc, reply)
                if isinstance(blocked, Immediate):
                    return blocked
                if not isinstance(blocked, bool):  # a claude_verdict rule holds the request: awaits Claude
                    return self._verdict_then_forward(blocked, doc, reply)
                changed = blocked
            enhancer = self.ctx.enhancer
            if enhancer is not None and enhancer.wants(self.view.api, self.headers):
                return self._enhance_then_forward(doc, reply, changed)  # the only path here that awaits
            return self._forward_request(doc, reply, changed)
        elif doc is None and self.request_client:
            self.flags["request_not_json"] = True
        if self.session_id is None:
            self.session_id = self._derive_session()
        return reply

    def _forward_request(self, doc: dict, reply: Reply, changed: bool) -> Reply:
        """Tool-name aliasing, then the forwarded body when anything changed it."""
        self.codec = ToolNameCodec(namespace=self.headers.get("x-tool-namespace") or None)
        if self.endpoint.alias_request(doc, self.codec):
            changed = True
            self.flags["tool_names_aliased"] = len(self.codec.mapping)
        if changed:
            self.request_forwarded = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
            reply.body = self.request_forwarded
            reply.set_headers["content-length"] = str(len(self.request_forwarded))
        if self.session_id is None:
            self.session_id = self._derive_session()
        return reply

    async def _enhance_then_forward(self, doc: dict, reply: Reply, changed: bool) -> Reply:
        """Apply the pattern's enhancement (arm assigned by session), then forward as usual."""
        if self.session_id is None:
            self.session_id = self._derive_session()  # the assignment unit: fixed before the arm is chosen
        try:
            applied = await self.ctx.enhancer.enhance(
                self.view, doc, self.view.api, self.session_id, self.headers, client=self.key_fp or self.client_addr
            )
            if applied is not None:
                self.flags["enhancement"] = applied.record()
                if applied.changed:
                    doc, changed = applied.doc, True
        except Exception:  # advisory: a failed lookup or apply forwards the request as the client sent it
            self.ctx.stats["errors"] += 1
            log.exception("request %s: enhancement failed; forwarding unenhanced", self.request_id)
        try:
            return self._forward_request(doc, reply, changed)
        except Exception as exc:  # the same containment handle() gives the synchronous path
            self.ctx.stats["errors"] += 1
            log.exception("request %s: request_body handling failed; passing through", self.request_id)
            self.error = self.error or f"sidecar error in request_body: {type(exc).__name__}"
            return Reply()

    def _guard(self, doc: dict, reply: Reply) -> Immediate | bool | Awaitable[Immediate | bool]:
        """Detectors + policy; returns the refusal, or whether the body was changed (awaitable only when
        a claude_verdict rule holds the request for Claude's verdict)."""
        g = self.ctx.guard.check_request(
            request_id=self.request_id,
            api=self.view.api,
            doc=doc,
            provider=self.provider,
            path=self.path,
            method=self.method,
            key=self.auth.key,
            client=self.key_fp,
            client_addr=self.client_addr,
            size=len(self.request_client),
            headers=self.headers,
            now=self.started_at,
        )
        self.flags.update(g.record())
        self.guarded = g
        if g.immediate is not None:
            return self._answer(g.immediate)
        if g.redacted:
            # The log must never hold what was redacted: store the client's request in redacted form.
            self.request_logged = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        if g.verdict is not None:
            return self._guard_verdict(g, doc, reply)
        return self._guard_forward(g, doc, reply)

    async def _guard_verdict(self, g: Any, doc: dict, reply: Reply) -> Immediate | bool:
        """Wait (bounded by the rule's timeout_ms) for Claude's verdict; refuse, or go on as usual."""
        refusal = await g.verdict.resolve()
        self.flags["claude_verdict"] = g.verdict.record()
        if refusal is not None:
            return self._answer(refusal)
        return self._guard_forward(g, doc, reply)

    async def _verdict_then_forward(self, pending: Awaitable[Immediate | bool], doc: dict, reply: Reply) -> Reply | Immediate:
        try:
            blocked = await pending
            if isinstance(blocked, Immediate):
                return blocked
            enhancer = self.ctx.enhancer
            if enhancer is not None and enhancer.wants(self.view.api, self.headers):
                return await self._enhance_then_forward(doc, reply, blocked)
            return self._forward_request(doc, reply, blocked)
        except Exception as exc:  # the same containment handle() gives the synchronous path
            self.ctx.stats["errors"] += 1
            log.exception("request %s: request_body handling failed; passing through", self.request_id)
            self.error = self.error or f"sidecar error in request_body: {type(exc).__name__}"
            return Reply()

    def _guard_forward(self, g: Any, doc: dict, reply: Reply) -> Immediate | bool:
        """The guard's header changes and provider switch, once the request may go."""
        reply.set_headers.update(g.set_headers)
        reply.remove_headers.extend(g.strip_headers)
        if self.route == "unified":  # the policy may change the model, or route to another provider
            target = g.decision.provider if g.decision is not None else None
            if target is None and doc.get("model") != self.view.model:
                target = self.ctx.router.provider_for(doc.get("model"))
            if target is not None and target != self.provider:
                denied = self._switch_provider(target, reply, doc.get("model"))
                if denied is not None:
                    return denied
        elif g.decision is not None and g.decision.provider not in (None, self.provider):
            self.flags["policy_route"] = {
                "skipped": f"route to {g.decision.provider}: a provider-prefix route keeps "
                f"the provider its path names; use the unified /v1/ routes"
            }
        if g.changed_body:
            self.view = self.endpoint.parse_request(doc)  # what pattern memory embeds is the redacted text
        return g.changed_body

    def _switch_provider(self, provider: str, reply: Reply, model: Any) -> Immediate | None:
        """Send a unified-route request to another provider (policy ``route`` or a model change), as
        the model router would have (the body is not translated between APIs); the key's scope and
        the operator's credential follow the new provider, the old one's credential is dropped."""
        if provider not in PROVIDERS:
            self.flags["policy_route"] = {"skipped": f"unknown provider {provider!r} (known: {', '.join(PROVIDERS)})"}
            log.warning("request %s: route to unknown provider %r skipped", self.request_id, provider)
            return None
        old = _AUTH_HEADER.get(self.provider or "")
        if old is not None and self.flags.get("credentials") == "injected":
            reply.set_headers.pop(old, None)  # the previous provider's credential must not travel
        self.flags["policy_route"] = {"from": self.provider, "to": provider}
        self.provider = provider
        reply.set_headers["x-llmproxy-provider"] = provider
        reply.clear_route_cache = True
        return self._scope_and_credentials(reply, model)

    async def _feedback(self, doc: Any) -> Immediate:
        """The gateway answers POST /v1/feedback itself; the feedback table is its record."""
        if self.ctx.feedback is None:
            return self._answer(
                gateway_error(503, "llmproxy: feedback is not available (no pattern memory)", code="feedback_unavailable"),
                record=False,
            )
        try:
            fid = await asyncio.wait_for(self.ctx.feedback.submit(doc), timeout=5)
        except ValueError as exc:
            return self._answer(gateway_error(400, f"llmproxy: invalid feedback: {exc}", code="invalid_feedback"), record=False)
        except Exception as exc:  # noqa: BLE001 - database away: the client should retry, nothing was stored
            log.warning("feedback not stored: %s", type(exc).__name__)
            return self._answer(
                gateway_error(503, "llmproxy: feedback could not be stored right now; retry", code="feedback_unavailable"),
                record=False,
            )
        body = json.dumps({"ok": True, "feedback_id": fid, "request_id": doc.get("request_id")}).encode()
        return self._answer(Immediate(status=202, body=body, details="llmproxy_feedback"), record=False)

    def _scope_only(self, model: Any) -> Immediate | None:
        scope = check_scope(self.auth, self.provider, model)
        return None if scope.ok else self._answer(scope.immediate(_api_of(self.rel_path)))

    def _scope_and_credentials(self, reply: Reply, model: Any, *, model_known: bool = True) -> Immediate | None:
        """Once the provider is known: the key's scope, then whose credential goes upstream."""
        if self.auth.key is not None:
            scope = check_scope(self.auth, self.provider, model if model_known else None)
            if not scope.ok:
                return self._answer(scope.immediate(_api_of(self.rel_path)))
            if not self.ctx.settings.provider_keys.get(self.provider or ""):
                return self._answer(
                    gateway_error(
                        503,
                        f"llmproxy: no provider key is configured for {self.provider} "
                        f"(set {_KEY_ENV_HINT.get(self.provider or '', 'the provider key')})",
                        api=_api_of(self.rel_path),
                        code="provider_key_missing",
                    )
                )
        self._inject_credentials(reply)
        return None

    def _inject_credentials(self, reply: Reply) -> None:
        key = self.ctx.settings.provider_keys.get(self.provider or "")
        if not key:
            return  # passthrough: the client's own Authorization / x-api-key goes upstream
        reply.remove_headers.extend(h for h in ("authorization", "x-api-key") if h in self.headers)
        header = _AUTH_HEADER[self.provider]
        reply.set_headers[header] = f"Bearer {key}" if header == "authorization" else key
        self.flags["credentials"] = "injected"

    def _derive_session(self) -> str:
        """No x-session-id: a conversation resends its opening turns, so they identify it."""
        opening = getattr(self.view, "first_user", None) or getattr(self.view, "last_user", None) or ""
        system = getattr(self.view, "system", None) or ""
        seed = f"{self.key_fp or self.client_addr}|{system[:2000]}|{opening[:2000]}"
        return "s_" + hashlib.sha256(seed.encode("utf-8", "replace")).hexdigest()[:16]

    # ------------------------------------------------------------------ response
    def _response_headers(self, ev: Headers) -> Reply:
        h = ev.headers
        try:
            self.status = int(h.get(":status", "0"))
        except ValueError:
            self.status = None
        if "x-envoy-upstream-service-time" in h:
            try:
                self.upstream_ms = float(h["x-envoy-upstream-service-time"])
            except ValueError:
                pass
        ctype = h.get("content-type", "")
        reply = Reply(set_headers={"x-llmproxy-request-id": self.request_id})
        active = self.codec is not None and self.codec.active
        streamed = "text/event-stream" in ctype or "ndjson" in ctype
        if self.ctx.guard is not None and self.guarded is not None and self.endpoint is not None and not ev.end_of_stream:
            self.screen = self.ctx.guard.screen_response(
                self.guarded,
                request_id=self.request_id,
                key=self.auth.key,
                api=getattr(self.view, "api", None),
                status=self.status,
                streamed=streamed,
            )
        if self.endpoint is not None and streamed:
            self.streamed = True
            self.stream_proc = self.endpoint.stream(self.codec if active else None)
            if self.screen is not None:
                self.mask_stage, self.restore_stage = self.screen.stream_stages()
            if active or self.mask_stage is not None or self.restore_stage is not None:
                reply.remove_headers.append("content-length")
        elif self.endpoint is not None and "json" in ctype and (active or (self.screen is not None and self.screen.needs_body)):
            self.rewrite_response = True  # tool names to restore or a response screen: take the JSON whole
            reply.buffer_response_body = True
            reply.remove_headers.append("content-length")
        if ev.end_of_stream:
            self.finish()
        return reply

    def _response_body(self, ev: BodyChunk) -> Reply | Immediate:
        if self.ttft_ms is None and ev.data:
            self.ttft_ms = (time.monotonic() - self.t0) * 1000
        reply = Reply()
        if self.stream_proc is not None:
            data = ev.data
            if self.mask_stage is not None:  # the log never sees what the model produced and was masked
                data = self.mask_stage.feed(data) + (self.mask_stage.end() if ev.end_of_stream else b"")
            self._keep(self.resp_upstream, data)
            out = self.stream_proc.feed(data)
            if ev.end_of_stream:
                out += self.stream_proc.end()
            self._keep(self.resp_client, out)  # placeholders, not the restored values
            if self.restore_stage is not None:
                out = self.restore_stage.feed(out) + (self.restore_stage.end() if ev.end_of_stream else b"")
            if out != ev.data:
                reply.body = out
            if ev.end_of_stream and self.screen is not None:
                text = self.stream_proc.result().text if self.screen.snapshot.response_rules else None
                self.screen.finish_stream(text, len(self.resp_upstream))
        elif self.rewrite_response:
            refused = self._rewrite_json_response(ev, reply)
            if refused is not None:
                return refused  # the gateway's refusal replaces the buffered response
        else:
            self._keep(self.resp_upstream, ev.data)
            self._keep(self.resp_client, ev.data)
        if ev.end_of_stream:
            if self.screen is not None:
                screened = self.screen.record()
                if screened is not None:
                    self.flags["response_policy"] = screened
            self.finish()
        return reply

    def _rewrite_json_response(self, ev: BodyChunk, reply: Reply) -> Immediate | None:
        """A buffered JSON response: tool names restored, then the response screen (mask, edit, restore);
        the refusal when a `phase: response` rule blocks it."""
        doc = _parse_json(ev.data)
        upstream = logged = client = None
        if isinstance(doc, dict):
            if self.codec is not None and self.codec.active and self.endpoint.restore_response(doc, self.codec):
                logged = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
            if self.screen is not None:
                try:
                    screened = self.screen.rewrite_json(doc, len(ev.data))
                except Exception:  # what must be masked or may be refused never goes out unscreened
                    log.exception("request %s: response screen failed", self.request_id)
                    if not (self.screen.masking or self.screen.snapshot.response_rules):
                        raise  # only restore/edits were asked: the containment in handle() passes it through
                    self._keep(self.resp_upstream, ev.data)
                    return self._answer(
                        gateway_error(
                            502,
                            "llmproxy: the response could not be screened",
                            api=_api_of(self.rel_path),
                            code="response_screen_error",
                        )
                    )
                if screened.block is not None:
                    self._keep(self.resp_upstream, ev.data)
                    self.flags["response_policy"] = self.screen.record() or {}
                    return self._answer(screened.block)
                upstream = screened.upstream
                logged = screened.logged or logged
                client = screened.client
        client = client or logged
        if client is not None:
            reply.body = client
        self._keep(self.resp_upstream, upstream if upstream is not None else ev.data)
        self._keep(self.resp_client, logged if logged is not None else ev.data)
        return None

    def _keep(self, buf: bytearray, data: bytes) -> None:
        room = self.ctx.settings.log_body_max - len(buf)
        if room <= 0:
            self.resp_truncated = self.resp_truncated or bool(data)
            return
        buf += data[:room]
        if len(data) > room:
            self.resp_truncated = True

    # ------------------------------------------------------------------ ending
    def _answer(self, imm: Immediate, *, record: bool = True) -> Immediate:
        imm.headers["x-llmproxy-request-id"] = self.request_id
        self.status = imm.status
        self.immediate_body = imm.body
        self.error = imm.details
        if record:
            self.finish()
        else:
            self.finished = True
        return imm

    def abort(self, reason: str) -> None:
        """The gRPC stream ended before the exchange did (client gone, Envoy reset)."""
        if not self.finished and self.request_id:
            self.ctx.stats["aborted"] += 1
            self.error = self.error or reason
            self.finish()

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.ctx.stats["exchanges"] += 1
        try:
            record = self._record()
        except Exception:
            log.exception("request %s: building the record failed", self.request_id)
            return
        self.ctx.recorder.submit(record)
        if self.auth.key_id is not None and self.ctx.meter is not None:
            self.ctx.meter.record(self.auth.key_id, record.usage.total_tokens or 0)

    def _fold(self):
        if self.endpoint is None:
            return None
        try:
            if self.stream_proc is not None:
                return self.stream_proc.result()
            doc = _parse_json(bytes(self.resp_client))
            if isinstance(doc, dict):
                return self.endpoint.fold(doc)
        except Exception:
            log.exception("request %s: folding the response failed", self.request_id)
        return None

    def _record(self) -> ExchangeRecord:
        now = time.monotonic()
        folded = self._fold()
        view = self.view
        usage = folded.usage if folded is not None else Usage()
        limit = self.ctx.settings.log_body_max
        resp_client: Body | None
        if self.immediate_body is not None:
            resp_client = _body(self.immediate_body, limit)
        elif folded is not None and self.streamed:
            resp_client = Body(json=folded.message, size=len(self.resp_client), truncated=self.resp_truncated)
        else:
            resp_client = _body(bytes(self.resp_client), limit, self.resp_truncated) if self.status is not None else None
        tool_invalid = 0
        if folded is not None and folded.tool_calls:
            tool_invalid = invalid_calls(folded.tool_calls, self.tool_schemas)
        error = self.error or (folded.error if folded is not None else None)
        if error is None and self.status is not None and self.status >= 400:
            error = f"HTTP {self.status}"
        return ExchangeRecord(
            request_id=self.request_id,
            started_at=self.started_at,
            finished_at=datetime.now(UTC),
            method=self.method,
            path=self.path,
            session_id=self.session_id,
            client_key_fp=self.key_fp,
            client_addr=self.client_addr,
            provider=self.provider,
            model=getattr(view, "model", None)
            or (folded.message.get("model") if folded and isinstance(folded.message, dict) else None),
            api=getattr(view, "api", None) or _api_of(self.rel_path),
            route=self.route,
            status=self.status,
            streamed=self.streamed,
            latency_ms=(now - self.t0) * 1000,
            ttft_ms=self.ttft_ms,
            upstream_ms=self.upstream_ms,
            usage=usage,
            request_client=_body(self.request_logged or self.request_client, limit) if self.request_client else None,
            request_forwarded=_body(self.request_forwarded, limit)
            if self.request_forwarded is not None
            else (_body(self.request_client, limit) if self.request_client else None),
            response_upstream=_body(bytes(self.resp_upstream), limit, self.resp_truncated) if self.resp_upstream else None,
            response_client=resp_client,
            tool_names=tuple(getattr(view, "tool_names", ()) or ()),
            prompt_system=getattr(view, "system", None),
            prompt_user=getattr(view, "last_user", None),
            tool_args_invalid=tool_invalid,
            tool_aliases=dict(self.codec.mapping) if self.codec is not None else {},
            finish_reason=folded.finish_reason if folded is not None else None,
            error=error,
            request_headers=safe_headers(self.headers),
            flags=self.flags,
        )


def _client_addr(ev: Headers) -> str | None:
    addr = ev.attributes.get("source.address") or ev.headers.get("x-forwarded-for", "").split(",")[0].strip()
    if not addr:
        return None
    if addr.count(":") == 1:  # ipv4:port
        return addr.split(":")[0]
    if addr.startswith("[") and "]:" in addr:
        return addr[1 : addr.index("]")]
    return addr


def _parse_json(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # bad JSON, invalid UTF-8, depth bombs
        return None


def _body(data: bytes | None, limit: int, truncated: bool = False) -> Body | None:
    if data is None:
        return None
    size = len(data)
    if size <= limit:
        doc = _parse_json(data)
        if doc is not None:
            return Body(json=doc, size=size, truncated=truncated)
    text = data[:limit].decode("utf-8", "replace")
    return Body(text=text, size=size, truncated=truncated or size > limit)


_API_BY_PATH = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "messages",
    "/v1/completions": "completions",
    "/api/chat": "ollama_chat",
    "/api/generate": "ollama_generate",
}


def _api_of(rel_path: str) -> str | None:
    return _API_BY_PATH.get(rel_path.removeprefix("/api") if rel_path.startswith("/api/v1/") else rel_path)
