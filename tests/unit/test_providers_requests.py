"""Request side: routing, the provider-neutral request view, and tool-name aliasing."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.providers.base import RequestView
from extproc.providers.registry import endpoint_for
from extproc.toolnames import PROVIDER_NAME_RE, ToolNameCodec

GH = "github.search_issues"
GH_ALIAS = "github_search_issues_25c7629b"
FS = "fs/read file"
FS_ALIAS = "fs_read_file_c5764884"


def endpoint(path: str):
    found = endpoint_for(path)
    assert found is not None
    return found


# -- routing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/v1/chat/completions", "chat"),
        ("/api/v1/chat/completions", "chat"),  # OpenRouter
        ("/v1/responses", "responses"),
        ("/api/v1/responses", "responses"),
        ("/v1/embeddings", "embeddings"),
        ("/v1/messages", "messages"),
        ("/v1/messages/", "messages"),
        ("/v1/completions", "completions"),
        ("/v1/chat/completions?beta=true", "chat"),
        ("/api/chat", "ollama_chat"),
        ("/api/generate", "ollama_generate"),
    ],
)
def test_endpoint_for_known_paths(path: str, api: str) -> None:
    assert endpoint(path).api == api


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v1/models", "POST"),
        ("/v1/chat/completions", "GET"),
        ("/api/tags", "POST"),
        ("/api/api/v1/messages", "POST"),
        ("/", "POST"),
        ("", "POST"),
        ("/v1/chat/completions/extra", "POST"),
    ],
)
def test_endpoint_for_unknown(path: str, method: str) -> None:
    assert endpoint_for(path, method) is None


def test_method_is_case_insensitive() -> None:
    assert endpoint_for("/v1/messages", "post") is not None


# -- parse_request ---------------------------------------------------------------------

CHAT_BODY = {
    "model": "gpt-4o",
    "stream": True,
    "max_completion_tokens": 300,
    "max_tokens": 10,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": None, "tool_calls": []},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {}},
                {"type": "text", "text": "here"},
            ],
        },
    ],
    "tools": [
        {"type": "function", "function": {"name": GH, "parameters": {}}},
        {"type": "custom", "custom": {"name": "grammar tool"}},
        {"type": "web_search"},
    ],
    "functions": [{"name": "legacy.fn"}],
}


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            "/v1/chat/completions",
            CHAT_BODY,
            RequestView("chat", "gpt-4o", True, (GH, "grammar tool", "legacy.fn"), "Be brief.\nUse tools.", "look\nhere", 300),
        ),
        (
            "/v1/chat/completions",
            {
                "model": "m",
                "max_tokens": 12,
                "messages": [{"role": "system", "content": ["plain", {"type": "image_url"}]}, {"role": "user", "content": 42}],
            },
            RequestView("chat", "m", False, (), "plain", None, 12),
        ),
        (
            "/v1/responses",
            {
                "model": "gpt-4.1",
                "instructions": "Talk like a pirate.",
                "input": [
                    {"role": "developer", "content": "No emojis."},
                    {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                    {"type": "function_call", "name": GH, "call_id": "c1", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c1", "output": "[]"},
                    {"type": "message", "role": "user", "content": "and now?"},
                ],
                "tools": [{"type": "function", "name": GH}, {"type": "web_search"}, {"type": "custom", "name": "x y"}],
                "max_output_tokens": 500,
                "stream": True,
            },
            RequestView("responses", "gpt-4.1", True, (GH, "x y"), "Talk like a pirate.\nNo emojis.", "and now?", 500),
        ),
        (
            "/v1/responses",
            {"model": "o3", "input": "plain string"},
            RequestView("responses", "o3", False, (), None, "plain string", None),
        ),
        (
            "/v1/messages",
            {
                "model": "claude-sonnet-4",
                "max_tokens": 1024,
                "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Really."}],
                "messages": [
                    {"role": "user", "content": "read it"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": FS, "input": {}}]},
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                            {"type": "text", "text": "thanks"},
                        ],
                    },
                ],
                "tools": [{"name": FS, "input_schema": {}}, {"type": "web_search_20250305", "name": "web_search"}],
                "stream": True,
            },
            RequestView("messages", "claude-sonnet-4", True, (FS,), "You are terse.\nReally.", "thanks", 1024),
        ),
        (
            "/v1/messages",
            {"model": 7, "system": "sys", "messages": "not a list"},
            RequestView("messages", None, False, (), "sys", None, None),
        ),
        (
            "/api/chat",
            {
                "model": "qwen3:8b",
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "why is the sky blue?"}],
                "tools": [{"type": "function", "function": {"name": "get_weather"}}],
                "options": {"num_predict": 64},
            },
            RequestView("ollama_chat", "qwen3:8b", True, ("get_weather",), "s", "why is the sky blue?", 64),
        ),
        (
            "/api/chat",
            {"model": "llama3", "messages": [], "stream": False},
            RequestView("ollama_chat", "llama3", False, (), None, None, None),
        ),
        (
            "/api/generate",
            {"model": "llama3", "prompt": "Why?", "system": "Be kind", "stream": None, "options": {"num_predict": 9}},
            RequestView("ollama_generate", "llama3", True, (), "Be kind", "Why?", 9),
        ),
        (
            "/v1/completions",
            {"model": "gpt-3.5-turbo-instruct", "prompt": ["a", "b", 3], "max_tokens": 7, "stream": True},
            RequestView("completions", "gpt-3.5-turbo-instruct", True, (), None, "a\nb", 7),
        ),
        (
            "/v1/completions",
            {"model": "x", "prompt": [1, 2, 3]},
            RequestView("completions", "x", False, (), None, None, None),
        ),
        (
            "/v1/embeddings",
            {"model": "text-embedding-3-small", "input": "embed me", "stream": True},
            RequestView("embeddings", "text-embedding-3-small", False, (), None, "embed me", None),
        ),
    ],
)
def test_parse_request(path: str, body: dict, expected: RequestView) -> None:
    # first_user has its own test below (test_first_and_last_user_turns)
    assert dataclasses.replace(endpoint(path).parse_request(body), first_user=None) == expected


ALL_PATHS = [
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages",
    "/api/chat",
    "/api/generate",
    "/v1/completions",
    "/v1/embeddings",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
request_keys = st.sampled_from(
    [
        "model",
        "stream",
        "messages",
        "input",
        "tools",
        "tool_choice",
        "system",
        "instructions",
        "prompt",
        "functions",
        "function_call",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "options",
        "content",
    ]
)
# Bodies shaped like requests but with arbitrary values in every field and nested field.
odd_bodies = st.dictionaries(
    request_keys,
    json_values
    | st.lists(
        st.dictionaries(
            request_keys | st.sampled_from(["role", "type", "name", "function", "tool_calls"]), json_values, max_size=5
        ),
        max_size=4,
    ),
    max_size=8,
)


@settings(max_examples=100, deadline=None)
@given(odd_bodies, st.sampled_from(ALL_PATHS))
def test_odd_but_valid_json_never_raises(body: dict, path: str) -> None:
    ep = endpoint(path)
    view = ep.parse_request(body)
    assert view.api == ep.api
    ep.alias_request(copy.deepcopy(body), ToolNameCodec(namespace="t"))
    ep.restore_response(copy.deepcopy(body), ToolNameCodec(["a.b"]))
    ep.fold(body)


# -- alias_request ---------------------------------------------------------------------


def test_chat_alias_request_covers_every_name_location() -> None:
    body = {
        "model": "gpt-4o",
        "tools": [
            {"type": "function", "function": {"name": GH, "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "custom", "custom": {"name": "sql query"}},
            {"type": "web_search_preview"},
        ],
        "tool_choice": {"type": "function", "function": {"name": GH}},
        "functions": [{"name": FS}],
        "function_call": {"name": FS},
        "messages": [
            {"role": "user", "name": "alice.smith", "content": "hi"},  # participant name, not a tool
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": GH, "arguments": "{}"}},
                    {"id": "c2", "type": "custom", "custom": {"name": "sql query", "input": "select 1"}},
                ],
                "function_call": {"name": FS, "arguments": "{}"},
            },
            {"role": "tool", "tool_call_id": "c1", "name": GH, "content": "[]"},
            {"role": "function", "name": FS, "content": "ok"},
            {"role": "assistant", "tool_calls": [{"id": "c3", "type": "function", "function": {"name": "history.only"}}]},
        ],
    }
    codec = ToolNameCodec()
    assert endpoint("/v1/chat/completions").alias_request(body, codec) is True
    sql = codec.encode("sql query")
    assert body["tools"][0]["function"] == {"name": GH_ALIAS, "parameters": {"type": "object"}}
    assert body["tools"][1]["function"]["name"] == "get_weather"
    assert body["tools"][2]["custom"]["name"] == sql
    assert body["tools"][3] == {"type": "web_search_preview"}
    assert body["tool_choice"]["function"]["name"] == GH_ALIAS
    assert body["functions"][0]["name"] == FS_ALIAS and body["function_call"]["name"] == FS_ALIAS
    messages = body["messages"]
    assert messages[0]["name"] == "alice.smith"
    assert [c.get("function", c.get("custom"))["name"] for c in messages[1]["tool_calls"]] == [GH_ALIAS, sql]
    assert messages[1]["function_call"]["name"] == FS_ALIAS
    assert messages[2]["name"] == GH_ALIAS and messages[3]["name"] == FS_ALIAS
    history_alias = messages[4]["tool_calls"][0]["function"]["name"]
    assert PROVIDER_NAME_RE.match(history_alias) and codec.decode(history_alias) == "history.only"
    # Declared names were registered before history names.
    assert list(codec.mapping.values()) == [GH, "sql query", FS, "history.only"]


def test_chat_allowed_tools_choice_is_aliased() -> None:
    body = {
        "tools": [{"type": "function", "function": {"name": GH}}],
        "tool_choice": {
            "type": "allowed_tools",
            "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": GH}}]},
        },
    }
    endpoint("/v1/chat/completions").alias_request(body, ToolNameCodec())
    assert body["tool_choice"]["allowed_tools"]["tools"][0]["function"]["name"] == GH_ALIAS


def test_alias_request_without_changes_returns_false_and_keeps_body() -> None:
    body = {"tools": [{"type": "function", "function": {"name": "get_weather"}}], "tool_choice": "auto", "messages": []}
    before = copy.deepcopy(body)
    assert endpoint("/v1/chat/completions").alias_request(body, ToolNameCodec()) is False
    assert body == before


def test_responses_alias_request() -> None:
    body = {
        "tools": [
            {"type": "function", "name": GH, "parameters": {}},
            {"type": "custom", "name": "sql query"},
            {"type": "web_search"},
            {"type": "mcp", "server_label": "deepwiki", "server_url": "https://x"},
        ],
        "tool_choice": {"type": "function", "name": GH},
        "input": [
            {"role": "user", "content": "go"},
            {"type": "function_call", "call_id": "c1", "name": GH, "arguments": "{}"},
            {"type": "custom_tool_call", "call_id": "c2", "name": "sql query", "input": "select 1"},
            {"type": "function_call_output", "call_id": "c1", "output": "{}"},
        ],
    }
    codec = ToolNameCodec()
    assert endpoint("/v1/responses").alias_request(body, codec) is True
    sql = codec.encode("sql query")
    assert [t.get("name") for t in body["tools"]] == [GH_ALIAS, sql, None, None]
    assert body["tool_choice"] == {"type": "function", "name": GH_ALIAS}
    assert body["input"][1]["name"] == GH_ALIAS and body["input"][2]["name"] == sql
    allowed = {
        "tools": [],
        "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": FS}]},
    }
    endpoint("/v1/responses").alias_request(allowed, codec)
    assert allowed["tool_choice"]["tools"][0]["name"] == FS_ALIAS


def test_anthropic_alias_request_leaves_anthropic_defined_tools_alone() -> None:
    body = {
        "tools": [
            {"name": FS, "input_schema": {}},
            {"type": "custom", "name": GH, "input_schema": {}},
            {"type": "bash_20250124", "name": "bash"},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        ],
        "tool_choice": {"type": "tool", "name": FS},
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "reading"},
                    {"type": "tool_use", "id": "t1", "name": FS, "input": {}},
                    {"type": "tool_use", "id": "t2", "name": "bash", "input": {"command": "ls"}},
                    {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {}},
                ],
            },
        ],
    }
    codec = ToolNameCodec(namespace="team-a")  # would alias everything it is given
    assert endpoint("/v1/messages").alias_request(body, codec) is True
    assert [t["name"] for t in body["tools"]] == [codec.encode(FS), codec.encode(GH), "bash", "web_search"]
    assert body["tool_choice"]["name"] == codec.encode(FS)
    blocks = body["messages"][1]["content"]
    assert [b.get("name") for b in blocks] == [None, codec.encode(FS), "bash", "web_search"]
    assert set(codec.mapping.values()) == {FS, GH}
    builtin_choice = {"tools": [{"type": "bash_20250124", "name": "bash"}], "tool_choice": {"type": "tool", "name": "bash"}}
    assert endpoint("/v1/messages").alias_request(builtin_choice, codec) is False


def test_ollama_alias_request() -> None:
    body = {
        "tools": [{"type": "function", "function": {"name": GH}}],
        "messages": [
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": GH, "arguments": {}}}]},
            {"role": "tool", "tool_name": GH, "content": "[]"},
        ],
    }
    assert endpoint("/api/chat").alias_request(body, ToolNameCodec()) is True
    assert body["tools"][0]["function"]["name"] == GH_ALIAS
    assert body["messages"][0]["tool_calls"][0]["function"]["name"] == GH_ALIAS
    assert body["messages"][1]["tool_name"] == GH_ALIAS


@pytest.mark.parametrize("path", ["/api/generate", "/v1/completions", "/v1/embeddings"])
def test_apis_without_tools_never_alias(path: str) -> None:
    body = {"prompt": "x", "input": "y", "tools": [{"name": "a.b"}]}
    ep = endpoint(path)
    codec = ToolNameCodec(["a.b"])
    assert ep.alias_request(body, codec) is False
    assert ep.restore_response(body, codec) is False
    assert body["tools"] == [{"name": "a.b"}]


def test_aliasing_changes_only_name_fields() -> None:
    # A tool description quoting the name must survive: never blind string replacement.
    body = {
        "tools": [{"type": "function", "function": {"name": GH, "description": f"Call {GH} to search"}}],
        "messages": [{"role": "user", "content": f"use {GH}"}],
    }
    endpoint("/v1/chat/completions").alias_request(body, ToolNameCodec())
    assert body["tools"][0]["function"]["description"] == f"Call {GH} to search"
    assert body["messages"][0]["content"] == f"use {GH}"
    assert json.dumps(body).count(GH_ALIAS) == 1


@pytest.mark.parametrize(
    "path,body",
    [
        (
            "/v1/chat/completions",
            {
                "model": "m",
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "second"},
                ],
            },
        ),
        (
            "/v1/messages",
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": [{"type": "text", "text": "second"}]},
                ],
            },
        ),
        (
            "/v1/responses",
            {
                "model": "m",
                "input": [
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "second"},
                ],
            },
        ),
        ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "first"}, {"role": "user", "content": "second"}]}),
    ],
)
def test_first_and_last_user_turns(path, body) -> None:
    view = endpoint_for(path).parse_request(body)
    assert view.first_user == "first" and view.last_user == "second"
