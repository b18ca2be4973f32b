"""Actions that decide whether the request may go on: ``allow``, ``block``, ``require_headers``,
``allow_models``. A refusal ends evaluation (the first one wins); ``allow`` ends it too."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..decision import Block
from ..facts import RequestFacts
from ..reader import Reader, header_names
from ..rules import Actions
from ..yamlnodes import Node
from .base import BOTH_PHASES, Action, RuleContext


@dataclass(frozen=True, slots=True)
class AllowAction(Action):
    """``allow: true``: later rules cannot block, redact or edit this request."""

    key = "allow"
    ends_evaluation = True

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> AllowAction | None:
        return cls() if r.true(node, field) else None


@dataclass(frozen=True, slots=True)
class BlockAction(Action):
    """``block: true`` or ``{status, message, code}``: refuse, in the calling API's error format."""

    key = "block"
    phases = BOTH_PHASES
    conflicts_with = {"allow": "a rule cannot both allow and block"}

    block: Block

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> BlockAction | None:
        default_message = f"llmproxy: request refused by policy rule {rule.qualified}" + (
            f": {rule.description}" if rule.description else ""
        )
        if node.kind == "scalar" and node.value is True:
            return cls(Block(403, default_message, "policy_blocked", rule.qualified))
        spec = r.mapping(node, field, ("status", "message", "code"))
        if spec is None:
            return None
        status = r.integer(spec["status"], f"{field}.status", lo=400, hi=599) if "status" in spec else 403
        message = r.string(spec["message"], f"{field}.message") if "message" in spec else default_message
        code = r.identifier(spec["code"], f"{field}.code") if "code" in spec else "policy_blocked"
        if status is None or message is None or code is None:
            return None
        return cls(Block(status, message, code, rule.qualified))

    def fixed_refusal(self) -> Block:
        return self.block


@dataclass(frozen=True, slots=True)
class RequireHeadersAction(Action):
    """``require_headers: [..]``: 400 ``missing_required_header`` when one is missing."""

    key = "require_headers"

    headers: tuple[str, ...]  # lower-case
    rule: str

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> RequireHeadersAction | None:
        return cls(tuple(header_names(r, node, field, r.strings(node, field))), rule.qualified)

    def refusal(self, facts: RequestFacts, model: str | None) -> Block | None:
        present = facts.headers
        for name in self.headers:
            if name not in present:
                missing = ", ".join(h for h in self.headers if h not in present)
                return Block(
                    400,
                    f"llmproxy: this request needs the header(s) {missing} (policy rule {self.rule})",
                    "missing_required_header",
                    self.rule,
                )
        return None


@dataclass(frozen=True, slots=True)
class AllowModelsAction(Action):
    """``allow_models: [..]``: 403 ``model_not_allowed`` for a model outside the list; the rule's own
    ``route`` target is what is checked when the rule has one. An unknown model is not refused."""

    key = "allow_models"

    allowed: re.Pattern[str]
    written: tuple[str, ...]
    rule: str
    route_model: str | None = None  # the same rule's route target (set by link)

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> AllowModelsAction | None:
        got = r.patterns(node, field, ignore_case=True)
        if got is None:
            return None
        return cls(got[0], tuple(got[1]), rule.qualified)

    def link(self, siblings: Actions) -> AllowModelsAction:
        target = next((m for a in siblings if (m := a.target_model())), None)
        return replace(self, route_model=target) if target else self

    def refusal(self, facts: RequestFacts, model: str | None) -> Block | None:
        if model is None:
            return None
        final = self.route_model or model
        if self.allowed.fullmatch(final) is not None:
            return None
        shown = final if len(final) <= 200 else final[:200] + "…"
        return Block(
            403,
            f"llmproxy: model {shown!r} is not allowed by policy rule {self.rule}; allowed: {', '.join(self.written)}",
            "model_not_allowed",
            self.rule,
        )
