"""Provider-aware request edits (OpenAI Chat, Responses, Anthropic Messages, Ollama, legacy
completions), JSON pointers, applying decisions to bodies, and redaction of texts by a plan."""

from __future__ import annotations

import copy

import pytest

from extproc.policy import Redactions, apply_request, apply_response, redact_text
from extproc.providers import edits
from extproc.providers.edits import EditNotSupported
from extproc.providers.registry import endpoint_for
from intelligence.detectors.spans import Span
from intelligence.policy import pointer as jp
from intelligence.policy.testing import request_facts, response_facts, snapshot


def chat_body() -> dict:
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Use JSON."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "last"}, {"type": "image_url", "image_url": {"url": "u"}}]},
        ],
        "max_tokens": 4000,
    }


def responses_body() -> dict:
    return {
        "model": "gpt-4.1",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": "hello"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "and now?"}]},
        ],
        "max_output_tokens": 9000,
    }


def anthropic_body() -> dict:
    return {
        "model": "claude-sonnet-4",
        "max_tokens": 2048,
        "system": [{"type": "text", "text": "Policy A", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}, {"type": "text", "text": "explain"}],
            },
        ],
    }


# ------------------------------------------------------------------------------------------ prompt decorators
def test_chat_system_and_user_decorators() -> None:
    body = chat_body()
    assert edits.prepend_message("chat", body, "system", "SAFE") == "prepend system text (4 chars)"
    edits.append_message("chat", body, "system", "AFTER")
    edits.prepend_message("chat", body, "user", "NOTE")
    edits.append_message("chat", body, "user", "END")
    roles = [(m["role"], m["content"] if isinstance(m["content"], str) else None) for m in body["messages"][:4]]
    assert roles == [("system", "SAFE"), ("system", "You are terse."), ("developer", "Use JSON."), ("system", "AFTER")]
    last = body["messages"][-1]["content"]
    assert last[0] == {"type": "text", "text": "NOTE"} and last[-1] == {"type": "text", "text": "END"}
    assert last[1]["text"] == "last" and last[2]["type"] == "image_url"
    assert body["messages"][4]["content"] == "first"  # only the last user turn is decorated
    view = endpoint_for("/v1/chat/completions").parse_request(body)
    assert view.system.startswith("SAFE") and view.system.endswith("AFTER")


