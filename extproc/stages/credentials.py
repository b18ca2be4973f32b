"""Credentials: the gateway key's scope on the final provider and models, then whose key goes upstream.

Runs once the request is complete and every stage that may change the provider or the model (the
policy's ``route``, a model rewrite) has run. A gateway key must cover the provider and every model
the request may reach (OpenRouter's ``models`` fallback list included). With an operator key
configured for the provider (``LLMPROXY_<PROVIDER>_API_KEY``), it replaces the client's credential;
otherwise the client's own passes through (passthrough mode).
"""

from __future__ import annotations

from typing import ClassVar

from ..auth import check_scope
from ..context import Context
from ..errors import gateway_error
from ..exchange import Exchange, Route
from ..pipeline import Failure
from ..providers.registry import PROVIDERS
from ..wire import Immediate

_CLIENT_CREDENTIALS = ("authorization", "x-api-key")


class CredentialsStage:
    name: ClassVar[str] = "credentials"
    failure: ClassVar[Failure] = Failure.CLOSED

    def __init__(self, ctx: Context) -> None:
        self.keys = ctx.settings.provider_keys

    async def request_body(self, ex: Exchange) -> Immediate | None:
        req = ex.request
        if req.route not in (Route.PREFIX, Route.UNIFIED):
            return None
        provider = PROVIDERS.get(req.provider or "")
        if ex.auth.key is not None:
            view = req.view
            model = req.doc.get("model") if req.doc is not None else None
            scope = check_scope(ex.auth, req.provider, model, view.fallback_models if view is not None else ())
            if not scope.ok:
                return scope.immediate(ex.api)
            if provider is None or not self.keys.get(provider.name):
                hint = provider.key_env if provider is not None else "the provider key"
                return gateway_error(
                    503,
                    f"llmproxy: no provider key is configured for {req.provider} (set {hint})",
                    api=ex.api,
                    code="provider_key_missing",
                )
        key = self.keys.get(provider.name) if provider is not None else None
        if provider is None or not key:
            return None  # passthrough: the client's own Authorization / x-api-key goes upstream
        ex.reply.remove_headers.extend(h for h in _CLIENT_CREDENTIALS if h in req.headers)
        header, value = provider.credential(key)
        ex.reply.set_headers[header] = value
        ex.notes.credentials = "injected"
        return None
