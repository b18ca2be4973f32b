"""Gateway-key decisions on the hot path, from the in-memory key snapshot: no database round trip.

:func:`check_key` / :func:`authenticate` answer the request-headers phase from the snapshot alone
(401 before the body is read); :func:`check_scope` answers once provider and model are known (403);
:func:`budget_refusal` turns a budget the key ran out of into its 429. The snapshot and the shared
budgets live in :mod:`intelligence.keys.cache` and :mod:`intelligence.keys.meter`. When the database is
away the last snapshot and the last totals stay in force (plus local counts): a revocation made during
an outage takes effect when the database is back.
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from intelligence.keys.cache import KeyInfo, KeySnapshot
from intelligence.keys.material import KEY_SCHEME, MAX_KEY_LEN, PREFIX_LEN
from intelligence.keys.meter import Exceeded

from .errors import gateway_error
from .wire import Immediate

log = logging.getLogger("llmproxy.auth")

# Headers a client may carry its credential in (Envoy hands them over lower-cased).
CREDENTIAL_HEADERS = ("authorization", "x-api-key")


class AuthMode(str, enum.Enum):
    PASSTHROUGH = "passthrough"  # client provider keys go upstream; a gateway key, if sent, is still checked
    REQUIRED = "required"  # every request needs a gateway key; provider keys come from the operator

    @classmethod
    def parse(cls, value: str) -> AuthMode:
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValueError(f"auth mode {value!r}: use one of {', '.join(m.value for m in cls)}") from None


# ---------------------------------------------------------------------------------------- decisions
@dataclass(frozen=True, slots=True)
class AuthDecision:
    ok: bool
    status: int = 200
    message: str = ""
    key_id: str | None = None  # the gateway key, when one authenticated this request
    code: str | None = None  # machine-readable reason (the error `code` the client sees)
    key: KeyInfo | None = None
    retry_after: int | None = None  # seconds, for 429

    def immediate(self, api: str | None = None) -> Immediate:
        """The refusal as an answer in the calling API's error format (only for ``ok=False``)."""
        imm = gateway_error(self.status, self.message, api=api, code=self.code)
        if self.retry_after is not None:
            imm.headers["retry-after"] = str(self.retry_after)
        return imm


PASSTHROUGH = AuthDecision(ok=True, message="passthrough: no gateway key presented")


def _deny(status: int, code: str, message: str, key: KeyInfo | None = None, retry_after: int | None = None) -> AuthDecision:
    return AuthDecision(
        ok=False,
        status=status,
        message=message,
        code=code,
        key=key,
        key_id=key.id if key is not None else None,
        retry_after=retry_after,
    )


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), "")
    return value.strip()


def presented_credential(headers: Mapping[str, str]) -> str | None:
    """The credential the client sent: a gateway key if any header carries one, else whatever is there."""
    found = [value for _, value in _credentials(headers)]
    return next((v for v in found if v.startswith(KEY_SCHEME)), found[0] if found else None)


def gateway_key_headers(headers: Mapping[str, str]) -> list[str]:
    """Names of the headers that carry a gateway key: they must be removed before the request goes upstream."""
    return [name for name, value in _credentials(headers) if value.startswith(KEY_SCHEME)]


