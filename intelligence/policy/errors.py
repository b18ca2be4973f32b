"""Validation errors that name where they are: source, line and field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    line: int  # 1-based; 0 when the text has no usable position (e.g. it is not YAML at all)
    field: str  # dotted path, e.g. ``rules[2].match.models[0]``; "" for the document itself
    message: str
    source: str = "<policy>"

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "line": self.line, "field": self.field, "message": self.message}


class PolicyError(ValueError):
    """A policy that does not validate; ``issues`` lists every problem found (not just the first)."""

    def __init__(self, issues: Sequence[PolicyIssue]):
        self.issues = tuple(issues)
        head = "; ".join(str(i) for i in self.issues[:5])
        more = f" (+{len(self.issues) - 5} more)" if len(self.issues) > 5 else ""
        super().__init__(f"invalid policy: {head}{more}")
