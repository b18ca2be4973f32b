"""Stream processors: errors, malformed events, cut-off streams and name edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.providers.base import ToolCall
from extproc.providers.registry import endpoint_for
from extproc.toolnames import ToolNameCodec
from intelligence.records import Usage

FIXTURES = Path(__file__).parent / "fixtures"
CHAT = "/v1/chat/completions"
GH = "github.search_issues"
GH_ALIAS = "github_search_issues_25c7629b"


def processor(path: str, codec: ToolNameCodec | None = None):
    endpoint = endpoint_for(path)
    assert endpoint is not None
    return endpoint.stream(codec)


def sse(*objs: object, event: str | None = None) -> bytes:
    out = b""
    for obj in objs:
        head = f"event: {event}\n" if event else ""
        data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        out += f"{head}data: {data}\n\n".encode()
    return out


def chat_chunk(delta: dict, index: int = 0, finish: str | None = None) -> dict:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


def call_delta(index: int, name: str | None = None, arguments: str | None = None, call_id: str | None = None) -> dict:
    function: dict = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    call: dict = {"index": index, "function": function}
    if call_id:
        call.update(id=call_id, type="function")
    return {"tool_calls": [call]}


def drive(path: str, data: bytes, codec: ToolNameCodec | None, cuts: list[int] | None = None):
    proc = processor(path, codec)
    out, previous = [], 0
    for cut in (cuts or []) + [len(data)]:
        out.append(proc.feed(data[previous:cut]))
        previous = cut
    out.append(proc.end())
    return out, proc.result()


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "data", "message"),
    [
        (
            CHAT,
            sse(chat_chunk({"content": "par"}), {"error": {"message": "Upstream overloaded", "type": "server_error"}}),
            "Upstream overloaded",
        ),
        ("/v1/completions", sse({"choices": [{"text": "a"}]}, {"error": {"message": "boom"}}), "boom"),
        (
            "/v1/messages",
            sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, event="error"),
            "Overloaded",
        ),
        ("/v1/messages", sse({"error": "not the usual shape"}, event="error"), "not the usual shape"),
        ("/v1/messages", b"event: error\ndata: {}\n\n", "error"),
        (
            "/v1/responses",
            sse({"type": "error", "code": "ERR_SOMETHING", "message": "Something went wrong", "param": None}),
            "Something went wrong",
        ),
        (
            "/v1/responses",
            sse(
                {
                    "type": "response.failed",
                    "response": {"status": "failed", "error": {"code": "server_error", "message": "failed hard"}, "output": []},
                }
            ),
            "failed hard",
        ),
        ("/api/chat", b'{"message":{"content":"x"},"done":false}\n{"error":"model crashed"}\n', "model crashed"),
        ("/api/generate", b'{"error":"out of memory"}', "out of memory"),
    ],
)
def test_error_events_set_error(path: str, data: bytes, message: str) -> None:
    for codec in (None, ToolNameCodec(["a.b"])):
        out, folded = drive(path, data, codec)
        assert b"".join(out) == data
        assert folded.error == message


# -- malformed events ----------------------------------------------------------------------


@pytest.mark.parametrize("codec", [None, ToolNameCodec([GH])], ids=["passthrough", "rewrite"])
def test_malformed_event_json_passes_through_and_is_skipped(codec: ToolNameCodec | None) -> None:
    data = (
        sse(chat_chunk({"role": "assistant", "content": "Hel"}))
        + b'data: {"choices": [tool_calls broken\n\n'
        + b"data: [1, 2]\n\n"
        + sse(chat_chunk({"content": "lo"}, finish="stop"), "[DONE]")
    )
    out, folded = drive(CHAT, data, codec, [5, 77, 150])
    assert b"".join(out) == data
    assert folded.text == "Hello" and folded.finish_reason == "stop" and folded.error is None


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses", "/api/chat"])
def test_malformed_json_in_other_apis_passes_through(path: str) -> None:
    data = b"data: {oops\n\n" if path != "/api/chat" else b"{oops\n\n"
    out, folded = drive(path, data, ToolNameCodec(["a.b"]))
    assert b"".join(out) == data and folded.error is None


# -- latency: rewriting holds only the partial tail ------------------------------------------


def test_rewrite_emits_complete_events_immediately() -> None:
    data = (FIXTURES / "anthropic_tools.sse").read_bytes()
    client = (FIXTURES / "anthropic_tools.client.sse").read_bytes()
    proc = processor("/v1/messages", ToolNameCodec(["filesystem:read_file"]))
    boundary = data.index(b"\n\n", 1500) + 2
    first = proc.feed(data[: boundary + 10])
    upstream_events = data[:boundary].count(b"\n\n")
    assert first.count(b"\n\n") == upstream_events  # all complete events, nothing more
    assert first == client[: len(first)]
    assert first + proc.feed(data[boundary + 10 :]) + proc.end() == client


# -- chat: names split across deltas ------------------------------------------------------------


def test_chat_name_prefix_of_another_alias_waits_for_next_event() -> None:
    codec = ToolNameCodec(["search", "search.v2"])
    v2 = codec.encode("search.v2")
    assert v2.startswith("search")
    first = sse(chat_chunk(call_delta(0, "search", "", "c1")))
    proc = processor(CHAT, codec)
    assert proc.feed(first) == b""  # "search" could still grow into the alias of search.v2
    rest = sse(chat_chunk(call_delta(0, v2[len("search") :])), chat_chunk(call_delta(0, arguments="{}")))
    out = proc.feed(rest) + proc.end()
    events = [json.loads(line[6:]) for line in out.split(b"\n\n") if line.startswith(b"data: ")]
    names = [e["choices"][0]["delta"]["tool_calls"][0]["function"].get("name") for e in events]
    assert names == ["search.v2", None, None]
    assert proc.result().tool_calls == (ToolCall("c1", "search.v2", "{}"),)


def test_chat_stream_ending_mid_name_releases_held_events() -> None:
    codec = ToolNameCodec([GH])
    data = sse(chat_chunk(call_delta(0, "github_sea", "", "c1")))
    proc = processor(CHAT, codec)
    assert proc.feed(data) == b""
    assert proc.end() == data  # not a known alias: nothing to restore, bytes unchanged
    assert proc.result().tool_calls == (ToolCall("c1", "github_sea", ""),)


def test_chat_whole_name_repeated_in_later_deltas_is_restored_each_time() -> None:
    codec = ToolNameCodec([GH])
    data = sse(chat_chunk(call_delta(0, GH_ALIAS, "", "c1")), chat_chunk(call_delta(0, GH_ALIAS, "{}")))
    out, _ = drive(CHAT, data, codec)
    assert b"".join(out).count(b'"name":"github.search_issues"') == 2
    assert GH_ALIAS.encode() not in b"".join(out)


def test_chat_interleaved_choices_and_parallel_calls() -> None:
    codec = ToolNameCodec([GH, "calendar.create event"])
    cal = codec.encode("calendar.create event")
    data = sse(
        chat_chunk(call_delta(0, GH_ALIAS[:7], "", "a"), index=0),
        chat_chunk(call_delta(0, cal[:5], "", "b"), index=1),  # the other choice speaks: choice 0 still pending
        chat_chunk(call_delta(0, GH_ALIAS[7:]), index=0),
        chat_chunk(call_delta(0, cal[5:]), index=1),
        chat_chunk(call_delta(0, arguments="{}"), index=0),
        chat_chunk(call_delta(0, arguments="[]"), index=1),
        chat_chunk({}, index=0, finish="tool_calls"),
    )
    for cuts in ([], [13, 200, 401, 402]):
        out, folded = drive(CHAT, data, codec, cuts)
        body = b"".join(out)
        assert body.count(b'"name":"github.search_issues"') == 1
        assert body.count(b'"name":"calendar.create event"') == 1
        assert folded.tool_calls == (ToolCall("a", GH, "{}"),)
        choices = folded.message["choices"]
        assert choices[1]["message"]["tool_calls"][0]["function"] == {"name": "calendar.create event", "arguments": "[]"}


def test_chat_usage_chunk_completes_a_pending_name() -> None:
    codec = ToolNameCodec(["search", "search.v2"])
    data = sse(
        chat_chunk(call_delta(0, "search", "", "c1")),
        {"id": "c", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
    )
    proc = processor(CHAT, codec)
    assert proc.feed(data) == data  # "search" is complete once the call has moved on
    assert proc.result().usage == Usage(1, 2, 3)


def test_chat_keepalive_comment_does_not_complete_a_name() -> None:
    codec = ToolNameCodec(["search", "search.v2"])
    proc = processor(CHAT, codec)
    assert proc.feed(sse(chat_chunk(call_delta(0, "search", "", "c1"))) + b": ping\n\n") == b""


def test_chat_legacy_function_call_and_custom_tools_stream() -> None:
    codec = ToolNameCodec([GH, "sql query"])
    sql = codec.encode("sql query")
    data = sse(
        chat_chunk({"role": "assistant", "function_call": {"name": GH_ALIAS, "arguments": ""}}),
        chat_chunk({"function_call": {"arguments": '{"q":1}'}}),
        chat_chunk({"tool_calls": [{"index": 0, "id": "x", "type": "custom", "custom": {"name": sql, "input": "sel"}}]}),
        chat_chunk({"tool_calls": [{"index": 0, "custom": {"input": "ect 1"}}]}, finish="function_call"),
    )
    out, folded = drive(CHAT, data, codec, [40])
    body = b"".join(out)
    assert GH_ALIAS.encode() not in body and sql.encode() not in body
    message = folded.message["choices"][0]["message"]
    assert message["function_call"] == {"name": GH, "arguments": '{"q":1}'}
    assert message["tool_calls"] == [{"id": "x", "type": "custom", "custom": {"name": "sql query", "input": "select 1"}}]
    assert folded.tool_calls == (ToolCall("x", "sql query", "select 1"), ToolCall(None, GH, '{"q":1}'))


def test_chat_reasoning_refusal_and_missing_indexes() -> None:
    data = sse(
        {"choices": [{"delta": {"role": "assistant", "reasoning_content": "think "}}]},
        {
            "choices": [
                {
                    "delta": {
                        "reasoning": "more",
                        "refusal": "I can't",
                        "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
                    }
                }
            ]
        },
    )
    _, folded = drive(CHAT, data, None)
    message = folded.message["choices"][0]["message"]
    assert message["reasoning_content"] == "think more" and message["refusal"] == "I can't"
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}
    assert folded.message["id"] is None and folded.message["object"] == "chat.completion"


# -- completions -------------------------------------------------------------------------------


def test_completions_stream_reassembles_text() -> None:
    data = sse(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": "gpt-3.5-turbo-instruct",
            "system_fingerprint": "fp",
            "choices": [{"index": 0, "text": "Once "}],
        },
        {"id": "cmpl-1", "choices": [{"text": "upon"}, {"index": 1, "text": "B"}]},
        {
            "id": "cmpl-1",
            "choices": [{"index": 0, "text": "", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        },
        "[DONE]",
    )
    out, folded = drive("/v1/completions", data, ToolNameCodec(["a.b"]), [9])
    assert b"".join(out) == data
    assert folded.text == "Once upon" and folded.finish_reason == "length" and folded.usage == Usage(3, 2, 5)
    assert [c["text"] for c in folded.message["choices"]] == ["Once upon", "B"]
    assert folded.message["system_fingerprint"] == "fp"


# -- anthropic -----------------------------------------------------------------------------------


def test_anthropic_partial_and_odd_events() -> None:
    codec = ToolNameCodec(["fs/read file"])
    alias = codec.encode("fs/read file")
    data = sse(
        {
            "type": "message_start",
            "message": {
                "id": "m",
                "type": "message",
                "role": "assistant",
                "model": "claude",
                "content": [{"type": "tool_use", "id": "pre", "name": alias, "input": {}}],
                "usage": {"input_tokens": 5, "output_tokens": 1},
            },
        },
        {"type": "content_block_delta", "index": 3, "delta": {"type": "text_delta", "text": "no start"}},
        {"type": "content_block_delta", "index": 4, "delta": {"type": "input_json_delta", "partial_json": '{"a": '}},
        {"type": "content_block_start", "index": 5, "content_block": {"type": "text", "text": "", "citations": []}},
        {"type": "content_block_delta", "index": 5, "delta": {"type": "citations_delta", "citation": {"cited_text": "c"}}},
        {"type": "content_block_delta", "index": 5, "delta": {"type": "mystery_delta"}},
        {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "no index"}},
        {"type": "content_block_start", "content_block": {"type": "text"}},
        {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 9, "input_tokens": None}},
    )
    out, folded = drive("/v1/messages", data, codec)
    body = b"".join(out)
    assert alias.encode() not in body and b'"name":"fs/read file"' in body
    content = folded.message["content"]
    assert content[0] == {"type": "text", "text": "no start"}
    assert content[1] == {"type": "tool_use", "input": '{"a": '}  # cut-off JSON kept as text
    assert content[2]["citations"] == [{"cited_text": "c"}]
    assert folded.finish_reason == "max_tokens"
    assert folded.usage == Usage(5, 9, 14)  # a null in message_delta keeps message_start's count
    assert folded.text == "no start"


def test_anthropic_message_start_content_is_kept_without_blocks() -> None:
    codec = ToolNameCodec(["fs/read file"])
    alias = codec.encode("fs/read file")
    data = sse({"type": "message_start", "message": {"content": [{"type": "tool_use", "id": "t", "name": alias, "input": {}}]}})
    _, folded = drive("/v1/messages", data, codec)
    assert folded.tool_calls == (ToolCall("t", "fs/read file", "{}"),)


def test_anthropic_empty_stream_and_empty_tool_input() -> None:
    _, folded = drive("/v1/messages", b"", None)
    assert folded.message == {"type": "message", "role": "assistant", "content": []}
    data = sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "n", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}},
    )
    _, folded = drive("/v1/messages", data, None)
    assert folded.tool_calls == (ToolCall("t", "n", "{}"),)


# -- responses -------------------------------------------------------------------------------------


def test_responses_without_completed_event_is_assembled_from_deltas() -> None:
    data = (FIXTURES / "responses_tools.sse").read_bytes()
    cut = data.index(b"event: response.completed")
    codec = ToolNameCodec([GH])
    out, folded = drive("/v1/responses", data[:cut], codec, [700])
    assert b"".join(out) == (FIXTURES / "responses_tools.client.sse").read_bytes()[: len(b"".join(out))]
    assert folded.text == "Let me check the issues — ça arrive."
    assert folded.tool_calls == (ToolCall("call_12345xyz", GH, '{"repo":"llmproxy","query":"panic"}'),)
    assert folded.finish_reason == "in_progress"  # it never completed, and the record says so


def test_responses_items_from_deltas_only() -> None:
    codec = ToolNameCodec([GH])
    data = sse(
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"type": "function_call", "call_id": "c", "name": GH_ALIAS, "arguments": ""},
        },
        {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": '{"a":'},
        {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": "1}"},
        {"type": "response.output_text.delta", "output_index": 1, "content_index": 0, "delta": "hi "},
        {"type": "response.output_text.delta", "output_index": 1, "content_index": 0, "delta": "there"},
        {
            "type": "response.content_part.added",
            "output_index": 1,
            "content_index": 1,
            "part": {"type": "refusal", "refusal": ""},
        },
        {"type": "response.refusal.delta", "output_index": 1, "content_index": 1, "delta": "nope"},
        {"type": "response.output_text.delta", "output_index": 1, "delta": "no content index"},
        {"type": "response.custom_tool_call_input.delta", "output_index": 2, "delta": 5},
        {"type": "response.output_text.delta", "delta": "no output index"},
    )
    out, folded = drive("/v1/responses", data, codec)
    assert GH_ALIAS.encode() not in b"".join(out)
    output = folded.message["output"]
    assert output[0] == {"type": "function_call", "call_id": "c", "name": GH, "arguments": '{"a":1}'}
    assert output[1]["content"] == [{"type": "output_text", "text": "hi there"}, {"type": "refusal", "refusal": "nope"}]
    assert folded.message["object"] == "response"


def test_responses_content_part_done_replaces_deltas() -> None:
    data = sse(
        {"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "content": []}},
        {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "draft"},
        {
            "type": "response.content_part.done",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": "final"},
        },
    )
    _, folded = drive("/v1/responses", data, None)
    assert folded.text == "final"


# -- robustness: any JSON in any event never raises ---------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-3, max_value=3) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=15,
)
event_keys = st.sampled_from(
    [
        "type",
        "index",
        "delta",
        "choices",
        "message",
        "content_block",
        "response",
        "item",
        "output_index",
        "content_index",
        "part",
        "usage",
        "error",
        "tool_calls",
        "function",
        "name",
        "done",
        "text",
        "content",
    ]
)
event_objects = st.recursive(
    st.dictionaries(event_keys, json_values, max_size=5),
    lambda children: st.dictionaries(event_keys, children | json_values | st.lists(children, max_size=2), max_size=5),
    max_leaves=12,
)
event_types = st.sampled_from(
    [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "message_delta",
        "error",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_text.delta",
        "response.content_part.added",
        "response.content_part.done",
        "response.completed",
        "response.function_call_arguments.delta",
        "response.created",
        None,
    ]
)


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from([CHAT, "/v1/completions", "/v1/messages", "/v1/responses", "/api/chat", "/api/generate"]),
    st.lists(st.tuples(event_types, event_objects), max_size=6),
    st.booleans(),
)
def test_property_arbitrary_events_never_raise(path: str, events: list, rewriting: bool) -> None:
    codec = ToolNameCodec(["a.b", "name", ""]) if rewriting else None
    if path.startswith("/api/"):
        data = b"".join(json.dumps(obj).encode() + b"\n" for _, obj in events)
    else:
        data = b"".join(sse(dict(obj, type=kind) if kind else obj) for kind, obj in events)
    out, folded = drive(path, data, codec, [len(data) // 2])
    assert isinstance(folded.message, dict)
    if not rewriting:
        assert b"".join(out) == data


# -- smaller paths ---------------------------------------------------------------------------------


def test_passthrough_stream_cut_before_final_blank_line_still_reassembles() -> None:
    data = sse(chat_chunk({"content": "a"})) + b'data: {"choices":[{"index":0,"delta":{"content":"b"}}]}'
    out, folded = drive(CHAT, data, None, [3])
    assert b"".join(out) == data and folded.text == "ab"


def test_ollama_generate_thinking_and_string_parts() -> None:
    data = (
        b'{"thinking":"hmm ","response":"","done":false}\n{"thinking":"ok","response":"Yes","done":true,"done_reason":"stop"}\n'
    )
    _, folded = drive("/api/generate", data, None, [20])
    assert folded.message["thinking"] == "hmm ok" and folded.text == "Yes"
    assert folded.message["done"] is True


@pytest.mark.parametrize("path", [CHAT, "/v1/messages", "/v1/responses"])
def test_unhashable_type_fields_do_not_raise(path: str) -> None:
    odd = {
        "type": ["list"],
        "index": 0,
        "output_index": 0,
        "delta": {"type": {"a": 1}},
        "item": {"type": []},
        "choices": [{"delta": {"tool_calls": [{"type": [], "function": {"name": "x"}}]}}],
    }
    data = sse(
        {"type": "response.output_item.added", "output_index": 0, "item": {"type": ["x"]}},
        odd,
        dict(odd, type="content_block_delta"),
    )
    out, folded = drive(path, data, ToolNameCodec(["a.b"]))
    assert b"".join(out) == data and isinstance(folded.message, dict)


def test_ollama_line_with_unknown_tool_names_is_left_byte_identical() -> None:
    line = b'{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"other" ,"arguments":{}}}]},"done":false}\n'
    out, folded = drive("/api/chat", line, ToolNameCodec(["a.b"]))
    assert b"".join(out) == line
    assert folded.tool_calls == (ToolCall(None, "other", "{}"),)
