"""Enhancement specs: validation, the JSON patch per API, applying it, and speed."""

from __future__ import annotations

import copy
import time

import pytest

from intelligence.enhance import spec as S

CHAT = {
    "model": "gpt-4o-mini",
    "temperature": 0.9,
    "messages": [
        {"role": "system", "content": "You write invoices."},
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "Invoice for 3 chairs, please"},
    ],
    "tools": [
        {"type": "function", "function": {"name": "lookup", "description": "old", "parameters": {}}},
        {"type": "function", "function": {"name": "price", "parameters": {}}},
    ],
}
MESSAGES = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "system": "You write invoices.",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Invoice for 3 chairs, please"}]}],
    "tools": [{"name": "lookup", "description": "old", "input_schema": {"type": "object"}}],
}


def patched(kind: str, spec: dict, doc: dict, api: str) -> tuple[list, dict]:
    before = copy.deepcopy(doc)
    patch = S.apply(S.parse_spec(kind, spec), doc, api)
    out = S.apply_patch(doc, patch)
    assert doc == before  # pure: the input is never mutated
    return patch, out


@pytest.mark.parametrize(
    ("kind", "spec", "why"),
    [
        ("system_prompt", {"text": ""}, "non-empty"),
        ("system_prompt", {"text": "x", "position": "middle"}, "position"),
        ("system_prompt", {"text": "x" * 9000}, "longer"),
        ("system_prompt", {"text": "x", "colour": "red"}, "unknown field"),
        ("instruction_rewrite", {}, "needs text"),
        ("instruction_rewrite", {"text": "a", "find": "b", "replace": "c"}, "not both"),
        ("instruction_rewrite", {"find": "a", "replace": "a"}, "no change"),
        ("instruction_rewrite", {"find": "a"}, "replace must be"),
        ("parameters", {}, "at least one"),
        ("parameters", {"temperature": 2.5}, "temperature"),
        ("parameters", {"temperature": True}, "number"),
        ("parameters", {"top_p": 0}, "top_p"),
        ("parameters", {"max_tokens": 0}, "max_tokens"),
        ("parameters", {"max_tokens": 10.5}, "integer"),
        ("parameters", {"temperature": float("nan")}, "number"),
        ("tool_description", {"tool": "has space", "description": "d"}, "tool name"),
        ("tool_description", {"tool": "t"}, "description"),
        ("nonsense", {}, "unknown kind"),
        ("system_prompt", ["text"], "object"),
    ],
)
def test_invalid_specs_are_refused_with_a_reason(kind: str, spec: dict, why: str) -> None:
    with pytest.raises(S.SpecError, match=why):
        S.parse_spec(kind, spec)
    assert why in (S.validate_spec(kind, spec) or "")


def test_valid_specs_parse_and_round_trip() -> None:
    cases = [
        ("system_prompt", {"text": "Be brief.", "position": "prepend"}),
        ("instruction_rewrite", {"find": "please", "replace": ""}),
        ("instruction_rewrite", {"text": "Answer in JSON."}),
        ("parameters", {"temperature": 0.2, "max_tokens": 512, "top_p": 1}),
        ("tool_description", {"tool": "lookup", "description": "Find a ticket by id."}),
    ]
    for kind, spec in cases:
        parsed = S.parse_spec(kind, spec)
        assert parsed.kind == kind
        assert S.parse_spec(kind, parsed.to_dict()) == parsed
    # nulls are what models put in unused fields: ignored, and the default applies
    assert S.parse_spec("system_prompt", {"text": "x", "position": None}).position == "append"
    assert S.parse_spec("parameters", {"max_tokens": 256.0}).max_tokens == 256
    # every kind's schema is part of the candidates tool schema
    assert S.CANDIDATES_SCHEMA["properties"]["candidates"]["items"]["properties"]["kind"]["enum"] == list(S.KINDS)


