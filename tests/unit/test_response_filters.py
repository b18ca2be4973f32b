"""Response-side text filters and the SSE text rewriter: placeholders split anywhere are restored,
model-produced values are masked, and nothing but a possible placeholder start is held back."""

from __future__ import annotations

import json
import re

import pytest

from extproc.providers.sse import SSEDecoder
from extproc.providers.textstream import Slot, SSETextRewriter
from intelligence.detectors.response import MaskingFilter, PlaceholderRestorer, rewrite_response_texts
from intelligence.detectors.spans import Span

MAPPING = {"<EMAIL_1>": "ann@example.com", "<EMAIL_2>": "bob@example.org", "<PHONE_1>": '+1 "555" 0100'}
TEXT = "Write to <EMAIL_1> or <EMAIL_2>; call <PHONE_1>. Tags like <b> and a < b stay. <EMAIL_9> is unknown."
RESTORED = 'Write to ann@example.com or bob@example.org; call +1 "555" 0100. Tags like <b> and a < b stay. <EMAIL_9> is unknown.'
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def email_finder(text: str) -> list[Span]:
    return [Span("EMAIL_ADDRESS", m.start(), m.end(), 1.0, "test") for m in EMAIL.finditer(text)]


def stream(filter_, pieces) -> str:
    return "".join(filter_.feed(p) for p in pieces) + filter_.flush()


def test_restorer_equals_whole_text_restore_for_every_split() -> None:
    for i in range(len(TEXT) + 1):
        for j in range(i, len(TEXT) + 1, 7):
            assert stream(PlaceholderRestorer(MAPPING), [TEXT[:i], TEXT[i:j], TEXT[j:]]) == RESTORED
    assert stream(PlaceholderRestorer(MAPPING), list(TEXT)) == RESTORED


def test_restorer_holds_back_only_a_possible_placeholder_start() -> None:
    r = PlaceholderRestorer(MAPPING)
    assert r.feed("a <b") == "a <b"  # no placeholder of this request starts with "<b"
    assert r.feed("> text <EMA") == "> text "
    assert r.feed("IL_1> done") == "ann@example.com done"
    assert r.feed("plain") == "plain"
    assert r.feed("<PHONE_") == ""
    assert r.flush() == "<PHONE_"  # the end of the text: what was held goes out as it was
    assert r.restored == 1


def test_restorer_escapes_values_inside_json_text() -> None:
    r = PlaceholderRestorer(MAPPING, json_text=True)
    args = stream(r, ['{"to": "<PHO', 'NE_1>"}'])
    assert json.loads(args) == {"to": '+1 "555" 0100'}


def test_masking_filter_masks_values_split_across_chunks() -> None:
    text = "Reach me at carol.smith@example.net, or dave@example.com later."
    for i in range(len(text) + 1):
        out = stream(MaskingFilter(email_finder), [text[:i], text[i:]])
        assert out == "Reach me at <EMAIL>, or <EMAIL> later.", i


def openai_sse(pieces: list[str], *, finish: str = "stop") -> bytes:
    out = []
    for p in pieces:
        chunk = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}],
        }
        out.append(f"data: {json.dumps(chunk)}\n\n")
    out.append(
        "data: "
        + json.dumps(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": "m",
                "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
            }
        )
        + "\n\n"
    )
    out.append("data: [DONE]\n\n")
    return "".join(out).encode()


def anthropic_sse(pieces: list[str], args: list[str]) -> bytes:
    events = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {"id": "m1", "type": "message", "role": "assistant", "content": [], "usage": {"input_tokens": 3}},
            },
        ),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ]
    events += [
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})
        for p in pieces
    ]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "t1", "name": "send", "input": {}},
            },
        ),
    ]
    events += [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": a}},
        )
        for a in args
    ]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return "".join(f"event: {name}\ndata: {json.dumps(doc)}\n\n" for name, doc in events).encode()


def rewrite(rewriter: SSETextRewriter, raw: bytes, size: int) -> bytes:
    parts = [raw[i : i + size] for i in range(0, len(raw), size)]
    return b"".join(rewriter.feed(p) for p in parts) + rewriter.end()


def events_of(raw: bytes) -> list[tuple[str | None, dict | str]]:
    d = SSEDecoder()
    evs = d.feed(raw) + d.end()
    return [(e.event, e.data if e.is_done else json.loads(e.data)) for e in evs if e.data is not None]


def restorer_factory(slot: Slot) -> PlaceholderRestorer:
    return PlaceholderRestorer(MAPPING, json_text=slot.json_text)


