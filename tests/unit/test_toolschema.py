from __future__ import annotations

import pytest

from extproc.providers.base import ToolCall
from extproc.providers.toolschema import declared_schemas, invalid_calls

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}


@pytest.mark.parametrize(
    "api,body",
    [
        ("chat", {"tools": [{"type": "function", "function": {"name": "weather", "parameters": SCHEMA}}]}),
        ("responses", {"tools": [{"type": "function", "name": "weather", "parameters": SCHEMA}]}),
        (
            "messages",
            {"tools": [{"name": "weather", "input_schema": SCHEMA}, {"type": "web_search_20250305", "name": "web_search"}]},
        ),
    ],
)
def test_declared_schemas_per_api(api, body) -> None:
    assert declared_schemas(api, body) == {"weather": SCHEMA}


@pytest.mark.parametrize(
    "args,bad",
    [
        ('{"city": "Paris"}', 0),
        ('{"town": "Paris"}', 1),
        ('{"city": 3}', 1),
        ("not json", 1),
        ("[1, 2]", 1),
        ("", 1),
    ],
)
def test_invalid_calls_against_the_declared_schema(args, bad) -> None:
    assert invalid_calls([ToolCall(id="1", name="weather", arguments=args)], {"weather": SCHEMA}) == bad


def test_undeclared_tool_and_broken_schema_only_need_json_objects() -> None:
    calls = [ToolCall(id="1", name="other", arguments='{"x": 1}'), ToolCall(id="2", name="broken", arguments='{"x": 1}')]
    assert invalid_calls(calls, {"broken": {"type": 12}}) == 0
