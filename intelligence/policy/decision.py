"""What the engine decided for one request or response, and which rules made it so.

Decisions are immutable and carry everything the exchange needs to act (block, edits, redaction plan,
header changes, throttles, alerts, quarantine) plus ``fired``: every rule that matched, with its
mode, so the record shows what happened and what monitor-mode rules *would* have done.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

RedactMode = Literal["placeholder", "mask"]
Direction = Literal["request", "response"]
FailMode = Literal["allow", "block"]  # what a claude_verdict rule does when no verdict arrives in time
VerdictLevel = Literal["malicious", "suspicious"]
VERDICT_RANK = {"benign": 0, "suspicious": 1, "malicious": 2}


class Mode(str, enum.Enum):
    ENFORCE = "enforce"  # act
    MONITOR = "monitor"  # record what would happen, change nothing
    OFF = "off"  # not evaluated at all


class Phase(str, enum.Enum):
    REQUEST = "request"
    RESPONSE = "response"


@dataclass(frozen=True, slots=True)
class FiredRule:
    """A rule that matched. ``actions`` are the actions it took (enforce) or would have taken (monitor)."""

    rule: str  # rule id, unique within its policy
    policy: str  # policy name (file policy or database policy)
    mode: Mode
    actions: tuple[str, ...]
    note: str | None = None  # e.g. why it blocked

    @property
    def qualified(self) -> str:
        return f"{self.policy}/{self.rule}"

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"rule": self.rule, "policy": self.policy, "mode": self.mode.value, "actions": list(self.actions)}
        if self.note:
            doc["note"] = self.note
        return doc


@dataclass(frozen=True, slots=True)
class Block:
    status: int
    message: str
    code: str
    rule: str  # qualified id of the rule that blocked
    retry_after: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message, "rule": self.rule}


@dataclass(frozen=True, slots=True)
class RedactSelector:
    """Detector kinds one rule redacts: ``pii`` / ``secrets`` (whole categories) or kind globs."""

    categories: frozenset[str]  # subset of {"pii", "secrets"}
    kinds: Any  # compiled regex over upper-case kinds, or None
    mode: RedactMode
    restore: bool
    rule: str

    def covers(self, kind: str, category: str) -> bool:
        return category in self.categories or (self.kinds is not None and self.kinds.fullmatch(kind.upper()) is not None)


@dataclass(frozen=True, slots=True)
class RedactPlan:
    """Union of the redactions of every enforcing rule. For a kind covered by several rules, ``mask``
    (irreversible) beats ``placeholder``; a placeholder is restored in the response when any covering
    rule asks for ``restore``."""

    selectors: tuple[RedactSelector, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.selectors)

    def mode_for(self, kind: str, category: Literal["pii", "secrets"]) -> RedactMode | None:
        mode: RedactMode | None = None
        for s in self.selectors:
            if s.covers(kind, category):
                if s.mode == "mask":
                    return "mask"
                mode = "placeholder"
        return mode

    def restores(self, kind: str, category: Literal["pii", "secrets"]) -> bool:
        return self.mode_for(kind, category) == "placeholder" and any(
            s.restore and s.covers(kind, category) for s in self.selectors
        )

    @property
    def restore_any(self) -> bool:
        return any(s.restore and s.mode == "placeholder" for s in self.selectors)

    @property
    def categories(self) -> frozenset[str]:
        """Detector categories to run for this plan (a kind glob needs both)."""
        out: set[str] = set()
        for s in self.selectors:
            out |= s.categories if s.kinds is None else {"pii", "secrets"}
        return frozenset(out)

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {
                "categories": sorted(s.categories),
                "kinds": s.kinds.pattern if s.kinds is not None else None,
                "mode": s.mode,
                "restore": s.restore,
                "rule": s.rule,
            }
            for s in self.selectors
        ]


NO_REDACTION = RedactPlan()


@dataclass(frozen=True, slots=True)
class PromptEdit:
    position: Literal["prepend", "append"]
    role: Literal["system", "user"]
    text: str
    rule: str


@dataclass(frozen=True, slots=True)
class FieldEdit:
    """A request or response edit by JSON pointer (RFC 6901). ``op``: set (create or override),
    default (only when absent), remove."""

    op: Literal["set", "default", "remove"]
    pointer: str
    value: Any
    rule: str


@dataclass(frozen=True, slots=True)
class Route:
    model: str | None
    provider: str | None
    rule: str


@dataclass(frozen=True, slots=True)
class Alert:
    severity: Literal["info", "warning", "critical"]
    message: str
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "message": self.message, "rule": self.rule}


@dataclass(frozen=True, slots=True)
class Throttle:
    """Requests per minute per key (or client). ``mode`` monitor: count, record, never refuse."""

    rpm: int
    burst: int
    per: Literal["key", "client"]
    rule: str
    mode: Mode


@dataclass(frozen=True, slots=True)
class Quarantine:
    reason: str
    rule: str


@dataclass(frozen=True, slots=True)
class VerdictAsk:
    """A rule's ``claude_verdict``: hold the request for Claude's verdict (enforce) or ask in the
    background and only record (monitor). See extproc/claude_gate.py and docs/policy.md."""

    timeout_ms: int
    on_timeout: FailMode  # allow: fail-open; block: fail-closed
    block_at: VerdictLevel
    min_confidence: float
    rule: str  # qualified id of the rule that asks
    mode: Mode

    def blocks(self, verdict: str, confidence: float) -> bool:
        return VERDICT_RANK.get(verdict, 0) >= VERDICT_RANK[self.block_at] and confidence >= self.min_confidence

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "mode": self.mode.value,
            "timeout_ms": self.timeout_ms,
            "on_timeout": self.on_timeout,
            "block_at": self.block_at,
            "min_confidence": self.min_confidence,
        }


@dataclass(frozen=True, slots=True)
class RequestDecision:
    model: str | None = None  # the model to send upstream (after alias and route); None: unknown
    model_changed_from: str | None = None  # the client's model when alias or route changed it
    provider: str | None = None  # a route's provider, when it changes the upstream
    route: Route | None = None
    block: Block | None = None
    redact: RedactPlan = NO_REDACTION  # in the request
    response_redact: RedactPlan = NO_REDACTION  # in the response (request-phase rules with in: response)
    cap_max_tokens: int | None = None
    prompts: tuple[PromptEdit, ...] = ()
    field_edits: tuple[FieldEdit, ...] = ()
    response_edits: tuple[FieldEdit, ...] = ()
    set_headers: tuple[tuple[str, str], ...] = ()
    strip_headers: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    alerts: tuple[Alert, ...] = ()
    throttles: tuple[Throttle, ...] = ()
    quarantine: Quarantine | None = None
    fired: tuple[FiredRule, ...] = ()
    policy_version: str = ""
    claude_verdict: VerdictAsk | None = None  # an enforcing rule holds the request for Claude's verdict
    claude_verdict_monitor: VerdictAsk | None = None  # a monitor rule would have: asked in the background

    @property
    def blocked(self) -> bool:
        return self.block is not None

    @property
    def edits_request(self) -> bool:
        return bool(self.model_changed_from is not None or self.cap_max_tokens is not None or self.prompts or self.field_edits)

    def to_record(self) -> dict[str, Any]:
        """A compact JSON form for the exchange record (``flags["policy"]``) and the audit log."""
        doc: dict[str, Any] = {"version": self.policy_version, "fired": [f.to_dict() for f in self.fired]}
        if self.block is not None:
            doc["block"] = self.block.to_dict()
        if self.model_changed_from is not None:
            doc["model"] = {"from": self.model_changed_from, "to": self.model}
        if self.route is not None:
            doc["route"] = {"model": self.route.model, "provider": self.route.provider, "rule": self.route.rule}
        if self.redact.active:
            doc["redact"] = self.redact.to_dict()
        if self.response_redact.active:
            doc["response_redact"] = self.response_redact.to_dict()
        if self.cap_max_tokens is not None:
            doc["cap_max_tokens"] = self.cap_max_tokens
        if self.tags:
            doc["tags"] = list(self.tags)
        if self.alerts:
            doc["alerts"] = [a.to_dict() for a in self.alerts]
        if self.quarantine is not None:
            doc["quarantine"] = {"reason": self.quarantine.reason, "rule": self.quarantine.rule}
        ask = self.claude_verdict or self.claude_verdict_monitor
        if ask is not None:
            doc["claude_verdict"] = ask.to_dict()
        return doc


@dataclass(frozen=True, slots=True)
class ResponseDecision:
    block: Block | None = None  # only enforceable on a buffered (non-streamed) response
    redact: RedactPlan = NO_REDACTION
    restore: bool = False  # put the request's redacted values back (reversible redaction)
    field_edits: tuple[FieldEdit, ...] = ()
    tags: tuple[str, ...] = ()
    alerts: tuple[Alert, ...] = ()
    quarantine: Quarantine | None = None
    fired: tuple[FiredRule, ...] = ()
    policy_version: str = ""

    @property
    def blocked(self) -> bool:
        return self.block is not None

    def to_record(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"version": self.policy_version, "fired": [f.to_dict() for f in self.fired]}
        if self.block is not None:
            doc["block"] = self.block.to_dict()
        if self.redact.active:
            doc["redact"] = self.redact.to_dict()
        if self.restore:
            doc["restore"] = True
        if self.tags:
            doc["tags"] = list(self.tags)
        if self.alerts:
            doc["alerts"] = [a.to_dict() for a in self.alerts]
        if self.quarantine is not None:
            doc["quarantine"] = {"reason": self.quarantine.reason, "rule": self.quarantine.rule}
        return doc


ALLOW_ALL = RequestDecision()
EMPTY_RESPONSE_DECISION = ResponseDecision()
