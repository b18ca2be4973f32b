"""Typed access to composed YAML nodes: each accessor records a :class:`PolicyIssue` naming the line
and the field, and returns None, so one pass reports every problem of a document."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from typing import Any

from .errors import PolicyIssue
from .pointer import PointerError, parse_pointer
from .rules import PatternError, compile_patterns
from .yamlnodes import Node

ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
# Fields a policy may not set by pointer: the model goes through `route` (so scope checks see it),
# and the exchange decides how to read the response from `stream`.
PROTECTED_POINTERS = {"/model": "use `route: {model: ...}` to change the model", "/stream": "the stream flag is the client's"}


def kind_of(node: Node) -> str:
    if node.kind == "map":
        return "a mapping"
    if node.kind == "seq":
        return "a list"
    v = node.value
    return "nothing (null)" if v is None else f"{type(v).__name__} {v!r}"[:80]


class Reader:
    """Typed accessors that record an issue (and return None) instead of raising."""

    def __init__(self, source: str):
        self.source = source
        self.issues: list[PolicyIssue] = []

    def error(self, where: Node | int, field: str, message: str) -> None:
        line = where if isinstance(where, int) else where.line
        self.issues.append(PolicyIssue(line, field, message, self.source))

    def mapping(self, node: Node, field: str, allowed: Iterable[str]) -> dict[str, Node] | None:
        if node.kind != "map":
            self.error(node, field, f"expected a mapping, got {kind_of(node)}")
            return None
        allowed = tuple(allowed)
        out: dict[str, Node] = {}
        for key, value in node.value.items():
            path = f"{field}.{key}" if field else key
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; expected one of: {', '.join(allowed)}"
                self.error(node.key_lines.get(key, node.line), path, f"unknown key{hint}")
                continue
            out[key] = value
        return out

    def string(self, node: Node, field: str, *, allow_empty: bool = False) -> str | None:
        if node.kind != "scalar" or not isinstance(node.value, str):
            self.error(node, field, f"expected a string, got {kind_of(node)}")
            return None
        if not allow_empty and not node.value.strip():
            self.error(node, field, "must not be empty")
            return None
        return node.value

    def identifier(self, node: Node, field: str) -> str | None:
        value = self.string(node, field)
        if value is not None and not ID.fullmatch(value):
            self.error(node, field, f"{value!r} is not a valid id: letters, digits, '_', '.', '-' (at most 128)")
            return None
        return value

    def integer(self, node: Node, field: str, *, lo: int | None = None, hi: int | None = None) -> int | None:
        v = node.value
        if node.kind != "scalar" or not isinstance(v, int) or isinstance(v, bool):
            self.error(node, field, f"expected a whole number, got {kind_of(node)}")
            return None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            bounds = (
                f"between {lo} and {hi}" if lo is not None and hi is not None else (f">= {lo}" if lo is not None else f"<= {hi}")
            )
            self.error(node, field, f"{v} is out of range: must be {bounds}")
            return None
        return v

    def priority(self, node: Node, field: str) -> int | None:
        return self.integer(node, field, lo=-1_000_000, hi=1_000_000)

    def number(self, node: Node, field: str) -> float | None:
        v = node.value
        if node.kind != "scalar" or not isinstance(v, (int, float)) or isinstance(v, bool):
            self.error(node, field, f"expected a number, got {kind_of(node)}")
            return None
        return float(v)

    def true(self, node: Node, field: str) -> bool:
        if node.kind != "scalar" or node.value is not True:
            self.error(node, field, f"expected `true` (leave the key out to not use it), got {kind_of(node)}")
            return False
        return True

    def boolean(self, node: Node, field: str) -> bool | None:
        if node.kind != "scalar" or not isinstance(node.value, bool):
            self.error(node, field, f"expected true or false, got {kind_of(node)}")
            return None
        return node.value

    def enum(self, node: Node, field: str, options: Any) -> Any:
        value = self.string(node, field)
        if value is None:
            return None
        values = [o.value for o in options] if isinstance(options, type) else list(options)
        if value not in values:
            self.error(node, field, f"{value!r} is not one of: {', '.join(values)}")
            return None
        return options(value) if isinstance(options, type) else value

    def strings(self, node: Node, field: str, *, allow_one: bool = True) -> list[str] | None:
        """A list of non-empty strings; a single string stands for a list of one."""
        if node.kind == "scalar" and isinstance(node.value, str) and allow_one:
            return [node.value] if self.string(node, field) is not None else None
        if node.kind != "seq":
            self.error(node, field, f"expected a list of strings, got {kind_of(node)}")
            return None
        if not node.value:
            self.error(node, field, "must not be an empty list (leave the key out instead)")
            return None
        out: list[str] = []
        ok = True
        for i, item in enumerate(node.value):
            s = self.string(item, f"{field}[{i}]")
            if s is None:
                ok = False
            else:
                out.append(s)
        return out if ok else None

    def patterns(
        self, node: Node, field: str, *, ignore_case: bool, transform: Callable[[str], str] = lambda s: s, any_word: bool = False
    ) -> tuple[re.Pattern[str], list[str]] | None:
        values = self.strings(node, field)
        if values is None:
            return None
        if any_word:
            values = ["*" if v == "any" else v for v in values]
        values = [transform(v) for v in values]
        items = node.value if node.kind == "seq" else [node]
        ok = True
        for i, (value, item) in enumerate(zip(values, items)):
            try:
                compile_patterns([value], ignore_case=ignore_case)
            except PatternError as exc:
                self.error(item, f"{field}[{i}]" if node.kind == "seq" else field, str(exc))
                ok = False
        if not ok:
            return None
        return compile_patterns(values, ignore_case=ignore_case), values

    def pointer(self, node: Node, field: str, *, protect: bool) -> str | None:
        value = self.string(node, field)
        if value is None:
            return None
        try:
            tokens = parse_pointer(value)
        except PointerError as exc:
            self.error(node, field, str(exc))
            return None
        if not tokens:
            self.error(node, field, "the empty pointer means the whole body; point at a field, e.g. /temperature")
            return None
        if protect and "/" + tokens[0] in PROTECTED_POINTERS:
            self.error(node, field, f"{value!r} may not be edited by pointer: {PROTECTED_POINTERS['/' + tokens[0]]}")
            return None
        return value


def header_names(r: Reader, where: Node | int, field: str, names: list[str] | None) -> list[str]:
    out = []
    for name in names or []:
        if not HEADER_NAME.fullmatch(name):
            r.error(where, field, f"{name!r} is not a valid header name")
            continue
        out.append(name.lower())
    return out