@pytest.mark.parametrize("size", [1, 3, 17, 64, 10_000])
def test_openai_stream_restores_placeholders_split_across_deltas_and_chunks(size: int) -> None:
    pieces = ["Write to <EM", "AIL_1", "> or <", "EMAIL_2>; call <PHONE_1", ">. Bye <EMA"]
    out = rewrite(SSETextRewriter("chat", restorer_factory), openai_sse(pieces), size)
    evs = events_of(out)
    assert evs[-1] == (None, "[DONE]")
    text = "".join(e["choices"][0]["delta"].get("content", "") for _, e in evs[:-1] if isinstance(e, dict))
    assert text == 'Write to ann@example.com or bob@example.org; call +1 "555" 0100. Bye <EMA'
    # the held "<EMA" went out in a synthetic delta *before* the finishing chunk
    finish_at = next(i for i, (_, e) in enumerate(evs) if isinstance(e, dict) and e["choices"][0]["finish_reason"])
    assert evs[finish_at - 1][1]["choices"][0]["delta"] == {"content": "<EMA"}
    assert evs[finish_at - 1][1]["id"] == "c1"


def test_openai_stream_tool_arguments_are_restored_as_json_text() -> None:
    chunks = [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "t", "type": "function", "function": {"name": "call", "arguments": '{"n": "<PHO'}}
                        ]
                    },
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'NE_1>"}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    raw = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks).encode()
    out = rewrite(SSETextRewriter("chat", restorer_factory), raw, 5)
    args = "".join(
        tc["function"].get("arguments", "") for _, e in events_of(out) for tc in e["choices"][0]["delta"].get("tool_calls", [])
    )
    assert json.loads(args) == {"n": '+1 "555" 0100'}


def test_events_without_placeholders_pass_byte_for_byte() -> None:
    raw = openai_sse(["Hello ", "there, a < b and <b>bold</b>."])
    assert rewrite(SSETextRewriter("chat", restorer_factory), raw, 7) == raw
    raw = anthropic_sse(["no placeholders ", "here"], ['{"a": 1}'])
    assert rewrite(SSETextRewriter("messages", restorer_factory), raw, 7) == raw


