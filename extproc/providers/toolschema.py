"""Declared tool argument schemas, and whether a model's tool call honours them.

A tool call whose arguments are not valid JSON, or not valid for the schema the client declared, is a
failure signal for pattern memory (the caller would have to reject or repair it).
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import exceptions as js_exceptions
from jsonschema import validators

from .base import ToolCall
from .jsonshape import as_dict, as_list, as_str


def declared_schemas(api: str | None, body: dict) -> dict[str, dict]:
    """Tool name (as the client declared it) -> its JSON Schema for the arguments."""
    out: dict[str, dict] = {}
    for tool in as_list(body.get("tools")):
        tool = as_dict(tool)
        if api in ("chat", "ollama_chat"):
            fn = as_dict(tool.get("function"))
            name, schema = as_str(fn.get("name")), fn.get("parameters")
        elif api == "responses":
            name, schema = as_str(tool.get("name")), tool.get("parameters")
        elif api == "messages":
            name, schema = as_str(tool.get("name")), tool.get("input_schema")
        else:
            continue
        if name and isinstance(schema, dict):
            out[name] = schema
    return out


def invalid_calls(calls: tuple[ToolCall, ...] | list[ToolCall], schemas: dict[str, dict]) -> int:
    """How many calls have arguments that are not a JSON object valid for the declared schema."""
    bad = 0
    for call in calls:
        try:
            args = json.loads(call.arguments) if call.arguments else {}
        except (ValueError, RecursionError):
            bad += 1
            continue
        if not isinstance(args, dict):
            bad += 1
            continue
        schema = schemas.get(call.name)
        if schema is not None and not _valid(args, schema):
            bad += 1
    return bad


def _valid(instance: Any, schema: dict) -> bool:
    try:
        cls = validators.validator_for(schema)
        cls.check_schema(schema)
    except js_exceptions.SchemaError:
        return True  # the client's schema is broken, not the model's answer
    return next(cls(schema).iter_errors(instance), None) is None
