"""Response side: folding non-streamed bodies, usage mapping, restoring names, round trips."""

from __future__ import annotations

import copy

import pytest

from extproc.providers.base import Folded, ToolCall
from extproc.providers.registry import endpoint_for
from extproc.toolnames import ToolNameCodec
from intelligence.records import Usage

GH = "github.search_issues"
FS = "fs/read file"


def endpoint(path: str):
    found = endpoint_for(path)
    assert found is not None
    return found


CHAT_RESPONSE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o",
    "choices": [
        {"index": 1, "message": {"role": "assistant", "content": "second choice"}, "finish_reason": "length"},
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": [{"type": "text", "text": "Looking"}, {"type": "text", "text": "it up"}],
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": GH, "arguments": '{"q":"x"}'}},
                    {"id": "c2", "type": "custom", "custom": {"name": "sql", "input": "select 1"}},
                    {"id": "c3", "type": "function", "function": {"name": "obj_args", "arguments": {"a": 1}}},
                    {"id": "c4", "type": "function", "function": {"arguments": "{}"}},  # nameless: skipped
                ],
                "function_call": {"name": "legacy"},
            },
            "finish_reason": "tool_calls",
        },
    ],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 2},
    },
}


@pytest.mark.parametrize(
    ("path", "body", "text", "calls", "finish", "usage", "error"),
    [
        (
            "/v1/chat/completions",
            CHAT_RESPONSE,
            "Looking\nit up",
            (
                ToolCall("c1", GH, '{"q":"x"}'),
                ToolCall("c2", "sql", "select 1"),
                ToolCall("c3", "obj_args", '{"a":1}'),
                ToolCall(None, "legacy", ""),
            ),
            "tool_calls",
            Usage(19, 10, 29, 3, 2),
            None,
        ),
        (
            "/v1/chat/completions",
            {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
            "",
            (),
            None,
            Usage(),
            "Rate limit reached",
        ),
        (
            "/v1/chat/completions",
            {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": True}},
            "",
            (),
            None,
            Usage(5, 1, 6),  # a bogus total is recomputed, never trusted
            None,
        ),
        (
            "/v1/completions",
            {
                "choices": [{"index": 0, "text": "once upon", "finish_reason": "length"}],
                "usage": {"prompt_tokens": 4, "completion_tokens": 2},
            },
            "once upon",
            (),
            "length",
            Usage(4, 2, 6),
            None,
        ),
        (
            "/v1/embeddings",
            {"object": "list", "data": [{"embedding": [0.1]}], "usage": {"prompt_tokens": 8, "total_tokens": 8}},
            "",
            (),
            None,
            Usage(8, None, 8),
            None,
        ),
        (
            "/v1/embeddings",
            {"error": {"code": 400}},
            "",
            (),
            None,
            Usage(),
            '{"code":400}',  # an error without message still reads as an error
        ),
        (
            "/v1/messages",
            {
                "type": "message",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Reading "},
                    {"type": "tool_use", "id": "t1", "name": FS, "input": {"path": "/é"}},
                    {"type": "text", "text": "now."},
                    {"type": "tool_use", "id": "t2", "name": "raw", "input": "{partial"},
                ],
                "stop_reason": "tool_use",
                "usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 7, "cache_creation_input_tokens": 1},
            },
            "Reading now.",
            (ToolCall("t1", FS, '{"path": "/é"}'), ToolCall("t2", "raw", "{partial")),
            "tool_use",
            Usage(10, 4, 14, 7, None),
            None,
        ),
        (
            "/v1/messages",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "",
            (),
            None,
            Usage(),
            "Overloaded",
        ),
        (
            "/v1/responses",
            {
                "object": "response",
                "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"},
                "error": None,
                "output": [
                    {"type": "reasoning", "summary": []},
                    {
                        "type": "message",
                        "content": [{"type": "output_text", "text": "Par"}, {"type": "refusal", "refusal": "no"}],
                    },
                    {"type": "function_call", "call_id": "c1", "name": GH, "arguments": "{}"},
                    {"type": "custom_tool_call", "call_id": "c2", "name": "sql", "input": "select 2"},
                    {"type": "function_call", "call_id": "c3", "name": "bad_args", "arguments": {"not": "text"}},
                ],
                "usage": {
                    "input_tokens": 9,
                    "output_tokens": 3,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens_details": {"reasoning_tokens": 1},
                },
            },
            "Par",
            (ToolCall("c1", GH, "{}"), ToolCall("c2", "sql", "select 2"), ToolCall("c3", "bad_args", "")),
            "max_output_tokens",
            Usage(9, 3, 12, 0, 1),
            None,
        ),
        (
            "/v1/responses",
            {
                "object": "response",
                "status": "failed",
                "error": {"code": "server_error", "message": "The model failed"},
                "output": [],
            },
            "",
            (),
            "failed",
            Usage(),
            "The model failed",
        ),
        (
            "/v1/responses",
            {"object": "response", "status": "incomplete", "incomplete_details": None},
            "",
            (),
            "incomplete",
            Usage(),
            None,
        ),
        (
            "/api/chat",
            {
                "model": "qwen3",
                "message": {
                    "role": "assistant",
                    "content": "ok",
                    "tool_calls": [
                        {"id": "call_1", "function": {"name": GH, "arguments": {"q": "é"}}},
                        {"function": {"name": "no_args"}},
                        {"function": {"name": "text_args", "arguments": '{"raw":1}'}},
                    ],
                },
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 11,
                "eval_count": 5,
            },
            "ok",
            (ToolCall("call_1", GH, '{"q":"é"}'), ToolCall(None, "no_args", "{}"), ToolCall(None, "text_args", '{"raw":1}')),
            "stop",
            Usage(11, 5, 16),
            None,
        ),
        (
            "/api/generate",
            {"error": "model 'nope' not found"},
            "",
            (),
            None,
            Usage(),
            "model 'nope' not found",
        ),
        (
            "/api/generate",
            {"response": "blue", "done": True, "done_reason": "stop", "prompt_eval_count": 3},
            "blue",
            (),
            "stop",
            Usage(3, None, None),
            None,
        ),
    ],
)
def test_fold(
    path: str, body: dict, text: str, calls: tuple[ToolCall, ...], finish: str | None, usage: Usage, error: str | None
) -> None:
    folded = endpoint(path).fold(body)
    assert folded == Folded(message=body, text=text, tool_calls=calls, finish_reason=finish, usage=usage, error=error)