@pytest.mark.parametrize("size", [1, 9, 100_000])
def test_anthropic_stream_restores_text_and_tool_input(size: int) -> None:
    raw = anthropic_sse(["Mail <EMAIL", "_1> now, <EMAIL_2", "> and <EMAIL_"], ['{"to": "<EMA', 'IL_2>", "c": "<PHONE_1>"}'])
    evs = events_of(rewrite(SSETextRewriter("messages", restorer_factory), raw, size))
    text = "".join(
        e["delta"]["text"] for _, e in evs if e["type"] == "content_block_delta" and e["delta"]["type"] == "text_delta"
    )
    assert text == "Mail ann@example.com now, bob@example.org and <EMAIL_"
    args = "".join(
        e["delta"]["partial_json"]
        for _, e in evs
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(args) == {"to": "bob@example.org", "c": '+1 "555" 0100'}
    # held text is flushed inside its own block: before that block's stop event
    kinds = [(e["type"], e.get("index")) for _, e in evs]
    last_text = max(i for i, (_, e) in enumerate(evs) if e["type"] == "content_block_delta" and e["index"] == 0)
    assert kinds.index(("content_block_stop", 0)) == last_text + 1


def test_openai_stream_masking_across_deltas() -> None:
    raw = openai_sse(["Contact eve.", "adams@exam", "ple.com or f@x.io", " please"])
    out = rewrite(SSETextRewriter("chat", lambda slot: MaskingFilter(email_finder)), raw, 11)
    text = "".join(e["choices"][0]["delta"].get("content", "") for _, e in events_of(out) if isinstance(e, dict))
    assert text == "Contact <EMAIL> or <EMAIL> please"
    assert b"adams@" not in out


def test_unsupported_api_is_refused() -> None:
    with pytest.raises(ValueError):
        SSETextRewriter("completions", restorer_factory)
    with pytest.raises(ValueError):  # its done events repeat the text: a whole-text function is needed
        SSETextRewriter("responses", restorer_factory)


def responses_sse(pieces: list[str], args: list[str]) -> bytes:
    full, full_args = "".join(pieces), "".join(args)
    msg_done = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": full, "annotations": []}],
    }
    call_done = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "send", "arguments": full_args}
    events = [
        {"type": "response.created", "response": {"id": "resp_1", "object": "response", "output": []}},
        {"type": "response.output_item.added", "output_index": 0, "item": {**msg_done, "content": [], "status": "in_progress"}},
        {
            "type": "response.content_part.added",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
    ]
    events += [
        {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": p}
        for p in pieces
    ]
    events += [
        {"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": full},
        {
            "type": "response.content_part.done",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": full, "annotations": []},
        },
        {"type": "response.output_item.done", "output_index": 0, "item": msg_done},
        {"type": "response.output_item.added", "output_index": 1, "item": {**call_done, "arguments": ""}},
    ]
    events += [{"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1, "delta": a} for a in args]
    events += [
        {"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 1, "arguments": full_args},
        {"type": "response.output_item.done", "output_index": 1, "item": call_done},
        {
            "type": "response.completed",
            "response": {"id": "resp_1", "object": "response", "status": "completed", "output": [msg_done, call_done]},
        },
    ]
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


@pytest.mark.parametrize("size", [1, 13, 100_000])
def test_responses_stream_restores_deltas_done_events_and_final_response(size: int) -> None:
    plain, escaped = PlaceholderRestorer(MAPPING), PlaceholderRestorer(MAPPING, json_text=True)
    rw = SSETextRewriter("responses", restorer_factory, whole=lambda t, j: (escaped if j else plain).restore(t))
    raw = responses_sse(["Mail <EMAIL", "_1> or <EMA", "IL_2> ok <EMA"], ['{"to": "<PHONE', '_1>"}'])
    evs = [e for _, e in events_of(rewrite(rw, raw, size))]
    want = "Mail ann@example.com or bob@example.org ok <EMA"
    assert "".join(e["delta"] for e in evs if e["type"] == "response.output_text.delta") == want
    done = next(i for i, e in enumerate(evs) if e["type"] == "response.output_text.done")
    assert evs[done]["text"] == want and evs[done - 1] == {
        "type": "response.output_text.delta",
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "<EMA",
    }
    args = "".join(e["delta"] for e in evs if e["type"] == "response.function_call_arguments.delta")
    assert json.loads(args) == {"to": '+1 "555" 0100'}
    final = next(e for e in evs if e["type"] == "response.completed")["response"]["output"]
    assert final[0]["content"][0]["text"] == want and json.loads(final[1]["arguments"]) == {"to": '+1 "555" 0100'}
    assert "<EMAIL_1>" not in json.dumps(evs)


def test_rewrite_response_texts_leaves_structure_and_thinking_alone() -> None:
    doc = {
        "id": "<EMAIL_1>",
        "model": "<EMAIL_1>",
        "content": [
            {"type": "thinking", "thinking": "<EMAIL_1>", "signature": "sig"},
            {"type": "text", "text": "hi <EMAIL_1>"},
            {"type": "tool_use", "id": "t", "name": "<EMAIL_1>", "input": {"to": "<EMAIL_1>"}},
        ],
        "usage": {"note": "<EMAIL_1>"},
    }
    r = PlaceholderRestorer(MAPPING)
    assert rewrite_response_texts(doc, lambda t, j: r.restore(t)) == 2
    assert doc["content"][1]["text"] == "hi ann@example.com" and doc["content"][2]["input"] == {"to": "ann@example.com"}
    assert doc["id"] == doc["model"] == doc["content"][0]["thinking"] == doc["content"][2]["name"] == "<EMAIL_1>"
    assert doc["usage"] == {"note": "<EMAIL_1>"}


def test_relevance_filter_skips_plain_events_but_sees_escaped_placeholders() -> None:
    from extproc.providers.textstream import may_hold_placeholder

    pieces = ["Hi, write to <EM", "AIL_1> soon", " and that is all"]
    raw = openai_sse(pieces).replace(b"<", b"\\u003c")  # encoders that escape '<' in JSON strings
    parsed = []

    def factory(slot: Slot) -> PlaceholderRestorer:
        parsed.append(slot)
        return PlaceholderRestorer(MAPPING)

    out = rewrite(SSETextRewriter("chat", factory, relevant=may_hold_placeholder), raw, 13)
    text = "".join(e["choices"][0]["delta"].get("content", "") for _, e in events_of(out) if isinstance(e, dict))
    assert text == "Hi, write to ann@example.com soon and that is all"
    plain = openai_sse(["nothing ", "to ", "see"])
    rw = SSETextRewriter("chat", factory, relevant=may_hold_placeholder)
    parsed.clear()
    assert rewrite(rw, plain, 5) == plain and parsed == []  # never parsed, never changed
