"""Actions that edit JSON bodies by pointer (RFC 6901): request fields (``set_fields``,
``default_fields``, ``remove_fields``) and, for non-streamed JSON responses,
``rewrite_response_fields`` / ``strip_response_fields``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from ..decision import FieldEdit
from ..reader import Reader, kind_of
from ..yamlnodes import Node
from .base import BOTH_PHASES, Action, RuleContext

if TYPE_CHECKING:
    from ..snapshot import RequestAcc, ResponseAcc

Op = Literal["set", "default", "remove"]


@dataclass(frozen=True, slots=True)
class FieldsAction(Action):
    """What the five share: their edits, built at parse time. In a request-phase rule the first rule
    to set a pointer wins and removals union; a response-phase rule's edits follow the request's."""

    op: ClassVar[Op]
    response: ClassVar[bool] = False  # edits the response (else the request)

    edits: tuple[FieldEdit, ...]

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> FieldsAction | None:
        edits = cls._edits(r, node, field, rule.qualified)
        return cls(tuple(edits)) if edits is not None else None

    @classmethod
    def _edits(cls, r: Reader, node: Node, field: str, rule: str) -> list[FieldEdit] | None:
        if cls.op == "remove":
            if node.kind != "seq" and not (node.kind == "scalar" and isinstance(node.value, str)):
                r.error(node, field, f"expected a list of JSON pointers, got {kind_of(node)}")
                return None
            items = node.value if node.kind == "seq" else [node]
            return [
                FieldEdit("remove", pointer, None, rule)
                for i, item in enumerate(items)
                if (pointer := r.pointer(item, f"{field}[{i}]", protect=not cls.response)) is not None
            ]
        if node.kind != "map" or not node.value:
            r.error(node, field, f"expected a mapping of JSON pointer -> value, got {kind_of(node)}")
            return None
        edits = []
        for ptr, value in node.value.items():
            where = Node("scalar", ptr, node.key_lines.get(ptr, node.line))
            pointer = r.pointer(where, f"{field}[{ptr!r}]", protect=not cls.response)
            if pointer is not None:
                edits.append(FieldEdit(cls.op, pointer, value.plain(), rule))
        return edits

    def enforce(self, acc: RequestAcc) -> None:
        for e in self.edits:
            acc.edit_field(e)


@dataclass(frozen=True, slots=True)
class SetFieldsAction(FieldsAction):
    key = "set_fields"
    op = "set"


@dataclass(frozen=True, slots=True)
class DefaultFieldsAction(FieldsAction):
    key = "default_fields"
    op = "default"


@dataclass(frozen=True, slots=True)
class RemoveFieldsAction(FieldsAction):
    key = "remove_fields"
    op = "remove"


@dataclass(frozen=True, slots=True)
class ResponseFieldsAction(FieldsAction):
    phases = BOTH_PHASES
    response = True

    def enforce(self, acc: RequestAcc) -> None:
        for e in self.edits:
            acc.edit_response_field(e)

    def respond(self, acc: ResponseAcc) -> None:
        acc.edits.extend(self.edits)


@dataclass(frozen=True, slots=True)
class StripResponseFieldsAction(ResponseFieldsAction):
    key = "strip_response_fields"
    op = "remove"


@dataclass(frozen=True, slots=True)
class RewriteResponseFieldsAction(ResponseFieldsAction):
    key = "rewrite_response_fields"
    op = "set"