def test_chat_string_user_content_and_no_user_turn() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    edits.prepend_message("chat", body, "user", "A")
    edits.append_message("chat", body, "user", "B")
    assert body["messages"][0]["content"] == "A\n\nq\n\nB"
    empty: dict = {"model": "m"}
    edits.append_message("chat", empty, "user", "hello")
    edits.append_message("chat", empty, "system", "sys")
    assert empty["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}]


def test_responses_decorators() -> None:
    body = responses_body()
    edits.prepend_message("responses", body, "system", "SAFE")
    edits.append_message("responses", body, "user", "END")
    edits.prepend_message("responses", body, "user", "NOTE")
    assert body["instructions"] == "SAFE\n\nBe brief."
    content = body["input"][-1]["content"]
    assert content == [
        {"type": "input_text", "text": "NOTE"},
        {"type": "input_text", "text": "and now?"},
        {"type": "input_text", "text": "END"},
    ]
    assert body["input"][0]["content"] == "hello"
    view = endpoint_for("/v1/responses").parse_request(body)
    assert view.system.startswith("SAFE") and "END" in view.last_user
    plain = {"model": "m", "input": "question"}
    edits.append_message("responses", plain, "user", "x")
    edits.append_message("responses", plain, "system", "sys")
    assert plain == {"model": "m", "input": "question\n\nx", "instructions": "sys"}
    only_tools = {"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]}
    edits.append_message("responses", only_tools, "user", "go on")
    assert only_tools["input"][-1] == {"role": "user", "content": "go on"}
    with pytest.raises(EditNotSupported):
        edits.append_message("responses", {"input": 5}, "user", "x")


def test_anthropic_decorators_keep_tool_results_first() -> None:
    body = anthropic_body()
    edits.prepend_message("messages", body, "system", "SAFE")
    edits.append_message("messages", body, "system", "LAST")
    edits.prepend_message("messages", body, "user", "NOTE")
    edits.append_message("messages", body, "user", "END")
    assert [b["text"] for b in body["system"]] == ["SAFE", "Policy A", "LAST"]
    assert body["system"][1]["cache_control"] == {"type": "ephemeral"}
    blocks = body["messages"][-1]["content"]
    assert [b["type"] for b in blocks] == ["tool_result", "text", "text", "text"]
    assert [b.get("text") for b in blocks[1:]] == ["NOTE", "explain", "END"]
    string_system = {"model": "c", "max_tokens": 5, "system": "S", "messages": [{"role": "user", "content": "q"}]}
    edits.append_message("messages", string_system, "system", "T")
    edits.prepend_message("messages", string_system, "user", "P")
    assert string_system["system"] == "S\n\nT" and string_system["messages"][0]["content"] == "P\n\nq"
    no_system = {"model": "c", "messages": []}
    edits.prepend_message("messages", no_system, "system", "S")
    assert no_system["system"] == "S"


def test_ollama_and_completions_and_unsupported() -> None:
    chat = {"model": "llama3", "messages": [{"role": "user", "content": "q"}]}
    edits.prepend_message("ollama_chat", chat, "system", "S")
    edits.append_message("ollama_chat", chat, "user", "U")
    assert chat["messages"] == [{"role": "system", "content": "S"}, {"role": "user", "content": "q\n\nU"}]
    gen = {"model": "llama3", "prompt": "p"}
    edits.prepend_message("ollama_generate", gen, "system", "S")
    edits.append_message("ollama_generate", gen, "user", "U")
    assert gen == {"model": "llama3", "prompt": "p\n\nU", "system": "S"}
    comp = {"model": "gpt-3.5-turbo-instruct", "prompt": "p"}
    edits.prepend_message("completions", comp, "user", "U")
    assert comp["prompt"] == "U\n\np"
    with pytest.raises(EditNotSupported):
        edits.prepend_message("completions", comp, "system", "S")
    with pytest.raises(EditNotSupported):
        edits.prepend_message("completions", {"prompt": ["a", "b"]}, "user", "U")
    with pytest.raises(EditNotSupported):
        edits.prepend_message("embeddings", {"input": "x"}, "user", "U")
    assert edits.prepend_message("chat", {"messages": []}, "user", "") is None


# ------------------------------------------------------------------------------------------ max tokens and model
@pytest.mark.parametrize(
    ("api", "provider", "body", "expected"),
    [
        ("chat", "openai", {"max_tokens": 4000}, {"max_tokens": 100}),
        ("chat", "openai", {"max_completion_tokens": 50}, {"max_completion_tokens": 50}),  # already below
        ("chat", "openai", {"max_completion_tokens": 500, "max_tokens": 700}, {"max_completion_tokens": 100, "max_tokens": 100}),
        ("chat", "openai", {}, {"max_completion_tokens": 100}),
        ("chat", "openrouter", {}, {"max_tokens": 100}),
        ("chat", None, {"max_tokens": "lots"}, {"max_tokens": 100}),
        ("responses", "openai", {"max_output_tokens": 9000}, {"max_output_tokens": 100}),
        ("responses", "openai", {}, {"max_output_tokens": 100}),
        ("messages", "anthropic", {"max_tokens": 2048}, {"max_tokens": 100}),
        ("completions", "openai", {"max_tokens": 16}, {"max_tokens": 16}),
        ("ollama_chat", "ollama", {"options": {"num_predict": -1}}, {"options": {"num_predict": 100}}),
        ("ollama_generate", "ollama", {}, {"options": {"num_predict": 100}}),
    ],
)
def test_cap_max_tokens_per_api(api: str, provider: str | None, body: dict, expected: dict) -> None:
    before = copy.deepcopy(body)
    change = edits.cap_max_tokens(api, body, 100, provider=provider)
    assert body == expected
    assert (change is None) == (before == expected)


def test_cap_max_tokens_unsupported() -> None:
    with pytest.raises(EditNotSupported):
        edits.cap_max_tokens("embeddings", {}, 10)
    with pytest.raises(EditNotSupported):
        edits.cap_max_tokens("ollama_chat", {"options": "fast"}, 10)


def test_set_model() -> None:
    body = {"model": "fast"}
    assert edits.set_model("messages", body, "claude-haiku") == "model 'fast' -> 'claude-haiku'"
    assert edits.set_model("messages", body, "claude-haiku") is None
    with pytest.raises(EditNotSupported):
        edits.set_model(None, body, "x")


# ------------------------------------------------------------------------------------------ pointers
def test_json_pointer_operations() -> None:
    doc = {"a": {"b~c": [1, 2], "d/e": 1}, "list": []}
    assert jp.parse_pointer("/a/b~0c/1") == ("a", "b~c", "1")
    assert jp.get(doc, jp.parse_pointer("/a/b~0c/1")) == 2
    assert jp.get(doc, jp.parse_pointer("/a/d~1e")) == 1
    assert jp.get(doc, ("a", "b~c", "01")) is None  # leading zeros are not indexes
    assert jp.set_value(doc, ("x", "y"), 3) and doc["x"] == {"y": 3}  # parents created
    assert jp.set_value(doc, ("list", "-"), "end") and doc["list"] == ["end"]
    assert jp.set_value(doc, ("list", "0"), "first") and doc["list"] == ["first"]
    assert not jp.set_value(doc, ("list", "5"), "x")
    assert not jp.set_value(doc, ("a", "d/e", "z"), 1)  # through a number
    assert not jp.set_value(doc, (), 1)
    assert jp.remove(doc, ("a", "b~c", "0")) and doc["a"]["b~c"] == [2]
    assert not jp.remove(doc, ("nope",)) and not jp.remove(doc, ())
    with pytest.raises(jp.PointerError):
        jp.parse_pointer("a/b")
    assert jp.parse_pointer("") == ()


def test_field_edits() -> None:
    body: dict = {"temperature": 1.0, "metadata": {"a": 1}}
    value = {"nested": [1]}
    assert edits.set_field(body, "/metadata/team", value) == "set /metadata/team"
    value["nested"].append(2)
    assert body["metadata"]["team"] == {"nested": [1]}  # cloned, not shared with the policy
    assert edits.set_field(body, "/temperature", 1.0) is None
    assert edits.default_field(body, "/temperature", 0.2) is None
    assert edits.default_field(body, "/top_p", 0.9) == "default /top_p"
    assert edits.remove_field(body, "/metadata/a") == "remove /metadata/a"
    assert edits.remove_field(body, "/metadata/a") is None
    with pytest.raises(EditNotSupported):
        edits.set_field(body, "/temperature/x", 1)
    with pytest.raises(EditNotSupported):
        edits.default_field(body, "/temperature/y", 1)


# ------------------------------------------------------------------------------------------ applying decisions
TRANSFORMS = {
    "id": "shape",
    "actions": {
        "route": {"model": "gpt-4o-mini"},
        "cap_max_tokens": 256,
        "prepend_system": "Follow company policy.",
        "append_user": "Answer in English.",
        "set_fields": {"/temperature": 0.2},
        "default_fields": {"/top_p": 0.9},
        "remove_fields": ["/logit_bias"],
        "strip_response_fields": ["/system_fingerprint"],
        "rewrite_response_fields": {"/model": "gateway-model"},
    },
}


def test_apply_request_on_chat() -> None:
    snap = snapshot(TRANSFORMS)
    body = chat_body() | {"logit_bias": {"1": 5}}
    decision = snap.evaluate_request(request_facts(model="gpt-4o"))
    made = apply_request(decision, "chat", body, provider="openai")
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.2 and body["top_p"] == 0.9
    assert "logit_bias" not in body and body["max_tokens"] == 256
    assert body["messages"][0] == {"role": "system", "content": "Follow company policy."}
    assert body["messages"][-1]["content"][-1] == {"type": "text", "text": "Answer in English."}
    assert made == [
        "model 'gpt-4o' -> 'gpt-4o-mini' [test/shape]",
        "set /temperature [test/shape]",
        "default /top_p [test/shape]",
        "remove /logit_bias [test/shape]",
        "max_tokens 4000 -> 256 [cap_max_tokens]",
        "prepend system text (22 chars) [test/shape]",
        "append user text (18 chars) [test/shape]",
    ]


def test_apply_request_on_anthropic_and_responses() -> None:
    snap = snapshot(TRANSFORMS, aliases={"fast": "claude-haiku"})
    a_body = anthropic_body()
    made = apply_request(
        snap.evaluate_request(request_facts(api="messages", provider="anthropic", model="fast")), "messages", a_body
    )
    assert a_body["model"] == "gpt-4o-mini"  # the rule's route wins over the alias
    assert a_body["max_tokens"] == 256 and a_body["system"][0]["text"] == "Follow company policy."
    assert any(m.startswith("model 'claude-sonnet-4' -> 'gpt-4o-mini'") for m in made)
    r_body = responses_body()
    apply_request(snap.evaluate_request(request_facts(api="responses")), "responses", r_body)
    assert r_body["max_output_tokens"] == 256 and r_body["instructions"].startswith("Follow company policy.")


def test_alias_only_decision_sets_the_model() -> None:
    snap = snapshot({"id": "noop", "match": {"models": ["nothing"]}, "actions": {"tag": "x"}}, aliases={"fast": "gpt-4o-mini"})
    body = {"model": "fast", "messages": []}
    made = apply_request(snap.evaluate_request(request_facts(model="fast")), "chat", body)
    assert body["model"] == "gpt-4o-mini" and made == ["model 'fast' -> 'gpt-4o-mini' [aliases]"]


def test_apply_request_skips_what_the_api_cannot_take_and_nothing_when_blocked() -> None:
    snap = snapshot({"id": "deco", "actions": {"prepend_system": "x", "cap_max_tokens": 5}})
    body = {"model": "text-embedding-3-small", "input": "hi"}
    made = apply_request(snap.evaluate_request(request_facts(api="embeddings")), "embeddings", body)
    assert body == {"model": "text-embedding-3-small", "input": "hi"}
    assert all(m.startswith("skipped: ") for m in made) and len(made) == 2
    blocked = snapshot({"id": "b", "actions": {"block": True}})
    body = chat_body()
    assert apply_request(blocked.evaluate_request(request_facts()), "chat", body) == [] and body == chat_body()


def test_apply_response_strips_and_rewrites() -> None:
    snap = snapshot(TRANSFORMS)
    decision = snap.evaluate_request(request_facts())
    response = {"id": "x", "model": "gpt-4o-mini-2024", "system_fingerprint": "fp", "choices": []}
    made = apply_response(snap.evaluate_response(response_facts(request_decision=decision)), "chat", response)
    assert response == {"id": "x", "model": "gateway-model", "choices": []}
    assert made == ["remove /system_fingerprint [test/shape]", "set /model [test/shape]"]


# ------------------------------------------------------------------------------------------ redaction by plan
def test_redact_text_by_plan_with_restore_split() -> None:
    snap = snapshot(
        {"id": "pii", "actions": {"redact": {"kinds": ["pii"], "restore": True}}},
        {"id": "keys", "actions": {"redact": ["secrets"]}},
        {"id": "cards", "actions": {"mask": ["CREDIT_CARD"]}},
    )
    plan = snap.evaluate_request(request_facts()).redact
    text = "mail bob@x.io key AKIAABCDEFGHIJKLMNOP card 4111111111111111 bob@x.io"
    spans = [
        ("pii", Span("EMAIL_ADDRESS", 5, 13, 1.0, "t")),
        ("secrets", Span("AWS_ACCESS_KEY", 18, 38, 1.0, "t")),
        ("pii", Span("CREDIT_CARD", 44, 60, 1.0, "t")),
        ("pii", Span("EMAIL_ADDRESS", 61, 69, 1.0, "t")),
        ("pii", Span("PERSON", 5, 8, 0.5, "t")),
    ]  # overlaps the email: dropped
    state = Redactions.new()
    out = redact_text(plan, text, spans, state)
    assert out == "mail <EMAIL_1> key <AWS_ACCESS_KEY_1> card <CREDIT_CARD> <EMAIL_1>"
    assert state.restore("reply to <EMAIL_1> about <AWS_ACCESS_KEY_1>") == "reply to bob@x.io about <AWS_ACCESS_KEY_1>"
    assert state.counts == {"EMAIL": 1, "AWS_ACCESS_KEY": 1}
    assert redact_text(plan, "nothing", [], state) == "nothing"
    none_plan = snapshot({"id": "t", "actions": {"tag": "x"}}).evaluate_request(request_facts()).redact
    assert redact_text(none_plan, text, spans, Redactions.new()) == text
