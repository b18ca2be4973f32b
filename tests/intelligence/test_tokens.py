"""Access tokens: SECRET_KEY strength, the maximum lifetime, revocation by jti (table + in-memory list
on NOTIFY), the `llmproxy token` commands, and the control API ending a stream whose token expires
or is revoked while it is open."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import jwt
import pytest
from sqlalchemy import text

from extproc.cli import main
from intelligence.access import (
    DEFAULT_MAX_MINUTES,
    AccessSettings,
    InvalidToken,
    RevocationsUnavailable,
    ThreadedRevocations,
    TokenRevocations,
    WeakSecretKey,
    check_secret_key,
    estimate_entropy_bits,
    issue_token,
    revoke_token,
    verify_token,
)
from intelligence.control.gen import control_pb2 as pb
from intelligence.control.gen import control_pb2_grpc as pb_grpc
from intelligence.control.server import ControlServer
from intelligence.events import publish

from .conftest import MigratedDb

SECRET = secrets.token_urlsafe(48)
ACCESS = AccessSettings(secret_key=SECRET)
WAIT = 10.0


# ------------------------------------------------------------------------------------------ SECRET_KEY
PLACEHOLDERS = [
    "CHANGE_ME",
    "CHANGE_ME_TO_A_LONG_RANDOM_STRING_PLEASE_1234",
    "changemechangemechangemechangeme",
    "my-super-secret-key-for-llmproxy-2024-xyz",
    "ui-test-secret-key-0123456789abcdef",
    "k" * 48,
    "0123456789abcdef" * 2,
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ",
    "aB3$" * 10,
    "Password123!Password123!Password123!",
    "your-key-here-your-key-here-your-key-here",
    "x" * 31,
]


@pytest.mark.parametrize("value", PLACEHOLDERS)
def test_placeholder_and_low_entropy_keys_are_refused(value: str) -> None:
    with pytest.raises(WeakSecretKey) as info:
        check_secret_key(value)
    assert "secrets.token_urlsafe(48)" in str(info.value) and "SECRET_KEY" in str(info.value)
    with pytest.raises(ValueError):  # at start: reading the settings refuses it
        AccessSettings.from_env({"SECRET_KEY": value})


def test_random_keys_pass() -> None:
    for _ in range(300):
        check_secret_key(secrets.token_urlsafe(32))  # 32 random bytes, base64url (43 characters)
        check_secret_key(secrets.token_urlsafe(48))
        check_secret_key(secrets.token_hex(32))  # 32 random bytes as hex
        check_secret_key(base64.b64encode(os.urandom(32)).decode())  # openssl rand -base64 32
    assert estimate_entropy_bits(secrets.token_hex(32)) > 200
    assert estimate_entropy_bits("0123456789abcdef" * 4) < 64


def test_settings_need_a_consistent_lifetime() -> None:
    settings = AccessSettings.from_env({"SECRET_KEY": SECRET}, revocations=False)
    assert (settings.expire_minutes, settings.max_minutes) == (60, DEFAULT_MAX_MINUTES)
    with pytest.raises(ValueError, match="ACCESS_TOKEN_MAX_MINUTES"):
        AccessSettings.from_env({"SECRET_KEY": SECRET, "ACCESS_TOKEN_EXPIRE_MINUTES": "120", "ACCESS_TOKEN_MAX_MINUTES": "60"})


# ------------------------------------------------------------------------------------------ lifetime
def test_tokens_longer_than_the_maximum_are_refused_at_creation_and_verification() -> None:
    settings = AccessSettings(secret_key=SECRET, max_minutes=120)
    with pytest.raises(ValueError, match="at most 120 minutes"):
        issue_token(settings, "anna", "admin", minutes=121)
    principal = verify_token(settings, issue_token(settings, "anna", "admin", minutes=120))
    assert principal.jti and principal.subject == "anna"
    now = int(time.time())
    long_lived = jwt.encode(
        {"sub": "mallory", "role": "admin", "iat": now, "exp": now + 121 * 60, "iss": "llmproxy", "jti": "j1"},
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(InvalidToken, match="more than the maximum 120"):
        verify_token(settings, long_lived)
    no_jti = jwt.encode({"sub": "m", "role": "admin", "iat": now, "exp": now + 60, "iss": "llmproxy"}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match="jti"):
        verify_token(settings, no_jti)
    no_iat = jwt.encode({"sub": "m", "role": "admin", "exp": now + 60, "iss": "llmproxy", "jti": "j"}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match="iat"):
        verify_token(settings, no_iat)


def test_token_ids_are_unique() -> None:
    ids = {verify_token(ACCESS, issue_token(ACCESS, "a", "viewer")).jti for _ in range(50)}
    assert len(ids) == 50


# ------------------------------------------------------------------------------------------ revocation
async def _wait_for(predicate, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_revocation_reaches_the_in_memory_list_by_notify(migrated_db: MigratedDb) -> None:
    revocations = TokenRevocations(migrated_db.engine, poll_interval=60)  # NOTIFY, not the poll, must do it
    with pytest.raises(RevocationsUnavailable):
        revocations.is_revoked("x")  # never loaded: callers refuse the token
    await revocations.start()
    try:
        settings = ACCESS.with_revocations(revocations)
        token = issue_token(settings, "anna", "admin")
        jti = verify_token(settings, token).jti
        assert jti is not None
        async with migrated_db.engine.begin() as conn:
            assert await revoke_token(conn, jti, actor="cli:test", reason="laptop lost")
            assert not await revoke_token(conn, jti, actor="cli:test")  # idempotent
        await _wait_for(lambda: revocations.is_revoked(jti))
        with pytest.raises(InvalidToken, match="revoked"):
            verify_token(settings, token)
        verify_token(settings, issue_token(settings, "anna", "admin"))  # other tokens are unaffected
        async with migrated_db.engine.connect() as conn:
            row = (
                await conn.execute(text("SELECT actor, payload FROM audit_log WHERE subject = :s"), {"s": f"access_token:{jti}"})
            ).one()
        assert row.actor == "cli:test" and row.payload["reason"] == "laptop lost"
    finally:
        await revocations.stop()


async def test_the_dashboard_settings_check_revocations(migrated_db: MigratedDb) -> None:
    """What the dashboard does on every run: AccessSettings.from_env() with DATABASE_URL and SECRET_KEY
    checks the shared, thread-backed revocation list."""
    settings = AccessSettings.from_env({"SECRET_KEY": SECRET, "DATABASE_URL": migrated_db.url})
    assert isinstance(settings.revocations, ThreadedRevocations)
    assert AccessSettings.from_env({"SECRET_KEY": SECRET, "DATABASE_URL": migrated_db.url}).revocations is settings.revocations
    try:
        await _dashboard_sees_revocation(settings, migrated_db)
    finally:
        await asyncio.to_thread(settings.revocations.close)


async def _dashboard_sees_revocation(settings: AccessSettings, migrated_db: MigratedDb) -> None:
    token = issue_token(settings, "dora", "viewer")
    assert (await asyncio.to_thread(verify_token, settings, token)).subject == "dora"
    jti = verify_token(ACCESS, token).jti
    async with migrated_db.engine.begin() as conn:
        await revoke_token(conn, jti, actor="test")

    def rejected() -> bool:
        try:
            verify_token(settings, token)
        except InvalidToken:
            return True
        return False

    deadline = time.monotonic() + WAIT
    while not await asyncio.to_thread(rejected):
        assert time.monotonic() < deadline, "revocation not seen by the dashboard's list"
        await asyncio.sleep(0.1)


async def test_token_commands(
    migrated_db: MigratedDb, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("DATABASE_URL", migrated_db.url)

    def cli(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        out = capsys.readouterr()
        return int(exc.value.code or 0), out.out, out.err

    code, out, err = await asyncio.to_thread(cli, "token", "create", "--role", "viewer", "--subject", "vera", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["jti"] and verify_token(ACCESS, doc["token"]).jti == doc["jti"]
    code, out, err = await asyncio.to_thread(cli, "token", "create", "--role", "admin", "--subject", "x", "--minutes", "100000")
    assert code == 2 and "at most 1440 minutes" in err and out == ""

    code, out, _ = await asyncio.to_thread(cli, "token", "revoke", doc["jti"], "--reason", "left the team")
    assert code == 0 and f"token {doc['jti']} revoked" in out
    code, out, _ = await asyncio.to_thread(cli, "token", "revoke", doc["jti"])
    assert code == 0 and "already revoked" in out
    # the whole token works too (its expiry bounds how long the row is kept)
    code, out, err = await asyncio.to_thread(cli, "token", "create", "--role", "viewer", "--subject", "w", "--json")
    other = json.loads(out)
    code, out, err = await asyncio.to_thread(cli, "token", "revoke", other["token"], "--json")
    assert code == 0 and json.loads(out) == {"jti": other["jti"], "revoked": True, "already_revoked": False}, err
    async with migrated_db.engine.connect() as conn:
        rows = {
            r.jti: r for r in (await conn.execute(text("SELECT jti, reason, expires_at FROM access_token_revocations"))).all()
        }
    assert rows[doc["jti"]].reason == "left the team"
    assert rows[other["jti"]].expires_at <= datetime.fromisoformat(other["expires_at"]) + timedelta(minutes=11)
    forged = issue_token(AccessSettings(secret_key=secrets.token_urlsafe(48)), "eve", "admin")
    code, _, err = await asyncio.to_thread(cli, "token", "revoke", forged)
    assert code == 2 and "cannot revoke" in err

    monkeypatch.setenv("SECRET_KEY", "CHANGE_ME_CHANGE_ME_CHANGE_ME_CHANGE_ME")
    code, out, err = await asyncio.to_thread(cli, "token", "create", "--role", "viewer", "--subject", "v")
    assert code == 2 and "placeholder" in err and "token_urlsafe(48)" in err and out == ""


# ------------------------------------------------------------------------------------------ control API
@pytest.fixture
async def server(migrated_db: MigratedDb) -> AsyncIterator[ControlServer]:
    srv = ControlServer(migrated_db.engine, ACCESS, "127.0.0.1", 0, recheck_interval=0.3)
    await srv.start()
    await asyncio.wait_for(srv.hub.ready.wait(), WAIT)
    yield srv
    await srv.stop()


@pytest.fixture
async def stub(server: ControlServer) -> AsyncIterator[pb_grpc.ControlStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield pb_grpc.ControlStub(channel)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _add_event(engine) -> None:
    async with engine.begin() as conn:
        await publish(conn, kind="alert", title="t", severity="warning", subject="s", detail={}, source="test")


async def _stream_ends(call, engine, timeout: float) -> tuple[grpc.StatusCode, str, int]:
    """Read ``call`` until it ends (events are published meanwhile); its status, details and items seen."""
    seen = 0

    async def read() -> None:
        nonlocal seen
        while await call.read() is not grpc.aio.EOF:
            seen += 1

    task = asyncio.create_task(read())
    try:
        deadline = time.monotonic() + timeout
        while not task.done() and time.monotonic() < deadline:
            await _add_event(engine)
            await asyncio.wait([task], timeout=0.2)
        assert task.done(), "the stream did not end"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await task
        return info.value.code(), info.value.details() or "", seen
    finally:
        call.cancel()


async def test_a_revoked_token_is_refused_by_the_control_api(stub, server: ControlServer, migrated_db: MigratedDb) -> None:
    token = issue_token(ACCESS, "anna", "admin")
    me = await stub.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(token))
    assert me.subject == "anna"
    async with migrated_db.engine.begin() as conn:
        await revoke_token(conn, verify_token(ACCESS, token).jti, actor="test")
    await _wait_for(lambda: server.revocations is not None and len(server.revocations._revoked) == 1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.WhoAmI(pb.WhoAmIRequest(), metadata=bearer(token))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in (info.value.details() or "")


async def test_watch_events_ends_when_the_token_expires(stub, migrated_db: MigratedDb) -> None:
    # a one-minute token issued 57 s ago: it expires about 3 s into the stream
    token = issue_token(ACCESS, "anna", "viewer", minutes=1, now=datetime.now(UTC) - timedelta(seconds=57))
    started = time.monotonic()
    call = stub.WatchEvents(pb.WatchEventsRequest(kinds=["alert"]), metadata=bearer(token))
    code, details, seen = await _stream_ends(call, migrated_db.engine, timeout=15)
    elapsed = time.monotonic() - started
    assert code == grpc.StatusCode.UNAUTHENTICATED and "expired" in details
    assert seen >= 1  # it was live before it ended
    assert elapsed < 8, elapsed


async def test_watch_events_ends_when_the_token_is_revoked(stub, migrated_db: MigratedDb) -> None:
    token = issue_token(ACCESS, "anna", "viewer")
    call = stub.WatchEvents(pb.WatchEventsRequest(kinds=["alert"]), metadata=bearer(token))
    first = asyncio.create_task(call.read())
    for _ in range(50):  # subscribed once an event arrives
        await _add_event(migrated_db.engine)
        done, _ = await asyncio.wait([first], timeout=0.2)
        if done:
            break
    assert first.done()
    async with migrated_db.engine.begin() as conn:
        await revoke_token(conn, verify_token(ACCESS, token).jti, actor="test")
    started = time.monotonic()
    code, details, _ = await _stream_ends(call, migrated_db.engine, timeout=10)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in details
    assert time.monotonic() - started < 5
