"""An enhancement experiment on Anthropic /v1/messages through the real stack, driven by the official SDK.

test_enhancement.py covers OpenAI chat; here the same sidecar path must patch the top-level
``system`` field of Anthropic requests on the variant arm only, record both bodies and the arm, and
honour ``x-enhance: off``. The experiment is started the way the control API starts one
(intelligence.enhance.manage), so the sidecar learns of it through NOTIFY.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import anthropic

from intelligence.enhance import manage
from intelligence.enhance.live import Applicable, assign_arm

from .conftest import Stack, body_json
from .test_enhancement import _engine, _retire, _seed_pattern

INSTRUCTION = "Answer in British English and cite the ticket number."
MODEL = "claude-3-5-haiku-latest"


def _client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url + "/anthropic", api_key="sk-ant-e2e", max_retries=0)


def _send(stack: Stack, tag: str, *, system: Any = None, stream: bool = False, **headers: str) -> str:
    """One request as an application would send it; returns the gateway's request id."""
    kwargs: dict[str, Any] = dict(
        model=MODEL,
        max_tokens=64,
        extra_headers=headers,
        system=system if system is not None else f"You help team {tag}.",
        messages=[{"role": "user", "content": f"Summarise ticket {tag} for the weekly report"}],
    )
    client = _client(stack)
    if stream:
        with client.messages.with_streaming_response.create(stream=True, **kwargs) as resp:
            assert resp.http_response.status_code == 200
            for _ in resp.iter_lines():
                pass
            return resp.headers["x-llmproxy-request-id"]
    raw = client.messages.with_raw_response.create(**kwargs)
    assert raw.parse().content[0].type == "text"  # the SDK understood the answer
    return raw.headers["x-llmproxy-request-id"]


def _upstream_saw(stack: Stack, tag: str) -> Any:
    """The last /v1/messages body the provider received about ``tag`` (with its headers)."""
    for req in reversed(stack.fake.requests):
        if req.path.endswith("/v1/messages") and tag in json.dumps(req.json):
            return req
    raise AssertionError(f"the provider never received a messages request about {tag}")


async def _start_experiment(url: str, pattern_id: int) -> tuple[int, int]:
    async with _engine(url) as engine, engine.begin() as conn:
        eid = await manage.create_enhancement(
            conn,
            pattern_id,
            "system_prompt",
            {"text": INSTRUCTION, "position": "append"},
            "e2e: anthropic format",
            "operator",
            actor="e2e",
        )
        xid = await manage.start_experiment(conn, eid, actor="e2e", control_weight=0.5, assign_by="session")
    return eid, xid


def _wait_enhanced(stack: Stack, tag: str, timeout: float = 15.0):
    """Send until the sidecar has reloaded (NOTIFY) and exchanges carry the experiment."""
    deadline = time.monotonic() + timeout
    while True:
        rec = stack.record(_send(stack, tag, **{"x-session-id": f"warm-{tag}"}))
        if "enhancement" in rec.flags or time.monotonic() > deadline:
            return rec
        time.sleep(0.2)


def test_anthropic_messages_experiment_patches_variant_only(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:10]
    first = stack.record(_send(stack, tag))
    assert first.provider == "anthropic" and first.api == "messages"
    assert "enhancement" not in first.flags
    pid = asyncio.run(_seed_pattern(stack.db_url, first))
    try:
        eid, xid = asyncio.run(_start_experiment(stack.db_url, pid))
        warm = _wait_enhanced(stack, tag)
        assert warm.flags.get("enhancement", {}).get("experiment") == xid, warm.flags
        expected = Applicable(xid, eid, "system_prompt", {}, 0.5, "session", "experiment")

        arms: dict[str, str] = {}
        for i in range(10):
            session = f"{tag}-s{i}"
            rec = stack.record(_send(stack, tag, **{"x-session-id": session}))
            flag = rec.flags["enhancement"]
            arm = arms[session] = flag["arm"]
            assert arm == assign_arm(expected, session_id=session, client=None)
            assert (flag["experiment"], flag["enhancement"], flag["pattern"]) == (xid, eid, pid)
            upstream = _upstream_saw(stack, tag).json
            client_body = body_json(rec.request_client)
            assert client_body["system"] == f"You help team {tag}."  # the log keeps what the client sent
            if arm == "variant":
                assert upstream["system"] == f"You help team {tag}.\n\n{INSTRUCTION}"
                assert body_json(rec.request_forwarded)["system"] == upstream["system"]
                assert flag["patch"] == [{"op": "replace", "path": "/system", "value": upstream["system"]}]
            else:
                assert upstream["system"] == f"You help team {tag}."
                assert flag["patch"] == []
                forwarded = body_json(rec.request_forwarded)
                assert forwarded is None or INSTRUCTION not in json.dumps(forwarded)
            assert upstream["messages"] == client_body["messages"]  # only the system prompt changes
            assert rec.prompt_system == f"You help team {tag}."  # pattern memory sees the client's prompt
        assert set(arms.values()) == {"control", "variant"}, arms

        variant = next(s for s, a in arms.items() if a == "variant")
        # a system prompt given as content blocks gets the instruction as one more block
        blocks = [{"type": "text", "text": f"You help team {tag}."}]
        rec = stack.record(_send(stack, tag, system=blocks, **{"x-session-id": variant}))
        assert rec.flags["enhancement"]["arm"] == "variant"
        assert _upstream_saw(stack, tag).json["system"] == [*blocks, {"type": "text", "text": INSTRUCTION}]
        assert body_json(rec.request_client)["system"] == blocks

        # streaming takes the same path
        rec = stack.record(_send(stack, tag, stream=True, **{"x-session-id": variant}))
        assert rec.flags["enhancement"]["arm"] == "variant" and rec.status == 200
        upstream = _upstream_saw(stack, tag).json
        assert upstream["stream"] is True and INSTRUCTION in upstream["system"]

        # the opt-out header: no exposure, nothing patched, and the header is not forwarded
        rec = stack.record(_send(stack, tag, **{"x-session-id": variant, "x-enhance": "off"}))
        assert "enhancement" not in rec.flags
        seen = _upstream_saw(stack, tag)
        assert INSTRUCTION not in json.dumps(seen.json)
        assert "x-enhance" not in seen.headers
    finally:
        asyncio.run(_retire(stack.db_url, [pid]))
