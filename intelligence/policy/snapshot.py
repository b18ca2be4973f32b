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

Each rule acts through the hooks of its action classes (:mod:`.actions`), collected once per rule
in its :class:`~.rules.Effects`: its gates say whether the request is refused, then the ``enforce``
(or, for a refused request, only the ``record``) hooks write into a :class:`RequestAcc`, or the
``monitor`` hooks for a monitor rule; the merge rules above are the hooks' own. Response-phase rules
write into a :class:`ResponseAcc` through their ``respond`` and ``record`` hooks.
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
    asks_claude: bool = False  # some live rule has an action that asks Claude (claude_verdict): the sidecar needs its client
    # some enforcing request rule redacts personal data from requests: a PII scan that could not read
    # the whole request then refuses it (the guard), whatever that rule's other conditions
    redacts_pii: bool = False
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
            asks_claude=any(a.asks_claude for r in live if r.phase is Phase.REQUEST for a in r.actions),
            redacts_pii=any(
                sel.kinds is not None or "pii" in sel.categories
                for r in live
                if r.phase is Phase.REQUEST and r.mode is Mode.ENFORCE
                for a in r.actions
                for sel in getattr(a, "request_selectors", ())
            ),
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
        acc: RequestAcc | None = None
        block: Block | None = None
        for rule in self.request_rules:
            if not rule.applies(facts, model, det, None):
                continue
            fx = rule.effects
            refusal = fx.block
            if refusal is None:
                for gate in fx.gates:
                    refusal = gate(facts, model)
                    if refusal is not None:
                        break
            if rule.mode is Mode.MONITOR:
                if refusal is None:
                    fired.append(fx.fired_monitor)
                elif refusal is fx.block and fx.fired_monitor_blocked is not None:
                    fired.append(fx.fired_monitor_blocked)
                else:
                    fired.append(FiredRule(rule.id, rule.policy, Mode.MONITOR, rule.actions.names, refusal.message))
                if fx.on_monitor:
                    acc = acc or RequestAcc()
                    for hook in fx.on_monitor:  # throttles count, verdicts are asked in the background
                        hook(acc)
                continue
            acc = acc or RequestAcc()
            if refusal is not None:
                block = refusal
                fired.append(
                    fx.fired_enforce
                    if refusal is fx.block
                    else FiredRule(rule.id, rule.policy, Mode.ENFORCE, rule.actions.names, refusal.message)
                )
                for hook in fx.on_block:  # a blocking rule still tags, alerts and quarantines
                    hook(acc)
                break
            fired.append(fx.fired_enforce)
            for hook in fx.on_enforce:
                hook(acc)
            if fx.terminal:
                break
        if acc is None and aliased is None:
            if fired:
                return RequestDecision(model=model, fired=tuple(fired), policy_version=self.version)
            return self._untouched(model)
        acc = acc or RequestAcc()
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
        acc: ResponseAcc | None = None
        for rule in self.response_rules:
            if not rule.applies(req, model, det, facts):
                continue
            fx = rule.effects
            if rule.mode is Mode.MONITOR:
                fired.append(fx.fired_monitor)
                continue
            fired.append(fx.fired_enforce)
            acc = acc or ResponseAcc(earlier)
            for hook in fx.on_respond:
                hook(acc)
            if fx.block is not None:
                block = fx.block
                break
        restore = earlier is not None and earlier.redact.restore_any
        if acc is None:  # no response rule enforced: what the request phase decided for the response, as it is
            plan = earlier.response_redact if earlier is not None else NO_REDACTION
            edits = earlier.response_edits if earlier is not None else ()
            if not fired and not plan.selectors and not edits and not restore:
                return ResponseDecision(policy_version=self.version)
            return ResponseDecision(
                redact=plan if plan.selectors else NO_REDACTION,
                restore=restore,
                field_edits=edits,
                fired=tuple(fired),
                policy_version=self.version,
            )
        return ResponseDecision(
            block=block,
            redact=RedactPlan(tuple(acc.selectors)) if acc.selectors else NO_REDACTION,
            restore=restore,
            field_edits=tuple(acc.edits),
            tags=tuple(dict.fromkeys(acc.tags)),
            alerts=tuple(acc.alerts),
            quarantine=acc.quarantine,
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
        for action in rule.actions:
            out |= action.detectors()
    return frozenset(out)


class Records:
    """What enforcing rules record in either phase, and all a refused request keeps: tags, alerts,
    the quarantine (``record`` hooks write here)."""

    __slots__ = ("tags", "alerts", "quarantine")
    # set by the subclasses' __init__ (one call less per decision)
    tags: list[str]
    alerts: list[Alert]
    quarantine: Quarantine | None  # the first one is kept


class ResponseAcc(Records):
    """Accumulates the effects of enforcing response-phase rules, after what the request phase
    decided for the response (its response redactions and edits)."""

    __slots__ = ("selectors", "edits")

    def __init__(self, earlier: RequestDecision | None) -> None:
        self.tags = []
        self.alerts = []
        self.quarantine = None
        self.selectors: list[RedactSelector] = list(earlier.response_redact.selectors) if earlier is not None else []
        self.edits: list[FieldEdit] = list(earlier.response_edits) if earlier is not None else []


class RequestAcc(Records):
    """Accumulates the effects of enforcing request-phase rules; only built when some rule enforces
    (or a monitor rule throttles or asks). The action hooks write its fields; the merge rules
    (docs/policy.md, "Evaluation order and conflict resolution") are theirs: e.g. ``route`` keeps
    the first route, ``cap_max_tokens`` the smallest cap; :meth:`edit_field` keeps the first set of
    a pointer."""

    __slots__ = (
        "redact",
        "response_redact",
        "cap",
        "prompts",
        "fields",
        "response_fields",
        "set_headers",
        "strip_headers",
        "throttles",
        "route",
        "_set_pointers",
        "verdict",
        "verdict_monitor",
    )

    def __init__(self) -> None:
        self.tags = []
        self.alerts = []
        self.quarantine = None
        self.redact: list[RedactSelector] = []  # in the request
        self.response_redact: list[RedactSelector] = []  # in the response (`in: [response]`)
        self.cap: int | None = None  # the smallest cap
        self.prompts: list[PromptEdit] = []
        self.fields: list[FieldEdit] = []  # through edit_field
        self.response_fields: list[FieldEdit] = []  # through edit_response_field
        self.set_headers: dict[str, str] = {}  # the first value set for a header wins: setdefault
        self.strip_headers: dict[str, None] = {}  # an ordered set
        self.throttles: list[Throttle] = []
        self.route: Route | None = None  # the first route
        self._set_pointers: set[tuple[bool, str]] | None = None
        self.verdict: VerdictAsk | None = None  # the first enforcing rule's ask
        self.verdict_monitor: VerdictAsk | None = None  # the first monitor rule's ask

    def edit_field(self, e: FieldEdit) -> None:
        """A request-field edit: the first rule to set (or default) a pointer wins; removals union."""
        self._edit(self.fields, e, False)

    def edit_response_field(self, e: FieldEdit) -> None:
        """A response-field edit decided in the request phase; the same rule as :meth:`edit_field`."""
        self._edit(self.response_fields, e, True)

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
