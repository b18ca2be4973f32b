"""Hot-path authentication as pure functions: check_key, authenticate, check_scope on a snapshot."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from extproc.auth import (
    PASSTHROUGH,
    AuthDecision,
    AuthMode,
    authenticate,
    check_key,
    check_scope,
    gateway_key_headers,
    presented_credential,
)
from intelligence.keys.cache import KeyInfo, KeySnapshot
from intelligence.keys.material import Budgets, generate_key, hash_key, key_prefix, parse_expiry, split_list
from intelligence.keys.store import KeyRecord

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

ACTIVE, REVOKED, EXPIRED, QUARANTINED, SCOPED = (generate_key() for _ in range(5))


def _info(key: str, key_id: str, **kw) -> tuple[str, KeyInfo]:
    return hash_key(key), KeyInfo(id=key_id, name=key_id.removeprefix("gk_"), prefix=key_prefix(key), **kw)


SNAPSHOT = KeySnapshot.build(
    [
        _info(ACTIVE, "gk_active", budgets=Budgets(rpm=5)),
        _info(REVOKED, "gk_revoked", revoked=True),
        _info(EXPIRED, "gk_expired", expires_at=NOW - timedelta(seconds=1)),
        _info(QUARANTINED, "gk_quarantined", quarantined=True),
        _info(
            SCOPED,
            "gk_scoped",
            models=("gpt-4o*", "claude-*"),
            providers=("openai", "anthropic"),
            expires_at=NOW + timedelta(days=1),
        ),
    ],
    loaded_at=NOW,
)


@pytest.mark.parametrize(
    ("headers", "status", "code", "key_id"),
    [
        ({"authorization": f"Bearer {ACTIVE}"}, 200, None, "gk_active"),
        ({"authorization": f"bearer  {ACTIVE} "}, 200, None, "gk_active"),
        ({"Authorization": f"Bearer {ACTIVE}"}, 200, None, "gk_active"),
        ({"x-api-key": ACTIVE}, 200, None, "gk_active"),
        ({"authorization": "Bearer sk-provider", "x-api-key": ACTIVE}, 200, None, "gk_active"),
        ({"authorization": f"Bearer {SCOPED}"}, 200, None, "gk_scoped"),
        ({}, 401, "missing_gateway_key", None),
        ({"authorization": "Bearer "}, 401, "missing_gateway_key", None),
        ({"authorization": "Bearer sk-proj-abc"}, 401, "invalid_gateway_key", None),
        ({"x-api-key": "sk-ant-abc"}, 401, "invalid_gateway_key", None),
        ({"authorization": "Bearer llmp_unknown"}, 401, "invalid_gateway_key", None),
        ({"authorization": "Bearer " + ACTIVE + "x"}, 401, "invalid_gateway_key", None),
        ({"authorization": "Bearer llmp_" + "a" * 5000}, 401, "invalid_gateway_key", None),
        ({"authorization": f"Bearer {ACTIVE}, Bearer {REVOKED}"}, 401, "invalid_gateway_key", None),  # repeated header
        ({"authorization": f"Bearer {REVOKED}"}, 401, "key_revoked", "gk_revoked"),
        ({"x-api-key": EXPIRED}, 401, "key_expired", "gk_expired"),
        ({"authorization": f"Bearer {QUARANTINED}"}, 403, "key_quarantined", "gk_quarantined"),
    ],
)
def test_check_key(headers: dict[str, str], status: int, code: str | None, key_id: str | None) -> None:
    decision = check_key(headers, SNAPSHOT, NOW)
    assert (decision.ok, decision.status, decision.code, decision.key_id) == (status == 200, status, code, key_id)
    for secret in (ACTIVE, REVOKED, EXPIRED, QUARANTINED, SCOPED):
        assert secret not in decision.message  # a key is never echoed, only its prefix


def test_expiry_is_exact_to_now() -> None:
    headers = {"x-api-key": SCOPED}
    assert check_key(headers, SNAPSHOT, NOW + timedelta(days=1) - timedelta(microseconds=1)).ok
    assert check_key(headers, SNAPSHOT, NOW + timedelta(days=1)).code == "key_expired"


def test_snapshot_never_loaded_is_503() -> None:
    decision = check_key({"x-api-key": ACTIVE}, KeySnapshot.empty(), NOW)
    assert (decision.status, decision.code, decision.retry_after) == (503, "key_store_unavailable", 2)
    assert check_key({}, KeySnapshot.empty(), NOW).status == 401  # no credential at all: still 401


@pytest.mark.parametrize(
    ("mode", "headers", "status", "key_id"),
    [
        (AuthMode.PASSTHROUGH, {}, 200, None),
        (AuthMode.PASSTHROUGH, {"authorization": "Bearer sk-provider"}, 200, None),
        (AuthMode.PASSTHROUGH, {"authorization": f"Bearer {ACTIVE}"}, 200, "gk_active"),
        (AuthMode.PASSTHROUGH, {"authorization": f"Bearer {REVOKED}"}, 401, "gk_revoked"),
        (AuthMode.PASSTHROUGH, {"x-api-key": "llmp_forged"}, 401, None),
        (AuthMode.REQUIRED, {}, 401, None),
        (AuthMode.REQUIRED, {"authorization": "Bearer sk-provider"}, 401, None),
        (AuthMode.REQUIRED, {"x-api-key": ACTIVE}, 200, "gk_active"),
    ],
)
def test_authenticate_modes(mode: AuthMode, headers: dict[str, str], status: int, key_id: str | None) -> None:
    decision = authenticate(headers, SNAPSHOT, NOW, mode)
    assert (decision.status, decision.key_id) == (status, key_id)
    if mode is AuthMode.PASSTHROUGH and key_id is None and status == 200:
        assert decision is PASSTHROUGH


def test_auth_mode_parse() -> None:
    assert AuthMode.parse(" Required ") is AuthMode.REQUIRED and AuthMode.parse("passthrough") is AuthMode.PASSTHROUGH
    with pytest.raises(ValueError, match="passthrough, required"):
        AuthMode.parse("open")


SCOPED_OK = check_key({"x-api-key": SCOPED}, SNAPSHOT, NOW)


@pytest.mark.parametrize(
    ("provider", "model", "status", "code"),
    [
        ("openai", "gpt-4o-mini", 200, None),
        ("OpenAI", "GPT-4o", 200, None),
        ("anthropic", "claude-3-5-sonnet-latest", 200, None),
        ("openai", None, 200, None),  # no model in the request (e.g. GET /v1/models): provider scope only
        ("openai", "gpt-3.5-turbo", 403, "model_not_allowed"),
        ("openai", "o1", 403, "model_not_allowed"),
        ("openai", 42, 403, "model_not_allowed"),
        ("openrouter", "gpt-4o", 403, "provider_not_allowed"),
        (None, "gpt-4o", 403, "provider_not_allowed"),
    ],
)
def test_check_scope(provider: str | None, model: object, status: int, code: str | None) -> None:
    decision = check_scope(SCOPED_OK, provider, model)
    assert (decision.status, decision.code) == (status, code)
    assert decision.key_id == "gk_scoped"
    if code == "model_not_allowed":
        assert repr(str(model)) in decision.message and "gpt-4o*, claude-*" in decision.message
    if code == "provider_not_allowed":
        assert "openai, anthropic" in decision.message


def test_check_scope_passes_through_what_is_not_a_scoped_key() -> None:
    assert check_scope(PASSTHROUGH, "openrouter", "anything") is PASSTHROUGH
    assert check_scope(None, "openrouter", "anything") is PASSTHROUGH
    refused = check_key({}, SNAPSHOT, NOW)
    assert check_scope(refused, "openai", "gpt-4o") is refused
    unscoped = SNAPSHOT.by_id["gk_active"]
    assert check_scope(unscoped, "anything", "any-model").ok
    long_model = "gpt-" + "x" * 500
    msg = check_scope(SNAPSHOT.by_id["gk_scoped"], "openai", long_model.replace("gpt-", "mistral-")).message
    assert len(msg) < 400 and msg.count("x") < 250


def test_refusals_render_in_the_callers_error_format() -> None:
    decision = check_key({"x-api-key": REVOKED}, SNAPSHOT, NOW)
    openai_style = decision.immediate("chat")
    doc = json.loads(openai_style.body)
    assert openai_style.status == 401 and doc["error"]["type"] == "authentication_error" and doc["error"]["code"] == "key_revoked"
    anthropic_style = json.loads(decision.immediate("messages").body)
    assert anthropic_style["type"] == "error" and anthropic_style["error"]["type"] == "authentication_error"
    assert "retry-after" not in openai_style.headers


def test_credential_helpers() -> None:
    assert presented_credential({"authorization": "Bearer sk-1", "x-api-key": "sk-2"}) == "sk-1"
    assert presented_credential({"x-api-key": " llmp_abc "}) == "llmp_abc"
    assert presented_credential({"cookie": "a"}) is None
    assert gateway_key_headers({"authorization": f"Bearer {ACTIVE}", "x-api-key": "sk-ant"}) == ["authorization"]
    assert gateway_key_headers({"x-api-key": ACTIVE}) == ["x-api-key"]
    assert gateway_key_headers({"authorization": "Bearer sk-1"}) == []


def test_snapshot_from_records_and_lookup() -> None:
    key = generate_key()
    record = KeyRecord(
        id="gk_1",
        name="n",
        prefix=key_prefix(key),
        key_hash=hash_key(key),
        models=("GPT-*",),
        providers=("OpenAI",),
        budgets=Budgets(tpm=10),
        created_at=NOW,
        created_by="t",
        revoked_at=NOW,
        quarantined_at=None,
    )
    snap = KeySnapshot.from_records([record], NOW)
    info = snap.lookup(key)
    assert info is not None and info.models == ("gpt-*",) and info.providers == ("openai",) and info.revoked
    assert len(snap) == 1 and snap.budgets("gk_1") == Budgets(tpm=10) and snap.budgets("gk_2") is None
    with pytest.raises(TypeError):
        snap.by_hash["x"] = info  # type: ignore[index]


def test_key_material() -> None:
    a, b = generate_key(), generate_key()
    assert a != b and a.startswith("llmp_") and len(a) == 5 + 43
    assert hash_key(a) == hash_key(a) and len(hash_key(a)) == 64 and hash_key(a) != hash_key(b)
    assert key_prefix(a) == a[:13]
    assert split_list(" gpt-*, Claude-* ,,gpt-*") == ("gpt-*", "claude-*") and split_list(None) == ()
    with pytest.raises(ValueError, match="positive"):
        Budgets(rpm=0)
    assert not Budgets().any and Budgets(tpd=1).any


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30d", NOW + timedelta(days=30)),
        ("12h", NOW + timedelta(hours=12)),
        ("2w", NOW + timedelta(weeks=2)),
        ("90m", NOW + timedelta(minutes=90)),
        ("1.5d", NOW + timedelta(hours=36)),
        ("2026-12-31", datetime(2026, 12, 31, tzinfo=UTC)),
        ("2026-12-31T23:59:00+02:00", datetime(2026, 12, 31, 21, 59, tzinfo=UTC)),
    ],
)
def test_parse_expiry(value: str, expected: datetime) -> None:
    assert parse_expiry(value, NOW) == expected


@pytest.mark.parametrize("value", ["0d", "2020-01-01", "soon", "-1d"])
def test_parse_expiry_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_expiry(value, NOW)


def test_decision_defaults() -> None:
    assert AuthDecision(ok=True).status == 200 and PASSTHROUGH.key_id is None