def test_system_prompt_chat() -> None:
    patch, out = patched("system_prompt", {"text": "Be brief."}, CHAT, "chat")
    assert patch == [{"op": "replace", "path": "/messages/0/content", "value": "You write invoices.\n\nBe brief."}]
    assert out["messages"][1:] == CHAT["messages"][1:]
    _, out = patched("system_prompt", {"text": "Be brief.", "position": "prepend"}, CHAT, "chat")
    assert out["messages"][0]["content"] == "Be brief.\n\nYou write invoices."
    # no system message: one is inserted first
    bare = {"messages": [{"role": "user", "content": "hi"}]}
    patch, out = patched("system_prompt", {"text": "Be brief."}, bare, "chat")
    assert out["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    # content parts: a text part is added at the requested end
    parts = {"messages": [{"role": "developer", "content": [{"type": "text", "text": "A"}]}]}
    _, out = patched("system_prompt", {"text": "B", "position": "prepend"}, parts, "chat")
    assert out["messages"][0]["content"] == [{"type": "text", "text": "B"}, {"type": "text", "text": "A"}]
    # already there (a retried, already enhanced request): nothing to do
    assert S.apply(S.parse_spec("system_prompt", {"text": "write invoices"}), CHAT, "chat") == []


def test_system_prompt_messages() -> None:
    _, out = patched("system_prompt", {"text": "Be brief."}, MESSAGES, "messages")
    assert out["system"] == "You write invoices.\n\nBe brief."
    no_system = {k: v for k, v in MESSAGES.items() if k != "system"}
    patch, out = patched("system_prompt", {"text": "Be brief."}, no_system, "messages")
    assert patch == [{"op": "add", "path": "/system", "value": "Be brief."}]
    blocks = {**MESSAGES, "system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}]}
    _, out = patched("system_prompt", {"text": "B"}, blocks, "messages")
    assert out["system"] == [blocks["system"][0], {"type": "text", "text": "B"}]


def test_instruction_rewrite_touches_only_the_last_user_turn() -> None:
    patch, out = patched("instruction_rewrite", {"find": ", please", "replace": ""}, CHAT, "chat")
    assert patch == [{"op": "replace", "path": "/messages/3/content", "value": "Invoice for 3 chairs"}]
    assert out["messages"][1] == CHAT["messages"][1]
    _, out = patched("instruction_rewrite", {"text": "Itemise it."}, CHAT, "chat")
    assert out["messages"][3]["content"] == "Invoice for 3 chairs, please\n\nItemise it."
    _, out = patched("instruction_rewrite", {"find": "chairs", "replace": "tables"}, MESSAGES, "messages")
    assert out["messages"][0]["content"] == [{"type": "text", "text": "Invoice for 3 tables, please"}]
    _, out = patched("instruction_rewrite", {"text": "Itemise it."}, MESSAGES, "messages")
    assert out["messages"][0]["content"][-1] == {"type": "text", "text": "Itemise it."}
    # nothing to find, or no user turn: no patch
    assert S.apply(S.parse_spec("instruction_rewrite", {"find": "zebra", "replace": "x"}), CHAT, "chat") == []
    assert S.apply(S.parse_spec("instruction_rewrite", {"text": "x"}), {"messages": []}, "chat") == []


def test_parameters_add_or_replace_per_api() -> None:
    patch, out = patched("parameters", {"temperature": 0.2, "max_tokens": 300}, CHAT, "chat")
    assert patch == [{"op": "replace", "path": "/temperature", "value": 0.2}, {"op": "add", "path": "/max_tokens", "value": 300}]
    newer = {**CHAT, "max_completion_tokens": 1000}
    _, out = patched("parameters", {"max_tokens": 300}, newer, "chat")
    assert out["max_completion_tokens"] == 300 and "max_tokens" not in out
    _, out = patched("parameters", {"temperature": 1.5, "max_tokens": 300, "top_p": 0.9}, MESSAGES, "messages")
    assert (out["temperature"], out["max_tokens"], out["top_p"]) == (1.0, 300, 0.9)  # Anthropic caps temperature at 1
    assert S.apply(S.parse_spec("parameters", {"temperature": 0.9}), CHAT, "chat") == []  # already so


def test_tool_description_paths_differ_per_api() -> None:
    spec = {"tool": "lookup", "description": "Find an invoice by its number."}
    patch, out = patched("tool_description", spec, CHAT, "chat")
    assert patch == [{"op": "replace", "path": "/tools/0/function/description", "value": spec["description"]}]
    patch, _ = patched("tool_description", {"tool": "price", "description": "d"}, CHAT, "chat")
    assert patch == [{"op": "add", "path": "/tools/1/function/description", "value": "d"}]
    patch, out = patched("tool_description", spec, MESSAGES, "messages")
    assert patch == [{"op": "replace", "path": "/tools/0/description", "value": spec["description"]}]
    assert S.apply(S.parse_spec("tool_description", {"tool": "nope", "description": "d"}), CHAT, "chat") == []


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        "text",
        {},
        {"messages": "x"},
        {"messages": [None, 3, {"role": 5}]},
        {"messages": [{"role": "user", "content": 7}]},
        {"system": 5, "messages": None},
        {"tools": [None, {"function": "x"}, {"name": None}]},
    ],
)
def test_odd_documents_never_raise(doc: object) -> None:
    specs = [
        S.parse_spec("system_prompt", {"text": "x"}),
        S.parse_spec("instruction_rewrite", {"text": "x"}),
        S.parse_spec("instruction_rewrite", {"find": "a", "replace": "b"}),
        S.parse_spec("parameters", {"top_p": 0.5}),
        S.parse_spec("tool_description", {"tool": "t", "description": "d"}),
    ]
    for api in ("chat", "messages", "responses", None):
        for spec in specs:
            patch = S.apply(spec, doc, api)
            assert isinstance(patch, list)
            S.apply_patch(doc, patch)
    assert S.apply("not a spec", {"messages": []}, "chat") == []  # type: ignore[arg-type]
    assert S.apply_kind("parameters", {"temperature": 99}, {"messages": []}, "chat") == []
    assert S.apply_kind("parameters", {"temperature": 0.1}, {}, "chat") == [{"op": "add", "path": "/temperature", "value": 0.1}]


