"""The official SDKs through real Envoy + sidecar to the fake providers: what the client got, what the
upstream received, and what was logged."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from .conftest import Stack, body_json, last_request

pytestmark = pytest.mark.e2e

MCP_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "github.search/issues",
            "description": "search issues",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}},
]


def oai(stack: Stack, prefix: str = "/openai/v1", **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + prefix, api_key="sk-client-key", max_retries=0, **kw)


def test_openai_chat_non_streaming_prefix_route(stack: Stack) -> None:
    raw = oai(stack).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello there"
    rid = raw.headers["x-llmproxy-request-id"]
    up = last_request(stack.fake, "/v1/chat/completions")
    assert up.headers["authorization"] == "Bearer sk-client-key"  # passthrough by default
    assert "accept-encoding" not in up.headers or "gzip" not in up.headers.get("accept-encoding", "")
    rec = stack.record(rid)
    assert rec.status == 200 and rec.provider == "openai" and rec.model == "gpt-4o-mini" and rec.route == "prefix"
    assert rec.api == "chat" and not rec.streamed
    assert body_json(rec.request_client)["messages"][1]["content"] == "hello there"
    assert body_json(rec.response_client)["choices"][0]["message"]["content"] == "echo: hello there"
    assert rec.usage.input_tokens and rec.usage.output_tokens
    assert rec.prompt_system == "be brief" and rec.prompt_user == "hello there"
    assert rec.client_key_fp and "sk-client-key" not in json.dumps(rec.request_headers)
    assert rec.latency_ms and rec.latency_ms > 0


def test_openai_streaming_keeps_deltas_and_reassembles(stack: Stack) -> None:
    client = oai(stack)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "stream me a few words please"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        rid = resp.headers["x-llmproxy-request-id"]
        pieces = [c.choices[0].delta.content or "" for c in resp.parse() if c.choices]
    assert len([p for p in pieces if p]) > 1  # really streamed, not one buffered blob
    assert "".join(pieces) == "echo: stream me a few words please"
    rec = stack.record(rid)
    assert rec.streamed and rec.ttft_ms is not None and rec.ttft_ms <= rec.latency_ms
    msg = body_json(rec.response_client)
    assert msg["choices"][0]["message"]["content"] == "echo: stream me a few words please"
    assert rec.usage.output_tokens


def test_tool_names_aliased_upstream_restored_for_client_non_streaming(stack: Stack) -> None:
    raw = oai(stack).chat.completions.with_raw_response.create(
        model="gpt-4o", tools=MCP_TOOLS, messages=[{"role": "user", "content": "please call tool now"}]
    )
    msg = raw.parse().choices[0].message
    assert msg.tool_calls[0].function.name == "github.search/issues"
    up = last_request(stack.fake, "/v1/chat/completions").json
    upstream_names = [t["function"]["name"] for t in up["tools"]]
    assert upstream_names[0] != "github.search/issues" and upstream_names[1] == "get_weather"
    import re

    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", n) for n in upstream_names)
    rec = stack.record(raw.headers["x-llmproxy-request-id"])
    assert rec.tool_aliases == {upstream_names[0]: "github.search/issues"}
    assert body_json(rec.request_forwarded)["tools"][0]["function"]["name"] == upstream_names[0]
    assert body_json(rec.request_client)["tools"][0]["function"]["name"] == "github.search/issues"
    assert "github.search/issues" in rec.tool_names


def test_tool_names_restored_in_stream_split_into_tiny_chunks(stack: Stack) -> None:
    client = oai(stack, default_headers={"x-fake-chunk-bytes": "7"})
    stream = client.chat.completions.create(
        model="gpt-4o", tools=MCP_TOOLS, stream=True, messages=[{"role": "user", "content": "call tool with split chunks"}]
    )
    names, args = [], ""
    for chunk in stream:
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if tc.function and tc.function.name:
                names.append(tc.function.name)
            if tc.function and tc.function.arguments:
                args += tc.function.arguments
    assert names == ["github.search/issues"]
    assert json.loads(args) == {"q": "call tool with split chunks"}


def test_unified_route_picks_provider_from_model(stack: Stack) -> None:
    client = oai(stack, prefix="/v1")
    r1 = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}])
    r2 = client.chat.completions.with_raw_response.create(
        model="meta-llama/llama-3-8b", messages=[{"role": "user", "content": "b"}]
    )
    assert r1.parse().choices[0].message.content == "echo: a"
    assert r2.parse().choices[0].message.content == "echo: b"
    assert stack.record(r1.headers["x-llmproxy-request-id"]).provider == "openai"
    rec2 = stack.record(r2.headers["x-llmproxy-request-id"])
    assert rec2.provider == "openrouter" and rec2.route == "unified"
    assert last_request(stack.fake, "/chat/completions").path == "/api/v1/chat/completions"


def test_unknown_model_gets_400_naming_it(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai(stack, prefix="/v1").chat.completions.create(model="mystery-model-9", messages=[{"role": "user", "content": "x"}])
    assert "mystery-model-9" in str(err.value)


def test_client_cannot_choose_route_header(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError):
        oai(stack, prefix="/v1", default_headers={"x-llmproxy-provider": "openai"}).chat.completions.create(
            model="mystery-model-9", messages=[{"role": "user", "content": "x"}]
        )


def test_anthropic_messages_stream_with_tools(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.url + "/anthropic", api_key="sk-ant-client", max_retries=0)
    tools = [
        {
            "name": "fs:read file",
            "description": "read",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=100, tools=tools, messages=[{"role": "user", "content": "call tool to read"}]
    ) as s:
        final = s.get_final_message()
    block = [b for b in final.content if b.type == "tool_use"][0]
    assert block.name == "fs:read file" and block.input == {"q": "call tool to read"}
    up = last_request(stack.fake, "/v1/messages")
    # anthropic SDK 2.x authenticates with Authorization: Bearer; older ones with x-api-key
    assert "sk-ant-client" in (up.headers.get("x-api-key") or up.headers.get("authorization", ""))
    assert up.json["tools"][0]["name"] != "fs:read file"


def test_anthropic_unified_messages_non_streaming(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key="sk-ant-client", max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=50, system="sys", messages=[{"role": "user", "content": "hi claude"}]
    )
    assert raw.parse().content[0].text == "echo: hi claude"
    rec = stack.record(raw.headers["x-llmproxy-request-id"])
    assert rec.provider == "anthropic" and rec.api == "messages" and rec.finish_reason == "end_turn"


def test_responses_api_stream_and_embeddings(stack: Stack) -> None:
    client = oai(stack, prefix="/v1")
    stream = client.responses.create(model="gpt-4.1", input="say something", stream=True)
    text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    assert text == "echo: say something"
    emb = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(emb.parse().data) == 2
    rec = stack.record(emb.headers["x-llmproxy-request-id"])
    assert rec.api == "embeddings" and rec.provider == "openai"


def test_session_header_and_derived_session(stack: Stack) -> None:
    c = oai(stack, default_headers={"x-session-id": "conv-42"})
    raw = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "s"}])
    assert stack.record(raw.headers["x-llmproxy-request-id"]).session_id == "conv-42"
    c2 = oai(stack)
    turn1 = [{"role": "user", "content": "plan a trip to Lisbon"}]
    r1 = c2.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=turn1)
    turn2 = turn1 + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "and Porto?"}]
    r2 = c2.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=turn2)
    s1 = stack.record(r1.headers["x-llmproxy-request-id"]).session_id
    s2 = stack.record(r2.headers["x-llmproxy-request-id"]).session_id
    assert s1 and s1 == s2


def test_healthz_and_unrouted_path(stack: Stack) -> None:
    assert httpx.get(stack.url + "/healthz").text == "ok\n"
    r = httpx.post(stack.url + "/nowhere", json={"a": 1})
    assert r.status_code == 404 and "no route" in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "not_found"  # the route's own body, not rewritten as an Envoy error


def test_tool_namespace_header_separates_clients_upstream(stack: Stack) -> None:
    tools = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}}]
    seen = {}
    for ns in ("team-a", "team-b"):
        c = oai(stack, default_headers={"x-tool-namespace": ns})
        msg = (
            c.chat.completions.create(model="gpt-4o", tools=tools, messages=[{"role": "user", "content": "call tool"}])
            .choices[0]
            .message
        )
        assert msg.tool_calls[0].function.name == "search"
        seen[ns] = last_request(stack.fake, "/v1/chat/completions").json["tools"][0]["function"]["name"]
    assert seen["team-a"] != seen["team-b"] and all(v != "search" for v in seen.values())
