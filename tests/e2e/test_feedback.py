"""POST /v1/feedback is answered by the gateway itself and stored for the request's pattern."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from .conftest import Stack

pytestmark = pytest.mark.e2e


async def _feedback_rows(db_url: str, request_id: str) -> list:
    import asyncpg

    from intelligence.store.engine import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(db_url))
    try:
        return await conn.fetch("select * from feedback where request_id = $1", request_id)
    finally:
        await conn.close()


def test_feedback_is_stored_and_validated(stack: Stack) -> None:
    raw = openai.OpenAI(
        base_url=stack.url + "/openai/v1", api_key="sk-fb", max_retries=0
    ).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "rate me"}])
    rid = raw.headers["x-llmproxy-request-id"]
    same_client = {"authorization": "Bearer sk-fb"}  # feedback is accepted only from the client that asked
    other = httpx.post(
        stack.url + "/v1/feedback", json={"request_id": rid, "thumbs": "up"}, headers={"authorization": "Bearer sk-other"}
    )
    assert other.status_code == 403 and other.json()["error"]["code"] == "feedback_forbidden"
    r = httpx.post(
        stack.url + "/v1/feedback", json={"request_id": rid, "thumbs": "down", "comment": "wrong answer"}, headers=same_client
    )
    assert r.status_code == 202 and r.json()["ok"] is True
    rows = asyncio.run(_feedback_rows(stack.db_url, rid))
    assert len(rows) == 1 and rows[0]["comment"] == "wrong answer"
    bad = httpx.post(stack.url + "/v1/feedback", json={"request_id": rid, "score": 7}, headers=same_client)
    assert bad.status_code == 400 and "score" in bad.json()["error"]["message"]
    assert httpx.get(stack.url + "/v1/feedback").status_code == 405
    assert (
        httpx.post(stack.url + "/v1/feedback", content=b"not json", headers={"content-type": "application/json"}).status_code
        == 400
    )
