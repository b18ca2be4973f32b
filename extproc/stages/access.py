"""Access: where the request goes and who is sending it.

Request headers: the route (provider prefix, unified, feedback, legacy ``target_url``, unknown), the
client's identity, gateway keys (401/403/429 before the body is read, from the in-memory snapshot)
and which operations the operator's credential may reach. Request body: the JSON is parsed once
into ``ex.request.doc`` and the adapter's typed view; on unified routes the ``model`` picks the
provider. A model call whose body cannot be read is refused: it would reach the provider unscreened.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

from ..auth import authenticate, budget_refusal, gateway_key_headers, key_fingerprint
from ..context import Context
from ..errors import gateway_error
from ..exchange import Exchange, Route, parse_json
from ..legacy import LegacyTargets, TargetRefused
from ..pipeline import Failure
from ..providers.registry import PROVIDERS, endpoint_for, operation_allowed
from ..routing import UNIFIED_PATHS, split_provider_prefix
from ..wire import Immediate

FEEDBACK_PATHS = frozenset({"/v1/feedback", "/feedback"})
_UTF8_BOM = b"\xef\xbb\xbf"


class AccessStage:
    name: ClassVar[str] = "access"
    failure: ClassVar[Failure] = Failure.CLOSED

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.legacy = LegacyTargets(ctx.settings.legacy_allowlist)

    async def request_headers(self, ex: Exchange) -> Immediate | None:
        req = ex.request
        h = req.headers
        # Envoy strips every client-sent x-llmproxy-* header before ext_proc (envoy.yaml); strip them
        # again here so routing never trusts one even under an operator's own Envoy config.
        ex.reply.remove_headers += [k for k in h if k.startswith("x-llmproxy-")] + ["accept-encoding"]
        ex.reply.clear_route_cache = any(k.startswith("x-llmproxy-") for k in h)
        ex.client = key_fingerprint(h)
        ex.session_id = h.get("x-session-id") or None

        provider, rel = split_provider_prefix(req.path)
        if provider:
            req.route, req.provider, req.rel_path = Route.PREFIX, provider, rel
        elif rel in UNIFIED_PATHS:
            req.route, req.rel_path = Route.UNIFIED, rel
        elif rel in FEEDBACK_PATHS:
            req.route, req.rel_path = Route.FEEDBACK, rel
        elif rel == "/" and "target_url" in (query := parse_qs(urlsplit(req.path).query, keep_blank_values=True)):
            req.route = Route.LEGACY
        else:
            req.rel_path = rel

        # Gateway keys: decided here, before the body is read, with no database round trip.
        ex.reply.remove_headers.extend(gateway_key_headers(h))
        ex.auth = authenticate(h, self.ctx.key_snapshot, ex.started_at, self.ctx.auth_mode, self.ctx.settings.key_max_staleness_s)
        if not ex.auth.ok:
            return ex.auth.immediate(ex.api)
        if ex.auth.key_id is not None:
            ex.client = ex.auth.key_id  # the client is the gateway key, not a provider-key hash
            meter = self.ctx.meter
            exceeded = meter.admit(ex.auth.key_id) if meter is not None else None
            if exceeded is not None:
                return budget_refusal(exceeded, ex.auth.key_id).immediate(ex.api)
        if req.route is Route.LEGACY:  # after authentication: an anonymous client learns nothing of the allowlist
            refused = await self._legacy(ex, query["target_url"][0])
            if refused is not None:
                return refused
        req.endpoint = endpoint_for(req.rel_path, req.method) if req.rel_path else None
        if req.route is Route.PREFIX and self._operator_credential(ex):
            if not operation_allowed(req.provider, req.method, req.rel_path):
                return gateway_error(
                    403,
                    f"llmproxy: {req.method} {req.rel_path} is not an operation this gateway forwards with its own "
                    f"{req.provider} credential (model calls and model listing only)",
                    api=ex.api,
                    code="operation_not_allowed",
                )
        return None

    async def request_body(self, ex: Exchange) -> Immediate | None:
        req = ex.request
        if req.route is Route.FEEDBACK:
            req.doc = _object(parse_json(_strip_bom(req.body)))
            return None
        if req.route is Route.UNIFIED:
            return self._unified(ex)
        if req.endpoint is None or not req.body:
            req.not_json = bool(req.body) and _object(parse_json(_strip_bom(req.body))) is None
            return None
        doc = _object(parse_json(_strip_bom(req.body)))
        if doc is None:
            # What the gateway cannot read it cannot screen: a model call must not pass through unread.
            req.not_json = True
            return gateway_error(
                400, "llmproxy: the request body must be a JSON object (valid UTF-8)", api=ex.api, code="invalid_json"
            )
        self._parsed(ex, doc)
        return None

    # ------------------------------------------------------------------ helpers
    def _unified(self, ex: Exchange) -> Immediate | None:
        req = ex.request
        if not req.body:
            return gateway_error(400, "llmproxy: this route needs a JSON body with a `model`", api=ex.api, code="body_required")
        doc = _object(parse_json(_strip_bom(req.body)))
        if doc is None:
            req.not_json = True
            hint = "" if "json" in req.headers.get("content-type", "") else " (content-type is not application/json)"
            return gateway_error(
                400, "llmproxy: request body must be a JSON object with a `model` field" + hint, api=ex.api, code="invalid_json"
            )
        model = doc.get("model")
        provider = self.ctx.router.provider_for(model)
        if provider is None:
            return gateway_error(
                400, f"llmproxy: unknown model {model!r}: no provider route matches it", api=ex.api, code="unknown_model"
            )
        req.provider = provider
        ex.reply.set_headers["x-llmproxy-provider"] = provider
        ex.reply.clear_route_cache = True
        if req.endpoint is not None:
            self._parsed(ex, doc)
        return None

    @staticmethod
    def _parsed(ex: Exchange, doc: dict) -> None:
        assert ex.request.endpoint is not None
        ex.request.doc = doc
        ex.request.view = ex.request.endpoint.parse_request(doc)

    def _operator_credential(self, ex: Exchange) -> bool:
        """Will the operator's credential, not the client's own, go upstream for this request?"""
        return ex.auth.key is not None or bool(self.ctx.settings.provider_keys.get(ex.request.provider or ""))

    async def _legacy(self, ex: Exchange, target_url: str) -> Immediate | None:
        """Legacy debug-proxy parity: POST /?target_url=URL, to allowlisted destinations only."""
        try:
            target = await self.legacy.approve(target_url)
        except TargetRefused as exc:
            return gateway_error(exc.status, str(exc), code=exc.code)
        req = ex.request
        req.rel_path = target.path.split("?", 1)[0]
        req.provider = "legacy"
        ex.reply.set_headers.update(
            {":path": target.path, "x-llmproxy-legacy": target.scheme, "x-llmproxy-target-host": target.authority}
        )
        ex.reply.clear_route_cache = True
        return None


def _strip_bom(data: bytearray) -> bytes:
    # A BOM is legal at the start of a JSON text for some parsers: read it the way a provider would.
    raw = bytes(data)
    return raw[len(_UTF8_BOM) :] if raw.startswith(_UTF8_BOM) else raw


def _object(doc: object) -> dict | None:
    return doc if isinstance(doc, dict) else None


__all__ = ["FEEDBACK_PATHS", "PROVIDERS", "AccessStage"]