def _credentials(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    out = []
    for name in CREDENTIAL_HEADERS:
        value = _header(headers, name)
        if name == "authorization":
            scheme, _, rest = value.partition(" ")
            if scheme.lower() == "bearer":
                value = rest.strip()
        if value:
            out.append((name, value))
    return out


def check_key(
    headers: Mapping[str, str], snapshot: KeySnapshot, now: datetime, max_staleness: float | None = None
) -> AuthDecision:
    """Authenticate a request that must carry a gateway key (``Authorization: Bearer llmp_...`` or ``x-api-key``)."""
    token = presented_credential(headers)
    if token is None:
        return _deny(
            401,
            "missing_gateway_key",
            "llmproxy: this gateway requires a gateway key (send `Authorization: Bearer llmp_...` or `x-api-key: llmp_...`)",
        )
    if not token.startswith(KEY_SCHEME):
        return _deny(
            401,
            "invalid_gateway_key",
            "llmproxy: provider API keys are not accepted by this gateway; "
            "use a gateway key (llmp_...) issued with `llmproxy keys create`",
        )
    if len(token) > MAX_KEY_LEN:
        return _deny(401, "invalid_gateway_key", "llmproxy: invalid gateway key")
    if snapshot.loaded_at is None:
        return _deny(
            503,
            "key_store_unavailable",
            "llmproxy: gateway keys are not loaded yet (database unavailable); retry shortly",
            retry_after=2,
        )
    if max_staleness is not None and (now - snapshot.loaded_at).total_seconds() > max_staleness:
        # A revocation made since the last load would not be seen: past the bound, refuse rather than guess.
        return _deny(
            503,
            "key_store_stale",
            f"llmproxy: gateway keys have not been refreshed for over {max_staleness:.0f} s (database unavailable); "
            "retry shortly",
            retry_after=5,
        )
    info = snapshot.lookup(token)
    if info is None:
        return _deny(401, "invalid_gateway_key", f"llmproxy: invalid gateway key {token[:PREFIX_LEN]}…")
    if info.revoked:
        return _deny(401, "key_revoked", f"llmproxy: gateway key {info.label} has been revoked", info)
    if info.expires_at is not None and info.expires_at <= now:
        return _deny(401, "key_expired", f"llmproxy: gateway key {info.label} expired at {info.expires_at.isoformat()}", info)
    if info.quarantined:
        return _deny(
            403, "key_quarantined", f"llmproxy: gateway key {info.label} is quarantined; an administrator must release it", info
        )
    return AuthDecision(ok=True, key_id=info.id, key=info, message=f"gateway key {info.label}")


def authenticate(
    headers: Mapping[str, str], snapshot: KeySnapshot, now: datetime, mode: AuthMode, max_staleness: float | None = None
) -> AuthDecision:
    """The request-headers decision for the configured mode.

    passthrough: requests without a gateway key go on untouched (:data:`PASSTHROUGH`); one that does
    present a gateway key is checked like in required mode, so a revoked key never slips through.
    ``max_staleness`` (seconds): a key snapshot older than that refuses every key (503).
    """
    if mode is AuthMode.PASSTHROUGH:
        token = presented_credential(headers)
        if token is None or not token.startswith(KEY_SCHEME):
            return PASSTHROUGH
    return check_key(headers, snapshot, now, max_staleness)


def check_scope(
    target: AuthDecision | KeyInfo | None, provider: str | None, model: Any, also: Sequence[Any] = ()
) -> AuthDecision:
    """May this key use ``provider`` / ``model``, and every model in ``also`` (fallback lists such as
    OpenRouter's ``models``)? Call once all are known (after routing and any model rewrite).

    A request with no model (e.g. listing models) is only checked against the provider scope. A
    provider that could not be determined fails a provider-scoped key.
    """
    if isinstance(target, AuthDecision):
        if not target.ok or target.key is None:
            return target
        key = target.key
    elif target is None:
        return PASSTHROUGH
    else:
        key = target
    decision = AuthDecision(ok=True, key_id=key.id, key=key, message=f"gateway key {key.label}")
    if key.providers:
        name = (provider or "").lower()
        if name not in key.providers:
            what = f"provider {provider!r}" if provider else "a request whose provider could not be determined"
            return _deny(
                403,
                "provider_not_allowed",
                f"llmproxy: gateway key {key.label} may not use {what}; allowed providers: {', '.join(key.providers)}",
                key,
            )
    if key.models:
        for candidate in ([model] if model is not None else []) + list(also):
            name = str(candidate)
            if not any(fnmatch.fnmatchcase(name.lower(), pattern) for pattern in key.models):
                shown = name if len(name) <= 200 else name[:200] + "…"
                return _deny(
                    403,
                    "model_not_allowed",
                    f"llmproxy: gateway key {key.label} may not use model {shown!r}; allowed models: {', '.join(key.models)}",
                    key,
                )
    return decision


def budget_refusal(exceeded: Exceeded, key_id: str) -> AuthDecision:
    """A key over one of its budgets (:meth:`intelligence.keys.meter.UsageMeter.admit`): 429 with retry-after."""
    return AuthDecision(
        ok=False, status=429, message=exceeded.message, key_id=key_id, code="budget_exceeded", retry_after=exceeded.retry_after
    )


def key_fingerprint(headers: Mapping[str, str]) -> str | None:
    """A stable, non-reversible identity for the client's credential (never the key itself)."""
    raw = headers.get("x-api-key") or headers.get("authorization", "")
    raw = raw.removeprefix("Bearer ").removeprefix("bearer ").strip()
    if not raw:
        return None
    return "key_" + hashlib.sha256(raw.encode()).hexdigest()[:16]
