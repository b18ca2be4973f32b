"""extproc.providers.segments: every text of a request, with the source kind that wrote it."""

from __future__ import annotations

import json

from extproc.providers.segments import segments

LONG = "word " * 100_000  # 500 000 characters: no cut in the extractor any more


def test_chat_tools_calls_and_results_are_separate_sources() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You answer about trains."},
            {"role": "user", "content": [{"type": "text", "text": "When is the next train?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "timetable", "arguments": json.dumps({"station": "Delft", "note": "after 9"})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "Next train 09:12, platform 2."},
            {"role": "user", "content": LONG},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "timetable",
                    "description": "Look up departures.",
                    "parameters": {
                        "type": "object",
                        "properties": {"station": {"type": "string", "description": "Station name"}},
                    },
                },
            }
        ],
    }
    got = segments("chat", body)
    assert got[0] == ("tool_definition", "timetable\nLook up departures.\nstation\nStation name")
    assert ("system", "You answer about trains.") in got
    assert ("tool_call_arguments", "Delft\nafter 9") in got
    assert ("tool_result", "Next train 09:12, platform 2.") in got
    assert got[-1] == ("user", LONG)  # whole: the detector windows it within its budget


def test_anthropic_documents_tool_use_and_tool_results() -> None:
    body = {
        "system": [{"type": "text", "text": "Be brief."}],
        "tools": [
            {"name": "search", "description": "Web search.", "input_schema": {"properties": {"q": {"description": "query"}}}}
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "Quarterly notes."},
                        "title": "Q3",
                    },
                    {"type": "text", "text": "Summarise the notes."},
                ],
            },
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "search", "input": {"q": "q3 revenue"}}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "Revenue rose 4%."}]},
                    {"type": "tool_result", "tool_use_id": "t2", "content": "plain result"},
                ],
            },
        ],
    }
    got = segments("messages", body)
    assert got[0] == ("tool_definition", "search\nWeb search.\nq\nquery")
    assert ("document", "Q3") in got and ("document", "Quarterly notes.") in got
    assert ("user", "Summarise the notes.") in got
    assert ("tool_call_arguments", "q3 revenue") in got
    assert ("tool_result", "Revenue rose 4%.") in got and ("tool_result", "plain result") in got


def test_responses_function_calls_and_outputs() -> None:
    body = {
        "instructions": "Answer in French.",
        "tools": [{"type": "function", "name": "lookup", "description": "Find a word.", "parameters": {}}],
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Define ferry."}]},
            {"type": "function_call", "call_id": "x", "name": "lookup", "arguments": '{"word": "ferry"}'},
            {"type": "function_call_output", "call_id": "x", "output": "A boat carrying passengers."},
        ],
    }
    got = segments("responses", body)
    assert got == [
        ("tool_definition", "lookup\nFind a word."),
        ("system", "Answer in French."),
        ("user", "Define ferry."),
        ("tool_call_arguments", "ferry"),
        ("tool_result", "A boat carrying passengers."),
    ]


def test_odd_shapes_never_raise() -> None:
    for api in ("chat", "messages", "responses", "completions", None):
        for body in (
            {},
            {"messages": "x", "tools": "y", "input": 3},
            {"messages": [None, 1, {"role": "tool", "tool_calls": [1]}]},
        ):
            segments(api, body)  # type: ignore[arg-type]
    deep: dict = {}
    node = deep
    for _ in range(100):
        node["properties"] = {"p": {}}
        node = node["properties"]["p"]
    assert segments("chat", {"tools": [{"function": {"name": "t", "parameters": deep}}]})[0][0] == "tool_definition"
