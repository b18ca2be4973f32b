"""The fake providers, driven by the official SDKs and by raw HTTP."""

from __future__ import annotations

import gzip
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.testing import FakeProvider, Scripted
from extproc.testing.conversation import split_in, word_pieces

CHAT_TOOLS = [
    {
        "type": "function",
        "function": {"name": "lookup_Weather.v2", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
    },
    {"type": "function", "function": {"name": "second_tool", "parameters": {"type": "object", "properties": {}}}},
]
RESPONSES_TOOLS = [
    {"type": "function", "name": "search_docs", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
    {"type": "function", "name": "other", "parameters": {"type": "object", "properties": {}}},
]
ANTHROPIC_TOOLS = [
    {"name": "mcp__fs__read", "description": "read", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
    {"name": "write", "description": "write", "input_schema": {"type": "object", "properties": {}}},
]


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider().start_in_thread()
    yield fake
    fake.stop_thread()


@pytest.fixture(autouse=True)
def fresh(provider: FakeProvider) -> None:
    provider.clear()


@pytest.fixture()
def oai(provider: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{provider.base_url}/v1", api_key="sk-test", max_retries=0)


@pytest.fixture()
def claude(provider: FakeProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=provider.base_url, api_key="sk-ant-test", max_retries=0)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def sse_events(raw: str) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) per SSE event; data "[DONE]" stays a string."""
    events = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                payload = line[len("data: ") :]
                data = payload if payload == "[DONE]" else json.loads(payload)
        events.append((name, data))
    return events


# --- OpenAI chat completions -------------------------------------------------------------


def test_chat_echoes_last_user_text_with_word_count_usage(oai: openai.OpenAI, provider: FakeProvider) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "be brief please"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "text", "text": "hello big world"}]},
        ],
    )
    assert completion.choices[0].message.content == "echo: hello big world"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o-mini"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (10, 4, 14)

    [received] = provider.requests
    assert (received.method, received.path) == ("POST", "/v1/chat/completions")
    assert received.headers["authorization"] == "Bearer sk-test"
    assert received.json["model"] == "gpt-4o-mini"
    assert json.loads(received.body) == received.json


def test_chat_echo_is_truncated_to_200_chars(oai: openai.OpenAI) -> None:
    long_text = "x" * 500
    completion = oai.chat.completions.create(model="m", messages=user(long_text))
    assert completion.choices[0].message.content == "echo: " + "x" * 200


def test_chat_tool_call_names_first_declared_tool_verbatim(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="m", messages=user("please Call Tool now"), tools=CHAT_TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "lookup_Weather.v2"
    assert json.loads(call.function.arguments) == {"q": "please Call Tool now"}


def test_chat_two_parallel_tool_calls_on_header(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="m", messages=user("plain text"), tools=CHAT_TOOLS, extra_headers={"x-fake-tool-call": "2"}
    )
    calls = completion.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["lookup_Weather.v2", "second_tool"]
    assert len({c.id for c in calls}) == 2


def test_chat_answers_in_text_after_a_tool_result(oai: openai.OpenAI) -> None:
    # Otherwise an agent loop against the fake would never end.
    messages = [
        *user("please call tool"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "x", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "result"},
    ]
    completion = oai.chat.completions.create(model="m", messages=messages, tools=CHAT_TOOLS)
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].message.content == "echo: please call tool"


def test_chat_no_tool_call_without_tools_or_when_disabled(oai: openai.OpenAI) -> None:
    without_tools = oai.chat.completions.create(model="m", messages=user("call tool"))
    disabled = oai.chat.completions.create(
        model="m", messages=user("call tool"), tools=CHAT_TOOLS, extra_headers={"x-fake-tool-call": "0"}
    )
    for completion in (without_tools, disabled):
        assert completion.choices[0].message.tool_calls is None
        assert completion.choices[0].finish_reason == "stop"


def test_chat_stream_text_word_by_word_with_usage_last(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="m", messages=user("one two three"), stream=True, stream_options={"include_usage": True}
        )
    )
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert deltas == ["echo: ", "one ", "two ", "three"]
    assert "".join(deltas) == "echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4 and chunks[-1].usage.prompt_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stream_without_include_usage_has_no_usage(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="m", messages=user("hi"), stream=True))
    assert chunks and all(c.usage is None and c.choices for c in chunks)


def test_chat_stream_parallel_tool_calls_assemble_to_valid_json(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="m", messages=user("find it"), tools=CHAT_TOOLS, stream=True, extra_headers={"x-fake-tool-call": "2"}
    )
    names: dict[int, list[str]] = {}
    arguments: dict[int, list[str]] = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for call in choice.delta.tool_calls or []:
            if call.function and call.function.name:
                names.setdefault(call.index, []).append(call.function.name)
            if call.function and call.function.arguments:
                arguments.setdefault(call.index, []).append(call.function.arguments)
    assert names == {0: ["lookup_Weather.v2"], 1: ["second_tool"]}
    for index in (0, 1):
        assert len(arguments[index]) > 1
        assert json.loads("".join(arguments[index])) == {"q": "find it"}
    assert finish == "tool_calls"


def test_openrouter_prefix_serves_the_same_api(provider: FakeProvider) -> None:
    router = openai.OpenAI(base_url=f"{provider.base_url}/api/v1", api_key="sk-or-test", max_retries=0)
    completion = router.chat.completions.create(model="openai/gpt-4o", messages=user("routed"))
    assert completion.choices[0].message.content == "echo: routed"
    assert completion.model == "openai/gpt-4o"
    assert provider.requests[-1].path == "/api/v1/chat/completions"
    assert [m.id for m in router.models.list()]


# --- OpenAI Responses API --------------------------------------------------------------


def test_responses_text_non_stream(oai: openai.OpenAI) -> None:
    result = oai.responses.create(model="gpt-4o", input="tell me", instructions="two words")
    assert result.object == "response" and result.status == "completed"
    assert result.output_text == "echo: tell me"
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.total_tokens) == (4, 3, 7)


def test_responses_function_call_non_stream(oai: openai.OpenAI) -> None:
    result = oai.responses.create(
        model="gpt-4o",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "call tool please"}]}],
        tools=RESPONSES_TOOLS,
    )
    [item] = result.output
    assert item.type == "function_call" and item.name == "search_docs"
    assert json.loads(item.arguments) == {"q": "call tool please"}


def test_responses_stream_typed_events(oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model="gpt-4o", input="stream me now", stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    for expected in ("response.output_item.added", "response.output_text.delta", "response.output_item.done"):
        assert expected in types
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == "echo: stream me now"
    assert events[-1].response.output_text == "echo: stream me now"
    assert events[-1].response.usage.output_tokens == 4


def test_responses_stream_function_call_and_sse_framing(provider: FakeProvider, oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="gpt-4o", input="call tool x", tools=RESPONSES_TOOLS) as stream:
        final = stream.get_final_response()
    [item] = final.output
    assert item.type == "function_call" and item.name == "search_docs"
    assert json.loads(item.arguments) == {"q": "call tool x"}

    raw = httpx.post(
        f"{provider.base_url}/v1/responses", json={"model": "m", "input": "call tool x", "tools": RESPONSES_TOOLS, "stream": True}
    )
    events = sse_events(raw.text)
    assert all(name == data["type"] for name, data in events)
    deltas = [data["delta"] for name, data in events if name == "response.function_call_arguments.delta"]
    assert len(deltas) > 1 and json.loads("".join(deltas)) == {"q": "call tool x"}


def test_responses_finish_length_is_incomplete(oai: openai.OpenAI) -> None:
    result = oai.responses.create(model="m", input="hi", extra_headers={"x-fake-finish": "length"})
    assert result.status == "incomplete" and result.incomplete_details.reason == "max_output_tokens"
    events = list(oai.responses.create(model="m", input="hi", stream=True, extra_headers={"x-fake-finish": "length"}))
    assert events[-1].type == "response.incomplete"


# --- embeddings and models ---------------------------------------------------------------


def test_embeddings_are_deterministic_unit_vectors(oai: openai.OpenAI, provider: FakeProvider) -> None:
    first = oai.embeddings.create(model="text-embedding-3-small", input=["alpha beta", "gamma"])
    again = oai.embeddings.create(model="text-embedding-3-small", input="alpha beta")
    assert [len(d.embedding) for d in first.data] == [8, 8]
    assert again.data[0].embedding == pytest.approx(first.data[0].embedding, abs=1e-6)
    assert first.data[0].embedding != pytest.approx(first.data[1].embedding, abs=1e-3)
    assert sum(v * v for v in first.data[1].embedding) == pytest.approx(1.0, abs=1e-5)
    assert first.usage.prompt_tokens == 3

    wide = oai.embeddings.create(model="m", input="alpha beta", dimensions=16, encoding_format="float")
    assert len(wide.data[0].embedding) == 16
    assert provider.requests[-1].json["encoding_format"] == "float"


def test_models_list(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert "gpt-4o-mini" in ids and len(ids) >= 3


# --- Anthropic ---------------------------------------------------------------------------


def test_anthropic_text_message(claude: anthropic.Anthropic, provider: FakeProvider) -> None:
    message = claude.messages.create(model="claude-x", max_tokens=100, system="sys prompt", messages=user("hello there"))
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 3)
    assert provider.requests[-1].path == "/v1/messages"
    # Older SDKs send x-api-key, this one "authorization: Bearer": the key arrives either way.
    sent = provider.requests[-1].headers
    assert "sk-ant-test" in (sent.get("x-api-key", ""), sent.get("authorization", "").removeprefix("Bearer "))
    assert "anthropic-version" in sent


def test_anthropic_tool_use(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="c", max_tokens=100, messages=user("call tool: ls"), tools=ANTHROPIC_TOOLS)
    [block] = message.content
    assert block.type == "tool_use" and block.name == "mcp__fs__read" and block.input == {"q": "call tool: ls"}
    assert message.stop_reason == "tool_use"

    follow_up = claude.messages.create(
        model="c",
        max_tokens=100,
        tools=ANTHROPIC_TOOLS,
        messages=[
            *user("call tool: ls"),
            {"role": "assistant", "content": [{"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "a.txt b.txt"}]},
        ],
    )
    assert follow_up.stop_reason == "end_turn"
    assert follow_up.content[0].text == "echo: a.txt b.txt"


def test_anthropic_stream_text_final_message(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="c", max_tokens=100, messages=user("stream this text")) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) > 1 and "".join(texts) == "echo: stream this text"
    assert final.content[0].text == "echo: stream this text"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4


def test_anthropic_stream_parallel_tool_use(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="c", max_tokens=100, messages=user("go"), tools=ANTHROPIC_TOOLS, extra_headers={"x-fake-tool-call": "2"}
    ) as stream:
        final = stream.get_final_message()
    assert [(b.type, b.name, b.input) for b in final.content] == [
        ("tool_use", "mcp__fs__read", {"q": "go"}),
        ("tool_use", "write", {"q": "go"}),
    ]
    assert final.stop_reason == "tool_use"


def test_anthropic_sse_uses_real_event_types(provider: FakeProvider) -> None:
    raw = httpx.post(
        f"{provider.base_url}/v1/messages",
        json={"model": "c", "max_tokens": 5, "stream": True, "messages": user("call tool"), "tools": ANTHROPIC_TOOLS},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw.text)
    names = [name for name, _ in events]
    assert all(name == data["type"] for name, data in events)
    assert names[0] == "message_start" and names[-1] == "message_stop" and "ping" in names
    assert names[-2] == "message_delta"
    partial = [d["delta"]["partial_json"] for n, d in events if n == "content_block_delta"]
    assert len([p for p in partial if p]) > 1 and json.loads("".join(partial)) == {"q": "call tool"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(("finish", "stop_reason"), [("length", "max_tokens"), ("content_filter", "refusal")])
def test_anthropic_finish_switch(claude: anthropic.Anthropic, finish: str, stop_reason: str) -> None:
    message = claude.messages.create(model="c", max_tokens=5, messages=user("hi"), extra_headers={"x-fake-finish": finish})
    assert message.stop_reason == stop_reason


# --- Ollama native -----------------------------------------------------------------------


def test_ollama_chat_ndjson_stream_and_json(provider: FakeProvider) -> None:
    raw = httpx.post(f"{provider.base_url}/api/chat", json={"model": "llama3.2", "messages": user("one two")})
    assert raw.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in raw.text.splitlines()]
    assert [line["done"] for line in lines] == [False, False, False, True]
    assert "".join(line["message"]["content"] for line in lines) == "echo: one two"
    assert (lines[-1]["prompt_eval_count"], lines[-1]["eval_count"], lines[-1]["done_reason"]) == (2, 3, "stop")

    whole = httpx.post(
        f"{provider.base_url}/api/chat", json={"model": "llama3.2", "messages": user("one two"), "stream": False}
    ).json()
    assert whole["done"] is True and whole["message"]["content"] == "echo: one two" and whole["eval_count"] == 3


def test_ollama_generate_and_errors(provider: FakeProvider) -> None:
    raw = httpx.post(f"{provider.base_url}/api/generate", json={"model": "llama3.2", "prompt": "why sky", "stream": True})
    lines = [json.loads(line) for line in raw.text.splitlines()]
    assert "".join(line["response"] for line in lines) == "echo: why sky"
    assert lines[-1]["done"] is True and lines[-1]["prompt_eval_count"] == 2

    failed = httpx.post(f"{provider.base_url}/api/generate", json={"prompt": "x"}, headers={"x-fake-status": "500"})
    assert failed.status_code == 500 and isinstance(failed.json()["error"], str)


def test_ollama_chat_tool_calls(provider: FakeProvider) -> None:
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    body = {"model": "llama3.2", "messages": user("call tool now"), "tools": tools}
    whole = httpx.post(f"{provider.base_url}/api/chat", json={**body, "stream": False}).json()
    assert whole["message"]["tool_calls"] == [{"function": {"name": "get_time", "arguments": {"q": "call tool now"}}}]
    lines = [json.loads(line) for line in httpx.post(f"{provider.base_url}/api/chat", json=body).text.splitlines()]
    assert [line["done"] for line in lines] == [False, True]
    assert lines[0]["message"]["tool_calls"][0]["function"]["name"] == "get_time"


# --- behaviour switches --------------------------------------------------------------------


def test_status_switch_uses_each_providers_error_format(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    with pytest.raises(openai.InternalServerError) as oai_error:
        oai.chat.completions.create(model="m", messages=user("x"), extra_headers={"x-fake-status": "500"})
    assert oai_error.value.body["type"] == "server_error" and oai_error.value.body["message"]

    with pytest.raises(anthropic.RateLimitError) as claude_error:
        claude.messages.create(model="c", max_tokens=5, messages=user("x"), extra_headers={"x-fake-status": "429"})
    assert claude_error.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": claude_error.value.body["error"]["message"]},
    }
    assert claude_error.value.response.headers["retry-after"] == "0"

    with pytest.raises(openai.RateLimitError) as limited:
        oai.chat.completions.create(
            model="m", messages=user("x"), extra_headers={"x-fake-status": "429", "x-fake-retry-after": "7"}
        )
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.code == "rate_limit_exceeded"


def test_fail_times_fails_first_n_per_key_then_succeeds(provider: FakeProvider) -> None:
    retrying = openai.OpenAI(base_url=f"{provider.base_url}/v1", api_key="sk-test", max_retries=2)
    headers = {"x-fake-status": "429", "x-fake-fail-times": "2", "x-fake-key": "k1", "x-fake-retry-after": "0.01"}
    completion = retrying.chat.completions.create(model="m", messages=user("retry me"), extra_headers=headers)
    assert completion.choices[0].message.content == "echo: retry me"
    assert len(provider.requests) == 3

    # Another key has its own count; the exhausted key keeps succeeding.
    url = f"{provider.base_url}/v1/chat/completions"
    body = {"model": "m", "messages": user("x")}
    assert httpx.post(url, json=body, headers={**headers, "x-fake-key": "k2", "x-fake-fail-times": "1"}).status_code == 429
    assert httpx.post(url, json=body, headers={**headers, "x-fake-key": "k2", "x-fake-fail-times": "1"}).status_code == 200
    assert httpx.post(url, json=body, headers=headers).status_code == 200


def test_delay_switch_trips_client_timeout(provider: FakeProvider) -> None:
    url = f"{provider.base_url}/v1/chat/completions"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json={"messages": user("x")}, headers={"x-fake-delay-ms": "400"}, timeout=0.1)
    started = time.monotonic()
    assert httpx.post(url, json={"messages": user("x")}, headers={"x-fake-delay-ms": "150"}).status_code == 200
    assert time.monotonic() - started >= 0.15


def test_chunk_delay_spaces_stream_writes(provider: FakeProvider) -> None:
    arrivals = []
    started = time.monotonic()
    with httpx.stream(
        "POST",
        f"{provider.base_url}/v1/chat/completions",
        json={"messages": user("a b c"), "stream": True},
        headers={"x-fake-chunk-delay-ms": "40"},
    ) as response:
        for _ in response.iter_raw():
            arrivals.append(time.monotonic() - started)
    # 8 events, 7 gaps of 40 ms: the stream cannot be over before ~280 ms.
    assert arrivals[-1] >= 0.25
    assert len(arrivals) >= 4


def _raw_http(port: int, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[str, bytes]:
    payload = json.dumps(body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n{head}\r\n"
    ).encode() + payload
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    status_and_headers, _, rest = received.partition(b"\r\n\r\n")
    return status_and_headers.decode(), rest


def _chunked_frames(rest: bytes) -> list[bytes]:
    frames = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return frames
        frames.append(rest[:size])
        rest = rest[size + 2 :]


def test_chunk_bytes_splits_events_and_multibyte_characters(provider: FakeProvider) -> None:
    body = {"model": "m", "messages": user("x"), "stream": True}
    provider.script(Scripted(reply="héllo wörld 世界 ünïcödé"))
    head, rest = _raw_http(provider.port, "/v1/chat/completions", body, {"x-fake-chunk-bytes": "7"})
    assert "transfer-encoding: chunked" in head.lower()
    frames = _chunked_frames(rest)
    assert len(frames) > 20 and max(len(f) for f in frames) == 7

    def decodes(frame: bytes) -> bool:
        try:
            frame.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False

    assert not all(decodes(f) for f in frames), "no frame ends inside a multi-byte character"
    events = sse_events(b"".join(frames).decode())
    text = "".join(d["choices"][0]["delta"].get("content") or "" for _, d in events if d != "[DONE]" and d["choices"])
    assert text == "héllo wörld 世界 ünïcödé"
    assert events[-1] == (None, "[DONE]")


def test_gzip_only_when_client_accepts_it(provider: FakeProvider) -> None:
    url = f"{provider.base_url}/v1/chat/completions"
    body = {"messages": user("zip me")}
    zipped = httpx.post(url, json=body, headers={"x-fake-gzip": "1", "accept-encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.json()["choices"][0]["message"]["content"] == "echo: zip me"

    head, rest = _raw_http(provider.port, "/v1/chat/completions", body, {"x-fake-gzip": "1", "Accept-Encoding": "gzip"})
    assert json.loads(gzip.decompress(rest))["choices"][0]["message"]["content"] == "echo: zip me"

    plain = httpx.post(url, json=body, headers={"x-fake-gzip": "1", "accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers


def test_reply_and_finish_switches(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="m", messages=user("ignored"), extra_headers={"x-fake-reply": "custom words here", "x-fake-finish": "length"}
    )
    assert completion.choices[0].message.content == "custom words here"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3
    filtered = oai.chat.completions.create(model="m", messages=user("x"), extra_headers={"x-fake-finish": "content_filter"})
    assert filtered.choices[0].finish_reason == "content_filter"


@pytest.mark.parametrize("stream", [True, False])
def test_drop_mid_stream_truncates_the_body(provider: FakeProvider, stream: bool) -> None:
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream(
            "POST",
            f"{provider.base_url}/v1/chat/completions",
            json={"messages": user("one two three four five six"), "stream": stream},
            headers={"x-fake-drop-mid-stream": "1"},
        ) as response:
            for piece in response.iter_raw():
                received += piece
    if stream:
        assert received.startswith(b"data: ") and b"[DONE]" not in received
    else:
        assert received.startswith(b"{") and not received.rstrip().endswith(b"}")
    # The server survives the drop.
    assert httpx.post(f"{provider.base_url}/v1/chat/completions", json={"messages": user("x")}).status_code == 200


# --- scripts, recording, routing --------------------------------------------------------


def test_script_is_consumed_in_order_then_default(provider: FakeProvider, oai: openai.OpenAI) -> None:
    raw = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "scripted",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "raw body"}, "finish_reason": "stop"}],
    }
    provider.script(
        Scripted(reply="first"),
        Scripted(json=raw, headers={"x-extra": "1"}),
        Scripted(status=503),
        Scripted(status=502, body=b"<html>bad gateway</html>", content_type="text/html"),
    )
    assert oai.chat.completions.create(model="m", messages=user("a")).choices[0].message.content == "first"
    second = oai.chat.completions.with_raw_response.create(model="m", messages=user("b"))
    assert second.headers["x-extra"] == "1" and second.parse().choices[0].message.content == "raw body"
    with pytest.raises(openai.InternalServerError) as failed:
        oai.chat.completions.create(model="m", messages=user("c"))
    assert failed.value.status_code == 503
    with pytest.raises(openai.InternalServerError) as html:
        oai.chat.completions.create(model="m", messages=user("c"))
    assert html.value.status_code == 502 and html.value.response.text == "<html>bad gateway</html>"
    assert oai.chat.completions.create(model="m", messages=user("d")).choices[0].message.content == "echo: d"


def test_scripted_raw_stream_goes_through_the_transport_switches(provider: FakeProvider) -> None:
    broken = b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\ndata: {not json\n\n'
    provider.script(Scripted(body=broken, content_type="text/event-stream"))
    head, rest = _raw_http(provider.port, "/v1/chat/completions", {"stream": True}, {"x-fake-chunk-bytes": "5"})
    assert "text/event-stream" in head
    frames = _chunked_frames(rest)
    assert b"".join(frames) == broken and max(map(len, frames)) == 5


@given(st.text(alphabet=st.sampled_from("ab é世 \n\t"), max_size=40))
def test_stream_splits_reassemble_to_the_text(text: str) -> None:
    assert "".join(word_pieces(text)) == text
    assert all(piece.strip() for piece in word_pieces(text)) or not text.strip()
    slices = split_in(text, 4)
    assert "".join(slices) == text and 1 <= len(slices) <= 4


def test_unknown_path_and_bad_json_are_errors(provider: FakeProvider) -> None:
    missing = httpx.get(f"{provider.base_url}/v2/nothing?x=1")
    assert missing.status_code == 404 and "error" in missing.json()
    assert provider.requests[-1].path == "/v2/nothing" and provider.requests[-1].query == {"x": "1"}

    bad = httpx.post(f"{provider.base_url}/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["type"] == "error"
    assert provider.requests[-1].json is None and provider.requests[-1].body == b"{not json"


def test_clear_forgets_requests_script_and_counters(provider: FakeProvider) -> None:
    url = f"{provider.base_url}/v1/chat/completions"
    headers = {"x-fake-status": "500", "x-fake-fail-times": "1", "x-fake-key": "c"}
    assert httpx.post(url, json={"messages": user("x")}, headers=headers).status_code == 500
    provider.script(Scripted(status=400))
    provider.clear()
    assert provider.requests == []
    assert httpx.post(url, json={"messages": user("x")}, headers=headers).status_code == 500
    assert httpx.post(url, json={"messages": user("x")}).status_code == 200


async def test_in_loop_start_stop_with_async_sdks_and_no_recording() -> None:
    fake = FakeProvider(record=False)
    await fake.start()
    try:
        assert fake.port > 0
        oai = openai.AsyncOpenAI(base_url=f"{fake.base_url}/v1", api_key="sk-test", max_retries=0)
        completion = await oai.chat.completions.create(model="m", messages=user("async hi"))
        assert completion.choices[0].message.content == "echo: async hi"
        claude = anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="sk-ant-test", max_retries=0)
        async with claude.messages.stream(model="c", max_tokens=5, messages=user("async hi")) as stream:
            final = await stream.get_final_message()
        assert final.content[0].text == "echo: async hi"
        assert fake.requests == []
    finally:
        await fake.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{fake.base_url}/v1/models")


def test_thread_mode_context_manager_and_busy_port(provider: FakeProvider) -> None:
    with pytest.raises(OSError):
        FakeProvider(port=provider.port).start_in_thread()
    with FakeProvider() as other:
        assert other.port not in (0, provider.port)
        assert httpx.get(f"{other.base_url}/api/tags").json()["models"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{other.base_url}/api/tags")


def test_standalone_module_prints_port_and_stops_on_sigterm() -> None:
    process = subprocess.Popen([sys.executable, "-m", "extproc.testing.fakes", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={"messages": user("standalone")})
        assert reply.json()["choices"][0]["message"]["content"] == "echo: standalone"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
