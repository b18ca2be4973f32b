"""Feedback is bound to whoever made the request (intelligence/memory/feedback.py), real Postgres."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text

from intelligence.memory.feedback import FeedbackForbidden, add_feedback

from .test_enhance_support import Ex, write


async def _rows(engine, request_id: str) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(text("SELECT count(*) FROM feedback WHERE request_id = :r"), {"r": request_id})).scalar_one()
        )


async def test_a_gateway_key_may_rate_only_its_own_requests(migrated_db) -> None:
    engine = migrated_db.engine
    async with engine.begin() as conn:
        mine, theirs = await write(conn, [Ex(None, client="key-alpha"), Ex(None, client="key-beta")])
    assert await add_feedback(engine, mine, thumbs="down", key_id="key-alpha") > 0
    with pytest.raises(FeedbackForbidden, match="not made with this gateway key"):
        await add_feedback(engine, theirs, thumbs="down", key_id="key-alpha")
    # a passthrough caller cannot rate a keyed request by presenting the key id as its fingerprint
    with pytest.raises(FeedbackForbidden):
        await add_feedback(engine, theirs, thumbs="down", key_id="key-alpha", client_fp="key-beta")
    assert (await _rows(engine, mine), await _rows(engine, theirs)) == (1, 0)
    assert issubclass(FeedbackForbidden, ValueError)  # callers that only know ValueError still refuse it


async def test_passthrough_feedback_must_come_from_the_same_client(migrated_db) -> None:
    engine = migrated_db.engine
    async with engine.begin() as conn:
        (rid,) = await write(conn, [Ex(None, client="key_3f2a9c0d11aa22bb")])
    with pytest.raises(FeedbackForbidden, match="made by another client"):
        await add_feedback(engine, rid, score=0.1, key_id=None, client_fp="key_0000000000000000")
    with pytest.raises(FeedbackForbidden, match="identity"):
        await add_feedback(engine, rid, score=0.1, key_id=None, client_fp=None)
    assert await add_feedback(engine, rid, score=0.1, key_id=None, client_fp="key_3f2a9c0d11aa22bb") > 0
    assert await _rows(engine, rid) == 1


async def test_unknown_requests_are_refused_after_a_bounded_wait_and_operators_are_not_bound(migrated_db) -> None:
    engine = migrated_db.engine
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="no recorded request") as info:
        await add_feedback(engine, "req-never", thumbs="up", key_id="key-alpha", wait_s=0.3)
    assert not isinstance(info.value, FeedbackForbidden) and time.monotonic() - t0 < 3
    # the exchange is recorded a moment after the feedback arrives: the wait covers it
    late = asyncio.create_task(add_feedback(engine, "req-enh-late", thumbs="up", key_id="key-alpha", wait_s=5))
    await asyncio.sleep(0.3)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO exchanges (request_id, started_at, finished_at, method, path, client_key_fp, flags) "
                "VALUES ('req-enh-late', now(), now(), 'POST', '/v1/chat/completions', 'key-alpha', '{}'::jsonb)"
            )
        )
    assert await late > 0
    # an operator (no key_id given: the control API, in-process code) is not bound to a client
    assert await add_feedback(engine, "req-not-recorded-yet", thumbs="down") > 0
