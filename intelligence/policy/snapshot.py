"""The compiled, immutable policy snapshot and its evaluation (pure, no I/O, microseconds).

Evaluation order and conflict resolution (docs/policy.md has the full table):

* model aliases are resolved first; every ``models`` condition sees the resolved name;
* rules run in ``priority`` order (lower first), ties in source order (the policy file, then the
  database policies by name), then in the order written; ``off`` rules are not compiled in;
* a matching ``monitor`` rule is recorded (with the actions it would take) and changes nothing;
* a matching ``enforce`` rule applies its actions; ``block`` (and a failed ``require_headers`` or
  ``allow_models``) ends evaluation: the first block wins; ``allow`` ends evaluation too, so later
  rules cannot block, redact or edit;
* redactions union (``mask`` beats ``redact`` for the same kind), the smallest ``cap_max_tokens``
  wins, the first ``route`` wins, the first rule to set a header / a field wins, removals union,
  prompt decorators apply in rule order, tags and alerts accumulate, every throttle applies, the
  first ``quarantine_key`` is kept, the first ``claude_verdict`` is the one asked (a monitor rule's
  only when no enforcing rule asks; none when the request is blocked).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from .decision import (
    NO_REDACTION,
    Alert,
    Block,
    FieldEdit,
    FiredRule,
    Mode,
    Phase,
    PromptEdit,
    Quarantine,
    RedactPlan,
    RedactSelector,
    RequestDecision,
    ResponseDecision,
    Route,
    Throttle,
    VerdictAsk,
)
from .facts import RequestFacts, ResponseFacts
from .parse import PolicyDocument
from .rules import Rule

_PLAIN_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    documents: tuple[PolicyDocument, ...]
    request_rules: tuple[Rule, ...]
    response_rules: tuple[Rule, ...]
    disabled: tuple[Rule, ...]  # mode off: listed by `policy show`, never evaluated
    aliases: Mapping[str, str]
    version: str  # short hash of every source: names the snapshot in records
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    detectors: frozenset[str] = frozenset()  # pii | secrets | injection | flags: what the exchange must run
    asks_claude: bool = False  # some live rule has claude_verdict: the sidecar may need its Claude client
    _plain: dict[str | None, RequestDecision] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------------------ build
    @classmethod
    def build(cls, documents: Iterable[PolicyDocument]) -> PolicySnapshot:
        docs = tuple(documents)
        ordered: list[tuple[int, int, int, Rule]] = []
        for d, doc in enumerate(docs):
            for i, rule in enumerate(doc.rules):
                ordered.append((rule.priority, d, i, rule))
        ordered.sort(key=lambda t: t[:3])
        live = [t[3] for t in ordered if t[3].mode is not Mode.OFF]
        aliases: dict[str, str] = {}
        for doc in docs:  # the file comes first, so it wins an alias defined twice
            for alias, model in doc.aliases.items():
                aliases.setdefault(alias, model)
        digest = hashlib.sha256("\n".join(f"{d.name}:{d.sha256}" for d in docs).encode()).hexdigest()[:12]
        return cls(
            documents=docs,
            request_rules=tuple(r for r in live if r.phase is Phase.REQUEST),
            response_rules=tuple(r for r in live if r.phase is Phase.RESPONSE),
            disabled=tuple(t[3] for t in ordered if t[3].mode is Mode.OFF),
            aliases=MappingProxyType(aliases),
            version=digest,
            detectors=_detectors(live),
            asks_claude=any(r.actions.claude_verdict is not None for r in live if r.phase is Phase.REQUEST),
        )

    @classmethod
    def empty(cls) -> PolicySnapshot:
        return cls.build(())

    # ------------------------------------------------------------------------------ request
    def evaluate_request(self, facts: RequestFacts) -> RequestDecision:
        model = facts.model
        aliased = self.aliases.get(model) if model is not None else None
        if aliased is not None:
            model = aliased
        det = facts.detections
        fired: list[FiredRule] = []
        acc: _RequestAcc | None = None
        block: Block | None = None
        for rule in self.request_rules:
            if not rule.applies(facts, model, det, None):
                continue
            fx = rule.effects
            refusal = fx.block or _refusal(rule, facts, model)
            if rule.mode is Mode.MONITOR:
                fired.append(
                    fx.fired_monitor
                    if refusal is None
                    else FiredRule(rule.id, rule.policy, Mode.MONITOR, rule.actions.names, refusal.message)
                )
                if fx.throttle_monitor is not None:
                    acc = acc or _RequestAcc()
                    acc.throttles.append(fx.throttle_monitor)
                if fx.verdict_monitor is not None:
                    acc = acc or _RequestAcc()
                    acc.verdict_monitor = acc.verdict_monitor or fx.verdict_monitor
                continue
            acc = acc or _RequestAcc()
            if refusal is not None:
                block = refusal
                fired.append(
                    fx.fired_enforce
                    if fx.block is not None
                    else FiredRule(rule.id, rule.policy, Mode.ENFORCE, rule.actions.names, refusal.message)
                )
                acc.side_effects(rule)  # a blocking rule still tags, alerts and quarantines
                break
            fired.append(fx.fired_enforce)
            acc.apply(rule)
            if rule.actions.allow:
                break
        if acc is None and aliased is None:
            if fired:
                return RequestDecision(model=model, fired=tuple(fired), policy_version=self.version)
            return self._untouched(model)
        acc = acc or _RequestAcc()
        return acc.decision(self.version, facts.model, model, aliased is not None, block, tuple(fired))

    def _untouched(self, model: str | None) -> RequestDecision:
        """The decision when no rule fired: the same for every request with this model, so cached
        (bounded; decisions are immutable, sharing them is safe)."""
        cached = self._plain.get(model)
        if cached is None:
            cached = RequestDecision(model=model, policy_version=self.version)
            if len(self._plain) < _PLAIN_CACHE_SIZE:
                self._plain[model] = cached
        return cached

    # ------------------------------------------------------------------------------ response
    def evaluate_response(self, facts: ResponseFacts) -> ResponseDecision:
        req = facts.request
        earlier = facts.request_decision
        model = (
            earlier.model if earlier is not None and earlier.model is not None else self.aliases.get(req.model or "", req.model)
        )
        det = facts.detections
        fired: list[FiredRule] = []
        block: Block | None = None
        selectors: list[RedactSelector] = list(earlier.response_redact.selectors) if earlier is not None else []
        edits: list[FieldEdit] = list(earlier.response_edits) if earlier is not None else []
        tags: list[str] = []
        alerts: list[Alert] = []
        quarantine: Quarantine | None = None
        for rule in self.response_rules:
            if not rule.applies(req, model, det, facts):
                continue
            fx = rule.effects
            if rule.mode is Mode.MONITOR:
                fired.append(fx.fired_monitor)
                continue
            fired.append(fx.fired_enforce)
            selectors.extend(fx.response_selectors)
            edits.extend(fx.response_edits)
            tags.extend(rule.actions.tags)
            if fx.alert is not None:
                alerts.append(fx.alert)
            if fx.quarantine is not None and quarantine is None:
                quarantine = fx.quarantine
            if fx.block is not None:
                block = fx.block
                break
        restore = earlier is not None and earlier.redact.restore_any
        if not fired and not selectors and not edits and not restore:
            return ResponseDecision(policy_version=self.version)
        return ResponseDecision(
            block=block,
            redact=RedactPlan(tuple(selectors)) if selectors else NO_REDACTION,
            restore=restore,
            field_edits=tuple(edits),
            tags=tuple(dict.fromkeys(tags)),
            alerts=tuple(alerts),
            quarantine=quarantine,
            fired=tuple(fired),
            policy_version=self.version,
        )

    # ------------------------------------------------------------------------------ inspection
    def rule(self, qualified: str) -> Rule | None:
        for rule in (*self.request_rules, *self.response_rules, *self.disabled):
            if rule.qualified == qualified:
                return rule
        return None

    def summary(self) -> dict[str, Any]:
        """What `llmproxy policy show` prints: sources, aliases, rules in evaluation order."""
        return {
            "version": self.version,
            "loaded_at": self.loaded_at.isoformat(),
            "sources": [
                {"name": d.name, "origin": d.origin, "sha256": d.sha256, "rules": len(d.rules), "description": d.description}
                for d in self.documents
            ],
            "aliases": dict(self.aliases),
            "detectors": sorted(self.detectors),
            "request_rules": [r.summary() for r in self.request_rules],
            "response_rules": [r.summary() for r in self.response_rules],
            "disabled_rules": [r.summary() for r in self.disabled],
        }


def _detectors(rules: list[Rule]) -> frozenset[str]:
    out: set[str] = set()
    for rule in rules:
        out |= rule.match.uses
        if rule.unless is not None:
            out |= rule.unless.uses
        for spec in rule.actions.redactions:
            out |= spec.categories if spec.kinds is None else {"pii", "secrets"}
    return frozenset(out)


def _refusal(rule: Rule, facts: RequestFacts, model: str | None) -> Block | None:
    """The block a rule without a plain ``block`` imposes on this request: a header it requires is
    missing, or the model is not on its allowlist (checked after the rule's own route, if any)."""
    a = rule.actions
    if a.require_headers:
        missing = [h for h in a.require_headers if h not in facts.headers]
        if missing:
            return Block(
                400,
                f"llmproxy: this request needs the header(s) {', '.join(missing)} (policy rule {rule.qualified})",
                "missing_required_header",
                rule.qualified,
            )
    if a.allow_models is not None and model is not None:
        final = a.route[0] if a.route is not None and a.route[0] else model
        if a.allow_models.fullmatch(final) is None:
            shown = final if len(final) <= 200 else final[:200] + "…"
            return Block(
                403,
                f"llmproxy: model {shown!r} is not allowed by policy rule {rule.qualified}; "
                f"allowed: {', '.join(a.allow_models_written)}",
                "model_not_allowed",
                rule.qualified,
            )
    return None


class _RequestAcc:
    """Accumulates the effects of enforcing rules; only built when some rule enforces."""

    __slots__ = (
        "redact",
        "response_redact",
        "cap",
        "prompts",
        "fields",
        "response_fields",
        "set_headers",
        "strip_headers",
        "tags",
        "alerts",
        "throttles",
        "quarantine",
        "route",
        "_set_pointers",
        "verdict",
        "verdict_monitor",
    )

    def __init__(self) -> None:
        self.redact: list[RedactSelector] = []
        self.response_redact: list[RedactSelector] = []
        self.cap: int | None = None
        self.prompts: list[PromptEdit] = []
        self.fields: list[FieldEdit] = []
        self.response_fields: list[FieldEdit] = []
        self.set_headers: dict[str, str] = {}
        self.strip_headers: dict[str, None] = {}
        self.tags: list[str] = []
        self.alerts: list[Alert] = []
        self.throttles: list[Throttle] = []
        self.quarantine: Quarantine | None = None
        self.route: Route | None = None
        self._set_pointers: set[tuple[bool, str]] | None = None
        self.verdict: VerdictAsk | None = None
        self.verdict_monitor: VerdictAsk | None = None

    def side_effects(self, rule: Rule) -> None:
        """What a rule records even when it blocks: tags, alert, quarantine."""
        fx = rule.effects
        if rule.actions.tags:
            self.tags.extend(rule.actions.tags)
        if fx.alert is not None:
            self.alerts.append(fx.alert)
        if fx.quarantine is not None and self.quarantine is None:
            self.quarantine = fx.quarantine

    def apply(self, rule: Rule) -> None:
        a, fx = rule.actions, rule.effects
        self.side_effects(rule)
        if fx.request_selectors:
            self.redact.extend(fx.request_selectors)
        if fx.response_selectors:
            self.response_redact.extend(fx.response_selectors)
        if a.cap_max_tokens is not None and (self.cap is None or a.cap_max_tokens < self.cap):
            self.cap = a.cap_max_tokens
        if fx.route is not None and self.route is None:
            self.route = fx.route
        if fx.prompts:
            self.prompts.extend(fx.prompts)
        for e in fx.field_edits:
            self._edit(self.fields, e, False)
        for e in fx.response_edits:
            self._edit(self.response_fields, e, True)
        for name, value in a.set_headers:
            self.set_headers.setdefault(name, value)  # the first rule to set a header wins
        for name in a.strip_headers:
            self.strip_headers[name] = None
        if fx.throttle_enforce is not None:
            self.throttles.append(fx.throttle_enforce)
        if fx.verdict_enforce is not None and self.verdict is None:  # one question per request: the first rule's
            self.verdict = fx.verdict_enforce

    def _edit(self, into: list[FieldEdit], e: FieldEdit, response: bool) -> None:
        if e.op != "remove":  # the first rule to set a pointer wins; removals union
            seen = self._set_pointers = self._set_pointers or set()
            if (response, e.pointer) in seen:
                return
            seen.add((response, e.pointer))
        into.append(e)

    def decision(
        self,
        version: str,
        client_model: str | None,
        model: str | None,
        aliased: bool,
        block: Block | None,
        fired: tuple[FiredRule, ...],
    ) -> RequestDecision:
        tags = tuple(dict.fromkeys(self.tags)) if self.tags else ()
        if block is not None:
            # a refused request goes nowhere: only what is recorded about it (tags, alerts, quarantine) stays
            return RequestDecision(
                model=model,
                block=block,
                tags=tags,
                alerts=tuple(self.alerts),
                quarantine=self.quarantine,
                fired=fired,
                policy_version=version,
            )
        provider = None
        if self.route is not None:
            model = self.route.model or model
            provider = self.route.provider
        changed = client_model if (aliased or self.route is not None) and model != client_model else None
        return RequestDecision(
            model=model,
            model_changed_from=changed,
            provider=provider,
            route=self.route,
            redact=RedactPlan(tuple(self.redact)) if self.redact else NO_REDACTION,
            response_redact=RedactPlan(tuple(self.response_redact)) if self.response_redact else NO_REDACTION,
            cap_max_tokens=self.cap,
            prompts=tuple(self.prompts),
            field_edits=tuple(self.fields),
            response_edits=tuple(self.response_fields),
            set_headers=tuple(self.set_headers.items()),
            strip_headers=tuple(self.strip_headers),
            tags=tags,
            alerts=tuple(self.alerts),
            throttles=tuple(self.throttles),
            quarantine=self.quarantine,
            fired=fired,
            policy_version=version,
            claude_verdict=self.verdict,
            claude_verdict_monitor=None if self.verdict is not None else self.verdict_monitor,
        )