def test_apply_patch_is_all_or_nothing_and_shares_unchanged_parts() -> None:
    doc = {"a": {"b": [1, 2]}, "c": {"big": list(range(100))}}
    out = S.apply_patch(doc, [{"op": "add", "path": "/a/b/-", "value": 3}, {"op": "replace", "path": "/a/x~1y", "value": 0}])
    assert out is doc  # the second op has no member to replace: nothing applied
    out = S.apply_patch(
        doc,
        [
            {"op": "add", "path": "/a/b/0", "value": 0},
            {"op": "remove", "path": "/a/b/2"},
            {"op": "add", "path": "/a/x~1y", "value": 1},
        ],
    )
    assert out == {"a": {"b": [0, 1], "x/y": 1}, "c": doc["c"]} and out["c"] is doc["c"]
    assert doc == {"a": {"b": [1, 2]}, "c": {"big": list(range(100))}}
    for bad in (
        [{"op": "move", "path": "/a"}],
        [{"op": "add", "path": "a"}],
        [{"op": "add", "path": "/a/b/9", "value": 1}],
        [{"op": "remove", "path": ""}],
        [{"op": "add", "path": "/c/big/x", "value": 1}],
        [{"path": "/a"}],
    ):
        assert S.apply_patch(doc, bad) is doc
    assert S.apply_patch(doc, [{"op": "replace", "path": "", "value": 1}]) == 1


def test_apply_and_patch_take_well_under_a_fifth_of_a_millisecond() -> None:
    long_chat = {**CHAT, "messages": CHAT["messages"] * 25}  # 100 turns
    specs = [
        S.parse_spec("system_prompt", {"text": "Be brief."}),
        S.parse_spec("instruction_rewrite", {"text": "x"}),
        S.parse_spec("parameters", {"temperature": 0.1}),
        S.parse_spec("tool_description", {"tool": "price", "description": "d"}),
    ]
    rounds = 2000
    t0 = time.perf_counter()
    for _ in range(rounds):
        for spec in specs:
            S.apply_patch(long_chat, S.apply(spec, long_chat, "chat"))
    per_call_ms = (time.perf_counter() - t0) / (rounds * len(specs)) * 1000
    print(f"apply + apply_patch: {per_call_ms * 1000:.1f} us per enhancement on a 100-turn chat request")
    assert per_call_ms < 0.2


def test_the_kind_schemas_agree_with_parse_spec() -> None:
    import jsonschema

    samples = [
        ("system_prompt", {"text": "x"}),
        ("system_prompt", {"text": "x", "position": "middle"}),
        ("system_prompt", {"text": "x", "extra": 1}),
        ("parameters", {}),
        ("parameters", {"temperature": 3}),
        ("parameters", {"top_p": 0}),
        ("parameters", {"max_tokens": 64, "top_p": 0.5}),
        ("tool_description", {"tool": "t", "description": "d"}),
        ("tool_description", {"tool": "t"}),
        ("instruction_rewrite", {"find": "a", "replace": "b"}),
    ]
    for kind, spec in samples:
        schema_ok = jsonschema.Draft202012Validator(S.KIND_SCHEMAS[kind]).is_valid(spec)
        assert schema_ok == (S.validate_spec(kind, spec) is None), (kind, spec)
    jsonschema.Draft202012Validator.check_schema(S.CANDIDATES_SCHEMA)
    # the tool schema is loose on purpose: one bad candidate must not void the whole answer
    answer = {
        "candidates": [
            {"kind": "parameters", "spec": {"temperature": 9}, "rationale": ""},
            {"kind": "system_prompt", "spec": {"text": "ok"}, "rationale": ""},
        ]
    }
    assert jsonschema.Draft202012Validator(S.CANDIDATES_SCHEMA).is_valid(answer)
