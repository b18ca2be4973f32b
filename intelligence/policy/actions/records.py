"""Actions that record something about the exchange: ``tag``, ``alert``, ``quarantine_key``. They
apply in both phases and are kept even when the rule (or, in the request phase, the rule that
carries them) blocks: a refused request is still labelled, alerted on, and its key quarantined."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..decision import Alert, Quarantine
from ..reader import Reader
from ..yamlnodes import Node
from .base import BOTH_PHASES, Action, RuleContext

if TYPE_CHECKING:
    from ..snapshot import Records

Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True, slots=True)
class TagAction(Action):
    """``tag: name`` or ``[..]``: labels accumulate over the rules (de-duplicated)."""

    key = "tag"
    phases = BOTH_PHASES

    tags: tuple[str, ...]

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> TagAction | None:
        tags = r.strings(node, field)
        return cls(tuple(dict.fromkeys(tags))) if tags is not None else None

    def record(self, acc: Records) -> None:
        acc.tags.extend(self.tags)


@dataclass(frozen=True, slots=True)
class AlertAction(Action):
    """``alert: message`` or ``{severity, message}``: alerts accumulate."""

    key = "alert"
    phases = BOTH_PHASES

    alert: Alert

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> AlertAction | None:
        default = f"policy rule {rule.qualified} fired" + (f": {rule.description}" if rule.description else "")
        if node.kind == "scalar" and node.value is True:
            return cls(Alert("warning", default, rule.qualified))
        if node.kind == "scalar" and isinstance(node.value, str):
            text = r.string(node, field)
            return cls(Alert("warning", text, rule.qualified)) if text is not None else None
        spec = r.mapping(node, field, ("severity", "message"))
        if spec is None:
            return None
        severity: Severity | None = "warning"
        if "severity" in spec:
            severity = r.enum(spec["severity"], f"{field}.severity", ("info", "warning", "critical"))
        message = r.string(spec["message"], f"{field}.message") if "message" in spec else default
        return cls(Alert(severity, message, rule.qualified)) if severity is not None and message is not None else None

    def record(self, acc: Records) -> None:
        acc.alerts.append(self.alert)


@dataclass(frozen=True, slots=True)
class QuarantineKeyAction(Action):
    """``quarantine_key: true`` or ``{reason}``: the first quarantine of the exchange is kept."""

    key = "quarantine_key"
    phases = BOTH_PHASES

    quarantine: Quarantine

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> QuarantineKeyAction | None:
        default = f"policy rule {rule.qualified}" + (f": {rule.description}" if rule.description else "")
        if node.kind == "scalar" and node.value is True:
            return cls(Quarantine(default, rule.qualified))
        spec = r.mapping(node, field, ("reason",))
        if spec is None:
            return None
        reason = r.string(spec["reason"], f"{field}.reason") if "reason" in spec else default
        return cls(Quarantine(reason, rule.qualified)) if reason is not None else None

    def record(self, acc: Records) -> None:
        if acc.quarantine is None:
            acc.quarantine = self.quarantine
