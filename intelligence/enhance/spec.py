"""Typed enhancement specs, their validation, and how each one changes a request body.

An enhancement is one of four kinds of change to the requests of one pattern:

* ``system_prompt``       {"text", "position": "append" | "prepend"} -- added to the system prompt
* ``instruction_rewrite`` {"find", "replace"} or {"text"} -- applied to the last user turn; ``text``
  is an instruction appended to that turn (a pattern's users ask different things, so replacing the
  whole turn would never be right)
* ``parameters``          {"temperature"?, "max_tokens"?, "top_p"?} within bounds
* ``tool_description``    {"tool", "description"} -- the description of one declared tool

:func:`apply` turns a spec and a request document into a minimal RFC 6902 JSON patch ("add",
"replace" operations with JSON-pointer paths) for OpenAI chat (api ``chat``) or Anthropic Messages
(api ``messages``); :func:`apply_patch` applies such a patch without mutating its input. The
sidecar calls both on the request path, so they are pure, do no I/O and never raise: a spec that
does not fit the request (no user turn, no such tool, another API) yields ``[]``.

:data:`KIND_SCHEMAS` are the exact JSON schemas of the four kinds; :data:`CANDIDATES_SCHEMA` is
the tool schema Claude fills in when it proposes enhancements; :func:`parse_spec` is the authority
on what is valid (a schema is only a hint to the model).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

KINDS = ("system_prompt", "instruction_rewrite", "parameters", "tool_description")
APIS = ("chat", "messages")

MAX_TEXT_CHARS = 8000
MAX_DESCRIPTION_CHARS = 4000
TEMPERATURE_RANGE = (0.0, 2.0)
ANTHROPIC_MAX_TEMPERATURE = 1.0  # the Messages API rejects more; a shared spec is clamped there
TOP_P_RANGE = (0.0, 1.0)  # exclusive of 0
MAX_TOKENS_RANGE = (1, 128_000)
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_JOIN = "\n\n"
_SYSTEM_ROLES = ("system", "developer")

Position = Literal["append", "prepend"]
Patch: TypeAlias = list[dict[str, Any]]


class SpecError(ValueError):
    """A spec that does not describe a valid enhancement of its kind."""


@dataclass(frozen=True, slots=True)
class SystemPromptSpec:
    text: str
    position: Position = "append"
    kind: str = "system_prompt"

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "position": self.position}


@dataclass(frozen=True, slots=True)
class InstructionRewriteSpec:
    find: str | None = None
    replace: str | None = None
    text: str | None = None
    kind: str = "instruction_rewrite"

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text} if self.text is not None else {"find": self.find, "replace": self.replace}


@dataclass(frozen=True, slots=True)
class ParametersSpec:
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    kind: str = "parameters"

    def to_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (("temperature", self.temperature), ("max_tokens", self.max_tokens), ("top_p", self.top_p))
            if v is not None
        }


@dataclass(frozen=True, slots=True)
class ToolDescriptionSpec:
    tool: str
    description: str
    kind: str = "tool_description"

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "description": self.description}


Spec: TypeAlias = SystemPromptSpec | InstructionRewriteSpec | ParametersSpec | ToolDescriptionSpec

# ------------------------------------------------------------------------------------------ schema
KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "system_prompt": {
        "type": "object",
        "properties": {
            "text": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_TEXT_CHARS,
                "description": "Text added to the system prompt.",
            },
            "position": {"type": "string", "enum": ["append", "prepend"]},
        },
        "required": ["text"],
        "additionalProperties": False,
    },
    "instruction_rewrite": {
        "type": "object",
        "description": "Either find/replace inside the last user turn, or text: an instruction appended to it.",
        "properties": {
            "find": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
            "replace": {"type": "string", "maxLength": MAX_TEXT_CHARS},
            "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
        },
        "additionalProperties": False,
    },
    "parameters": {
        "type": "object",
        "properties": {
            "temperature": {"type": "number", "minimum": TEMPERATURE_RANGE[0], "maximum": TEMPERATURE_RANGE[1]},
            "max_tokens": {"type": "integer", "minimum": MAX_TOKENS_RANGE[0], "maximum": MAX_TOKENS_RANGE[1]},
            "top_p": {"type": "number", "exclusiveMinimum": TOP_P_RANGE[0], "maximum": TOP_P_RANGE[1]},
        },
        "minProperties": 1,
        "additionalProperties": False,
    },
    "tool_description": {
        "type": "object",
        "properties": {
            "tool": {"type": "string", "description": "The name of a tool the requests declare."},
            "description": {"type": "string", "minLength": 1, "maxLength": MAX_DESCRIPTION_CHARS},
        },
        "required": ["tool", "description"],
        "additionalProperties": False,
    },
}


def _spec_guide() -> str:
    return (
        "The change, shaped by its kind: "
        f"system_prompt {{text (<= {MAX_TEXT_CHARS} chars), position: append|prepend}}; "
        "instruction_rewrite {find, replace} (edits the last user turn) or {text} (an instruction appended to it); "
        f"parameters {{temperature {TEMPERATURE_RANGE[0]}..{TEMPERATURE_RANGE[1]}, "
        f"max_tokens {MAX_TOKENS_RANGE[0]}..{MAX_TOKENS_RANGE[1]}, top_p (0, 1]}} (at least one); "
        f"tool_description {{tool: a declared tool's name, description (<= {MAX_DESCRIPTION_CHARS} chars)}}."
    )


# The tool schema Claude fills in. Deliberately loose about each spec: the client rejects a whole
# answer that does not match its schema, while one bad candidate should only drop that candidate
# (parse_spec judges each one; the bounds are spelt out in the description instead).
CANDIDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "kind": {"type": "string", "enum": list(KINDS)},
        "spec": {"type": "object", "description": _spec_guide()},
        "rationale": {"type": "string", "description": "Why this should raise the success rate, citing the evidence."},
    },
    "required": ["kind", "spec", "rationale"],
}

CANDIDATES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "candidates": {
            "type": "array",
            "items": CANDIDATE_SCHEMA,
            "maxItems": 5,
            "description": "Best first: the first valid one is tested.",
        }
    },
    "required": ["candidates"],
}


# -------------------------------------------------------------------------------------- validation
def parse_spec(kind: str, spec: Any) -> Spec:
    """The typed form of ``spec``; raises :class:`SpecError` saying what is wrong.

    Keys whose value is null are ignored (models fill unused fields with null); any other unknown
    key is an error, so a misspelt field cannot silently do nothing.
    """
    if kind not in KINDS:
        raise SpecError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not isinstance(spec, Mapping):
        raise SpecError(f"{kind}: spec must be an object")
    fields = {k: v for k, v in spec.items() if v is not None}
    allowed = set(KIND_SCHEMAS[kind]["properties"])
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise SpecError(f"{kind}: unknown field(s) {', '.join(map(str, unknown))}")
    if kind == "system_prompt":
        position = fields.get("position", "append")
        if position not in ("append", "prepend"):
            raise SpecError("system_prompt: position must be 'append' or 'prepend'")
        return SystemPromptSpec(text=_text(fields, "text", kind, MAX_TEXT_CHARS), position=position)
    if kind == "instruction_rewrite":
        if "text" in fields:
            if "find" in fields or "replace" in fields:
                raise SpecError("instruction_rewrite: give either text or find/replace, not both")
            return InstructionRewriteSpec(text=_text(fields, "text", kind, MAX_TEXT_CHARS))
        if "find" not in fields:
            raise SpecError("instruction_rewrite: needs text, or find and replace")
        find = _text(fields, "find", kind, MAX_TEXT_CHARS)
        replace = fields.get("replace")
        if not isinstance(replace, str) or len(replace) > MAX_TEXT_CHARS:
            raise SpecError(f"instruction_rewrite: replace must be a string of at most {MAX_TEXT_CHARS} characters")
        if replace == find:
            raise SpecError("instruction_rewrite: replace equals find (no change)")
        return InstructionRewriteSpec(find=find, replace=replace)
    if kind == "parameters":
        if not fields:
            raise SpecError("parameters: set at least one of temperature, max_tokens, top_p")
        temperature = _number(fields, "temperature")
        if temperature is not None and not TEMPERATURE_RANGE[0] <= temperature <= TEMPERATURE_RANGE[1]:
            raise SpecError(f"parameters: temperature must be within {TEMPERATURE_RANGE[0]}..{TEMPERATURE_RANGE[1]}")
        top_p = _number(fields, "top_p")
        if top_p is not None and not TOP_P_RANGE[0] < top_p <= TOP_P_RANGE[1]:
            raise SpecError("parameters: top_p must be in (0, 1]")
        max_tokens = fields.get("max_tokens")
        if max_tokens is not None:
            if isinstance(max_tokens, float) and max_tokens.is_integer():
                max_tokens = int(max_tokens)
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
                raise SpecError("parameters: max_tokens must be an integer")
            if not MAX_TOKENS_RANGE[0] <= max_tokens <= MAX_TOKENS_RANGE[1]:
                raise SpecError(f"parameters: max_tokens must be within {MAX_TOKENS_RANGE[0]}..{MAX_TOKENS_RANGE[1]}")
        return ParametersSpec(temperature=temperature, max_tokens=max_tokens, top_p=top_p)
    tool = fields.get("tool")
    if not isinstance(tool, str) or not _TOOL_NAME.match(tool):
        raise SpecError("tool_description: tool must be a tool name (letters, digits, _ . -; at most 128)")
    return ToolDescriptionSpec(tool=tool, description=_text(fields, "description", kind, MAX_DESCRIPTION_CHARS))


def validate_spec(kind: str, spec: Any) -> str | None:
    """None when valid, else the reason it is not."""
    try:
        parse_spec(kind, spec)
    except SpecError as exc:
        return str(exc)
    return None


def _text(fields: Mapping[str, Any], key: str, kind: str, limit: int) -> str:
    value = fields.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{kind}: {key} must be a non-empty string")
    if len(value) > limit:
        raise SpecError(f"{kind}: {key} is longer than {limit} characters")
    return value


def _number(fields: Mapping[str, Any], key: str) -> float | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"parameters: {key} must be a number")
    return float(value)


# ------------------------------------------------------------------------------------------- apply
def apply(spec: Spec, doc: Any, api: str | None) -> Patch:
    """The JSON patch that applies ``spec`` to the request ``doc`` of ``api``; [] when it does not fit."""
    if not isinstance(doc, dict) or api not in APIS:
        return []
    try:
        if isinstance(spec, SystemPromptSpec):
            return _system_prompt(spec, doc, api)
        if isinstance(spec, InstructionRewriteSpec):
            return _instruction(spec, doc, api)
        if isinstance(spec, ParametersSpec):
            return _parameters(spec, doc, api)
        if isinstance(spec, ToolDescriptionSpec):
            return _tool_description(spec, doc, api)
    except Exception:  # noqa: BLE001 -- odd client JSON must never break the request path
        return []
    return []


def apply_kind(kind: str, spec: Any, doc: Any, api: str | None) -> Patch:
    """:func:`apply` for a stored (kind, spec dict); [] when the spec is invalid."""
    try:
        return apply(parse_spec(kind, spec), doc, api)
    except SpecError:
        return []


def _joined(existing: str, text: str, position: str) -> str:
    if not existing:
        return text
    return text + _JOIN + existing if position == "prepend" else existing + _JOIN + text


def _parts_text(parts: list[Any]) -> str:
    return "\n".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


def _system_prompt(spec: SystemPromptSpec, doc: dict, api: str) -> Patch:
    if api == "messages":
        system = doc.get("system")
        if system is None or system == "":
            return [{"op": "add", "path": "/system", "value": spec.text}]
        if isinstance(system, str):
            if spec.text in system:  # already there (a retried, already-enhanced request)
                return []
            return [{"op": "replace", "path": "/system", "value": _joined(system, spec.text, spec.position)}]
        if isinstance(system, list):
            if spec.text in _parts_text(system):
                return []
            path = "/system/0" if spec.position == "prepend" else "/system/-"
            return [{"op": "add", "path": path, "value": {"type": "text", "text": spec.text}}]
        return []
    messages = doc.get("messages")
    if not isinstance(messages, list):
        return []
    first = messages[0] if messages else None
    if not (isinstance(first, dict) and first.get("role") in _SYSTEM_ROLES):
        return [{"op": "add", "path": "/messages/0", "value": {"role": "system", "content": spec.text}}]
    content = first.get("content")
    if isinstance(content, str) or content is None:
        content = content or ""
        if content and spec.text in content:
            return []
        return [
            {
                "op": "replace" if "content" in first else "add",
                "path": "/messages/0/content",
                "value": _joined(content, spec.text, spec.position),
            }
        ]
    if isinstance(content, list):
        if spec.text in _parts_text(content):
            return []
        path = "/messages/0/content/0" if spec.position == "prepend" else "/messages/0/content/-"
        return [{"op": "add", "path": path, "value": {"type": "text", "text": spec.text}}]
    return []


def _last_user(messages: Any) -> int | None:
    if not isinstance(messages, list):
        return None
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if isinstance(m, dict) and m.get("role") == "user":
            return i
    return None


def _instruction(spec: InstructionRewriteSpec, doc: dict, api: str) -> Patch:
    messages: Any = doc.get("messages")
    i = _last_user(messages)
    if i is None:
        return []
    content = messages[i].get("content")
    base = f"/messages/{i}/content"
    if spec.text is not None:
        if isinstance(content, str):
            if spec.text in content:
                return []
            return [{"op": "replace", "path": base, "value": _joined(content, spec.text, "append")}]
        if isinstance(content, list):
            if spec.text in _parts_text(content):
                return []
            return [{"op": "add", "path": base + "/-", "value": {"type": "text", "text": spec.text}}]
        return []
    find, replace = spec.find or "", spec.replace or ""
    if isinstance(content, str):
        return [{"op": "replace", "path": base, "value": content.replace(find, replace)}] if find in content else []
    if isinstance(content, list):
        patch: Patch = []
        for j, part in enumerate(content):
            if (
                isinstance(part, dict)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
                and find in part["text"]
            ):
                patch.append({"op": "replace", "path": f"{base}/{j}/text", "value": part["text"].replace(find, replace)})
        return patch
    return []


def _parameters(spec: ParametersSpec, doc: dict, api: str) -> Patch:
    wanted: list[tuple[str, Any]] = []
    if spec.temperature is not None:
        temperature = min(spec.temperature, ANTHROPIC_MAX_TEMPERATURE) if api == "messages" else spec.temperature
        wanted.append(("temperature", temperature))
    if spec.top_p is not None:
        wanted.append(("top_p", spec.top_p))
    if spec.max_tokens is not None:
        # newer OpenAI clients send max_completion_tokens; set whichever the request uses
        key = "max_completion_tokens" if api == "chat" and "max_completion_tokens" in doc else "max_tokens"
        wanted.append((key, spec.max_tokens))
    patch: Patch = []
    for key, value in wanted:
        if key not in doc:
            patch.append({"op": "add", "path": "/" + key, "value": value})
        elif doc[key] != value:
            patch.append({"op": "replace", "path": "/" + key, "value": value})
    return patch


def _tool_description(spec: ToolDescriptionSpec, doc: dict, api: str) -> Patch:
    tools = doc.get("tools")
    if not isinstance(tools, list):
        return []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            continue
        if api == "chat":
            function = tool.get("function")
            if not isinstance(function, dict) or function.get("name") != spec.tool:
                continue
            holder, path = function, f"/tools/{i}/function/description"
        else:
            if tool.get("name") != spec.tool:
                continue
            holder, path = tool, f"/tools/{i}/description"
        if holder.get("description") == spec.description:
            return []
        return [{"op": "replace" if "description" in holder else "add", "path": path, "value": spec.description}]
    return []


# ------------------------------------------------------------------------------------- apply_patch
class PatchError(ValueError):
    pass


def apply_patch(doc: Any, patch: Patch) -> Any:
    """``doc`` with ``patch`` applied (operations add, replace, remove), sharing unchanged subtrees.

    The input is never mutated: only the containers along each changed path are copied, which keeps
    this cheap for large requests. All or nothing: if any operation does not fit, the original
    ``doc`` is returned unchanged (check with ``is``).
    """
    try:
        result = doc
        for op in patch:
            result = _apply_op(result, op)
        return result
    except (PatchError, KeyError, IndexError, TypeError, ValueError):
        return doc


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"bad JSON pointer {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]] if path else []


def _apply_op(doc: Any, op: Mapping[str, Any]) -> Any:
    kind = op.get("op")
    tokens = _pointer(op.get("path"))
    if kind not in ("add", "replace", "remove"):
        raise PatchError(f"unsupported op {kind!r}")
    if not tokens:
        if kind == "remove":
            raise PatchError("cannot remove the whole document")
        return op["value"]
    return _set(doc, tokens, kind, op.get("value"))


def _set(node: Any, tokens: list[str], kind: str, value: Any) -> Any:
    token, rest = tokens[0], tokens[1:]
    if isinstance(node, dict):
        copy: Any = dict(node)
        if rest:
            copy[token] = _set(node[token], rest, kind, value)
        elif kind == "add":
            copy[token] = value
        elif token not in node:
            raise PatchError(f"no member {token!r} to {kind}")
        elif kind == "replace":
            copy[token] = value
        else:
            del copy[token]
        return copy
    if isinstance(node, list):
        copy = list(node)
        if token == "-":
            if rest or kind != "add":
                raise PatchError("'-' only appends")
            copy.append(value)
            return copy
        if not token.isdigit():
            raise PatchError(f"bad array index {token!r}")
        index = int(token)
        if rest:
            copy[index] = _set(node[index], rest, kind, value)
        elif kind == "add":
            if index > len(node):
                raise PatchError(f"index {index} past the end")
            copy.insert(index, value)
        elif kind == "replace":
            copy[index] = value
        else:
            del copy[index]
        return copy
    raise PatchError("path runs through a scalar")


def spec_as_dict(spec: Spec) -> dict[str, Any]:
    """The stored form (``enhancements.spec``) of a typed spec."""
    return spec.to_dict()


__all__ = [
    "APIS",
    "CANDIDATES_SCHEMA",
    "CANDIDATE_SCHEMA",
    "KINDS",
    "KIND_SCHEMAS",
    "InstructionRewriteSpec",
    "ParametersSpec",
    "Patch",
    "PatchError",
    "Spec",
    "SpecError",
    "SystemPromptSpec",
    "ToolDescriptionSpec",
    "apply",
    "apply_kind",
    "apply_patch",
    "parse_spec",
    "spec_as_dict",
    "validate_spec",
]
