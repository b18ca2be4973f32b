"""Actions the exchange carries out after evaluation: ``throttle`` (token buckets and the shared
window, :class:`~..throttle.Throttler`) and ``claude_verdict`` (the sidecar's Claude gate). Unlike
other actions they also act in monitor mode: a monitor throttle counts and records, a monitor
verdict is asked in the background; neither ever refuses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..decision import FailMode, Mode, Throttle, VerdictAsk, VerdictLevel
from ..reader import Reader
from ..yamlnodes import Node
from .base import Action, RuleContext

if TYPE_CHECKING:
    from ..snapshot import RequestAcc

# claude_verdict.timeout_ms bounds: the upper one leaves room under Envoy's ext_proc message_timeout
# (10 s in envoy.yaml), past which Envoy itself would fail the request.
VERDICT_TIMEOUT_MS = (100, 8000)
VERDICT_DEFAULT_TIMEOUT_MS = 1500
VERDICT_DEFAULT_CONFIDENCE = 0.8


@dataclass(frozen=True, slots=True)
class ThrottleAction(Action):
    """``throttle: {rpm, burst, per}``: every throttle of every matching rule applies."""

    key = "throttle"

    enforced: Throttle
    monitored: Throttle

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> ThrottleAction | None:
        spec = r.mapping(node, field, ("rpm", "burst", "per"))
        if spec is None:
            return None
        if "rpm" not in spec:
            r.error(node, f"{field}.rpm", "missing: requests per minute")
            return None
        rpm = r.integer(spec["rpm"], f"{field}.rpm", lo=1, hi=1_000_000)
        burst = r.integer(spec["burst"], f"{field}.burst", lo=1, hi=1_000_000) if "burst" in spec else rpm
        per: Literal["key", "client"] | None = "key"
        if "per" in spec:
            per = r.enum(spec["per"], f"{field}.per", ("key", "client"))
        if rpm is None or burst is None or per is None:
            return None
        q = rule.qualified
        return cls(Throttle(rpm, burst, per, q, Mode.ENFORCE), Throttle(rpm, burst, per, q, Mode.MONITOR))

    def enforce(self, acc: RequestAcc) -> None:
        acc.throttles.append(self.enforced)

    def monitor(self, acc: RequestAcc) -> None:
        acc.throttles.append(self.monitored)


@dataclass(frozen=True, slots=True)
class ClaudeVerdictAction(Action):
    """``claude_verdict: {timeout_ms, on_timeout, block_at, min_confidence}``: hold the request for
    Claude's verdict. One question per request: the first enforcing rule's (a monitor rule's only
    when no enforcing rule asks); not asked when the request is blocked."""

    key = "claude_verdict"
    asks_claude = True
    conflicts_with = {"block": "a rule that blocks outright has no use for a verdict: drop `block` (the verdict blocks) or this"}

    enforced: VerdictAsk
    monitored: VerdictAsk

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> ClaudeVerdictAction | None:
        """``on_timeout`` has no default: whether the gateway fails open or closed when Claude does
        not answer in time is the operator's call."""
        spec = r.mapping(node, field, ("timeout_ms", "on_timeout", "block_at", "min_confidence"))
        if spec is None:
            return None
        if "on_timeout" not in spec:
            r.error(
                node,
                f"{field}.on_timeout",
                "missing: declare what happens without a verdict in time: allow (fail-open) or block (fail-closed)",
            )
            return None
        lo, hi = VERDICT_TIMEOUT_MS
        timeout = (
            r.integer(spec["timeout_ms"], f"{field}.timeout_ms", lo=lo, hi=hi)
            if "timeout_ms" in spec
            else VERDICT_DEFAULT_TIMEOUT_MS
        )
        on_timeout: FailMode | None = r.enum(spec["on_timeout"], f"{field}.on_timeout", ("allow", "block"))
        block_at: VerdictLevel | None = "malicious"
        if "block_at" in spec:
            block_at = r.enum(spec["block_at"], f"{field}.block_at", ("malicious", "suspicious"))
        confidence: float | None = VERDICT_DEFAULT_CONFIDENCE
        if "min_confidence" in spec:
            confidence = r.number(spec["min_confidence"], f"{field}.min_confidence")
            if confidence is not None and not 0.0 <= confidence <= 1.0:
                r.error(spec["min_confidence"], f"{field}.min_confidence", f"{confidence:g} is out of range: must be in [0, 1]")
                confidence = None
        if timeout is None or on_timeout is None or block_at is None or confidence is None:
            return None
        q = rule.qualified
        return cls(
            VerdictAsk(timeout, on_timeout, block_at, confidence, q, Mode.ENFORCE),
            VerdictAsk(timeout, on_timeout, block_at, confidence, q, Mode.MONITOR),
        )

    def enforce(self, acc: RequestAcc) -> None:
        if acc.verdict is None:
            acc.verdict = self.enforced

    def monitor(self, acc: RequestAcc) -> None:
        if acc.verdict_monitor is None:
            acc.verdict_monitor = self.monitored
