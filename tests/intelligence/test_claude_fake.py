"""FakeClaude speaks enough of the Messages API for the real SDK, including its error shapes."""

from __future__ import annotations

import anthropic
import pytest

from intelligence.claude import FakeClaude, FakeFault
from intelligence.claude.fake import script

TOOL = {"name": "answer", "description": "d", "input_schema": {"type": "object"}}


async def create(fake: FakeClaude, **extra):
    sdk = anthropic.AsyncAnthropic(api_key="k", base_url=fake.base_url, max_retries=0, timeout=2)
    try:
        return await sdk.messages.create(
            model="claude-haiku-4-5",
            max_tokens=64,
            tools=[TOOL],
            tool_choice={"type": "tool", "name": "answer"},
            system=[{"type": "text", "text": "sys"}],
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            **extra,
        )
    finally:
        await sdk.close()


async def test_tool_use_answer_parses_in_the_sdk() -> None:
    async with FakeClaude(lambda req: {"echo": req["prompt"], "system": req["system"]}) as fake:
        msg = await create(fake)
    assert msg.type == "message" and msg.role == "assistant" and msg.stop_reason == "tool_use"
    [block] = msg.content
    assert block.type == "tool_use" and block.name == "answer" and block.input == {"echo": "hi", "system": "sys"}
    assert msg.usage.input_tokens > 0 and msg.usage.cache_read_input_tokens == 0
    assert msg.model == "claude-haiku-4-5"


async def test_async_responders_and_usage_override() -> None:
    async def responder(req: dict) -> FakeFault:
        return FakeFault(input={"ok": True}, usage={"input_tokens": 7, "cache_read_input_tokens": 70})

    async with FakeClaude(responder) as fake:
        msg = await create(fake)
    assert msg.usage.input_tokens == 7 and msg.usage.cache_read_input_tokens == 70


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        (FakeFault(kind="rate_limited", retry_after=3), anthropic.RateLimitError, 429),
        (FakeFault(kind="overloaded"), anthropic.APIStatusError, 529),
        (FakeFault(kind="server_error"), anthropic.InternalServerError, 500),
    ],
)
async def test_faults_reach_the_sdk_as_its_errors(fault: FakeFault, error: type, status: int) -> None:
    async with FakeClaude(lambda req: fault) as fake:
        with pytest.raises(error) as caught:
            await create(fake)
    assert caught.value.status_code == status
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "3"
    if status == 529:
        assert caught.value.body["error"]["type"] == "overloaded_error"


async def test_script_then_exhaustion_and_repeat() -> None:
    async with FakeClaude([{"n": 1}, {"n": 2}]) as fake:
        assert (await create(fake)).content[0].input == {"n": 1}
        assert (await create(fake)).content[0].input == {"n": 2}
        with pytest.raises(anthropic.InternalServerError, match="exhausted"):
            await create(fake)
    async with FakeClaude(script({"n": 1}, {"n": 9})) as fake:
        inputs = [(await create(fake)).content[0].input["n"] for _ in range(4)]
    assert inputs == [1, 9, 9, 9] and len(fake.requests) == 4


async def test_malformed_text_answer() -> None:
    async with FakeClaude(lambda req: FakeFault(kind="malformed", text="no tool for you")) as fake:
        msg = await create(fake)
    assert msg.stop_reason == "end_turn" and msg.content[0].type == "text" and msg.content[0].text == "no tool for you"


def test_unknown_fault_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        FakeFault(kind="teapot")