def test_embeddings_stream_is_a_plain_pass_through() -> None:
    processor = endpoint("/v1/embeddings").stream(ToolNameCodec(["a.b"]))
    assert processor.feed(b'{"data":') == b'{"data":'
    assert processor.end() == b""
    assert processor.result() == Folded(message={})


# -- round trips: client request aliased, upstream answers with aliases, client sees originals


def _codec_after_request(path: str, request: dict) -> ToolNameCodec:
    codec = ToolNameCodec()
    assert endpoint(path).alias_request(request, codec)
    return codec


def test_chat_round_trip() -> None:
    request = {"tools": [{"type": "function", "function": {"name": GH}}, {"type": "custom", "custom": {"name": FS}}]}
    codec = _codec_after_request("/v1/chat/completions", request)
    gh, fs = request["tools"][0]["function"]["name"], request["tools"][1]["custom"]["name"]
    upstream = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "a", "type": "function", "function": {"name": gh, "arguments": f'{{"note":"{gh}"}}'}},
                        {"id": "b", "type": "custom", "custom": {"name": fs, "input": "x"}},
                        {"id": "c", "type": "function", "function": {"name": "unknown_tool", "arguments": "{}"}},
                    ],
                    "function_call": {"name": gh, "arguments": "{}"},
                },
            },
        ]
    }
    assert endpoint("/v1/chat/completions").restore_response(upstream, codec) is True
    message = upstream["choices"][0]["message"]
    assert [c.get("function", c.get("custom"))["name"] for c in message["tool_calls"]] == [GH, FS, "unknown_tool"]
    assert message["tool_calls"][0]["function"]["arguments"] == f'{{"note":"{gh}"}}'  # arguments untouched
    assert message["function_call"]["name"] == GH
    assert endpoint("/v1/chat/completions").restore_response(upstream, codec) is False  # already restored


def test_responses_round_trip() -> None:
    request = {"tools": [{"type": "function", "name": GH}, {"type": "custom", "name": FS}]}
    codec = _codec_after_request("/v1/responses", request)
    upstream = {
        "output": [
            {"type": "message", "content": [{"type": "output_text", "text": request["tools"][0]["name"]}]},
            {"type": "function_call", "name": request["tools"][0]["name"], "arguments": "{}"},
            {"type": "custom_tool_call", "name": request["tools"][1]["name"], "input": ""},
        ]
    }
    before_text = copy.deepcopy(upstream["output"][0])
    assert endpoint("/v1/responses").restore_response(upstream, codec) is True
    assert [item.get("name") for item in upstream["output"]] == [None, GH, FS]
    assert upstream["output"][0] == before_text


def test_anthropic_round_trip() -> None:
    request = {"tools": [{"name": FS, "input_schema": {}}]}
    codec = _codec_after_request("/v1/messages", request)
    alias = request["tools"][0]["name"]
    upstream = {"content": [{"type": "text", "text": alias}, {"type": "tool_use", "id": "t", "name": alias, "input": {}}]}
    assert endpoint("/v1/messages").restore_response(upstream, codec) is True
    assert upstream["content"] == [{"type": "text", "text": alias}, {"type": "tool_use", "id": "t", "name": FS, "input": {}}]


def test_ollama_round_trip() -> None:
    request = {"tools": [{"type": "function", "function": {"name": GH}}]}
    codec = _codec_after_request("/api/chat", request)
    alias = request["tools"][0]["function"]["name"]
    upstream = {"message": {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": alias, "arguments": {}}}]}}
    assert endpoint("/api/chat").restore_response(upstream, codec) is True
    assert upstream["message"]["tool_calls"][0]["function"]["name"] == GH


def test_namespace_round_trip_restores_even_safe_names() -> None:
    request = {"tools": [{"type": "function", "function": {"name": "search"}}]}
    codec = ToolNameCodec(namespace="team-a")
    assert endpoint("/v1/chat/completions").alias_request(request, codec) is True
    assert request["tools"][0]["function"]["name"] == "team-a__search"
    upstream = {"choices": [{"message": {"tool_calls": [{"type": "function", "function": {"name": "team-a__search"}}]}}]}
    endpoint("/v1/chat/completions").restore_response(upstream, codec)
    assert upstream["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "search"
