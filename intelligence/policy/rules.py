"""Compiled rules: precompiled predicates and actions, built once per snapshot by :mod:`.parse`.

A :class:`Match` is a tuple of predicates that must all hold (AND); each predicate tests one fact
against a list (OR). Globs and regexes are compiled into one regex per list. A predicate on a fact
that is unknown (``None``) is false.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from .decision import (
    Alert,
    Block,
    FieldEdit,
    FiredRule,
    Mode,
    Phase,
    PromptEdit,
    Quarantine,
    RedactMode,
    RedactSelector,
    Route,
    Throttle,
    VerdictAsk,
)
from .facts import Detections, RequestFacts, ResponseFacts

# (request facts, effective model, detections of this phase's text, response facts or None)
Check = Callable[[RequestFacts, "str | None", Detections, "ResponseFacts | None"], bool]

REGEX_PREFIX = "re:"


class PatternError(ValueError):
    pass


def compile_patterns(patterns: list[str], *, ignore_case: bool) -> re.Pattern[str]:
    """One regex for a list of globs (``gpt-4*``) and regexes (``re:^o[0-9]``); use ``fullmatch``."""
    parts = [_one_pattern(pattern) for pattern in patterns]
    return re.compile("|".join(f"(?:{p})" for p in parts), re.IGNORECASE if ignore_case else 0)


def _one_pattern(pattern: str) -> str:
    if not pattern:
        raise PatternError("empty pattern")
    if pattern.startswith(REGEX_PREFIX):
        body = pattern[len(REGEX_PREFIX) :]
        if not body:
            raise PatternError("empty regex")
        try:
            re.compile(body)
        except re.error as exc:
            raise PatternError(f"invalid regex {body!r}: {exc}") from None
        # regexes search (like grep): ^ and $ anchor them to the whole value
        return rf"[\s\S]*?(?:{body})[\s\S]*"
    _check_glob(pattern)
    return fnmatch.translate(pattern)


def _check_glob(pattern: str) -> None:
    """fnmatch takes an unclosed '[' literally; in a policy that is almost always a typo."""
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] != "[":
            i += 1
            continue
        j = i + 1
        if j < n and pattern[j] == "!":
            j += 1
        if j < n and pattern[j] == "]":  # "[]...]" : a literal ']' as the first member
            j += 1
        close = pattern.find("]", j)
        if close < 0:
            raise PatternError(f"unclosed '[' at position {i} in glob {pattern!r} (write [[] for a literal '[')")
        i = close + 1


def _fullmatch(regex: re.Pattern[str], value: str | None) -> bool:
    return value is not None and regex.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class NumberRange:
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    def contains(self, x: float | None) -> bool:
        if x is None:
            return False
        return (
            (self.gt is None or x > self.gt)
            and (self.gte is None or x >= self.gte)
            and (self.lt is None or x < self.lt)
            and (self.lte is None or x <= self.lte)
        )

    def describe(self) -> str:
        ops = (("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<="))
        return " and ".join(f"{sym} {getattr(self, name):g}" for name, sym in ops if getattr(self, name) is not None)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """UTC days (0 = Monday) and minute-of-day windows [start, end); a window may wrap midnight."""

    days: frozenset[int] = frozenset()
    minutes: tuple[tuple[int, int], ...] = ()

    def contains(self, now: datetime) -> bool:
        if self.days and now.weekday() not in self.days:
            return False
        if not self.minutes:
            return True
        m = now.hour * 60 + now.minute
        return any((start <= m < end) if start < end else (m >= start or m < end) for start, end in self.minutes)


# ---------------------------------------------------------------------------------------- predicates
def any_of(
    values: Callable[[RequestFacts, str | None, Detections, ResponseFacts | None], tuple[str | None, ...]], regex: re.Pattern[str]
) -> Check:
    def check(req: RequestFacts, model: str | None, det: Detections, resp: ResponseFacts | None) -> bool:
        return any(_fullmatch(regex, v) for v in values(req, model, det, resp))

    return check


def fact(
    getter: Callable[[RequestFacts, str | None, Detections, ResponseFacts | None], str | None], regex: re.Pattern[str]
) -> Check:
    def check(req: RequestFacts, model: str | None, det: Detections, resp: ResponseFacts | None) -> bool:
        return _fullmatch(regex, getter(req, model, det, resp))

    return check


def found(kinds: Callable[[Detections], Mapping[str, int]], regex: re.Pattern[str]) -> Check:
    def check(req: RequestFacts, model: str | None, det: Detections, resp: ResponseFacts | None) -> bool:
        return any(regex.fullmatch(k) is not None for k, n in kinds(det).items() if n > 0)

    return check


def flagged(regex: re.Pattern[str]) -> Check:
    def check(req: RequestFacts, model: str | None, det: Detections, resp: ResponseFacts | None) -> bool:
        return any(regex.fullmatch(f) is not None for f in det.flags)

    return check


def in_range(getter: Callable[[RequestFacts, Detections, ResponseFacts | None], float | None], rng: NumberRange) -> Check:
    def check(req: RequestFacts, model: str | None, det: Detections, resp: ResponseFacts | None) -> bool:
        return rng.contains(getter(req, det, resp))

    return check


def during(window: TimeWindow) -> Check:
    def check(req: RequestFacts, model: str | None, det: Detections, resp: ResponseFacts | None) -> bool:
        return window.contains(req.now)

    return check


def headers_check(present: tuple[str, ...], absent: tuple[str, ...], values: tuple[tuple[str, re.Pattern[str]], ...]) -> Check:
    def check(req: RequestFacts, model: str | None, det: Detections, resp: ResponseFacts | None) -> bool:
        h = req.headers
        return (
            all(name in h for name in present)
            and not any(name in h for name in absent)
            and all(_fullmatch(rx, h.get(name)) for name, rx in values)
        )

    return check


@dataclass(frozen=True, slots=True)
class Match:
    checks: tuple[Check, ...] = ()
    summary: Mapping[str, Any] = field(default_factory=dict)  # the conditions as written, for `policy show`
    uses: frozenset[str] = frozenset()  # detector categories the conditions read: pii | secrets | injection | flags

    def matches(self, req: RequestFacts, model: str | None, det: Detections, resp: ResponseFacts | None) -> bool:
        for check in self.checks:
            if not check(req, model, det, resp):
                return False
        return True


ALWAYS = Match()


# ---------------------------------------------------------------------------------------- actions
@dataclass(frozen=True, slots=True)
class RedactSpec:
    categories: frozenset[str]
    kinds: re.Pattern[str] | None
    mode: RedactMode
    directions: frozenset[str]  # request | response
    restore: bool
    written: tuple[str, ...]  # the kinds as written


@dataclass(frozen=True, slots=True)
class Actions:
    names: tuple[str, ...]  # action keys in written order (what FiredRule reports)
    allow: bool = False
    block: tuple[int, str, str] | None = None  # status, message, code
    redactions: tuple[RedactSpec, ...] = ()
    require_headers: tuple[str, ...] = ()
    strip_headers: tuple[str, ...] = ()
    set_headers: tuple[tuple[str, str], ...] = ()
    cap_max_tokens: int | None = None
    allow_models: re.Pattern[str] | None = None
    allow_models_written: tuple[str, ...] = ()
    route: tuple[str | None, str | None] | None = None  # model, provider
    tags: tuple[str, ...] = ()
    alert: tuple[Literal["info", "warning", "critical"], str] | None = None
    throttle: tuple[int, int, Literal["key", "client"]] | None = None  # rpm, burst, per
    quarantine: str | None = None  # reason
    prompts: tuple[tuple[Literal["prepend", "append"], Literal["system", "user"], str], ...] = ()
    field_edits: tuple[tuple[Literal["set", "default", "remove"], str, Any], ...] = ()
    response_edits: tuple[tuple[Literal["set", "default", "remove"], str, Any], ...] = ()
    # claude_verdict: timeout_ms, on_timeout (allow | block), block_at (malicious | suspicious), min_confidence
    claude_verdict: tuple[int, Literal["allow", "block"], Literal["malicious", "suspicious"], float] | None = None
    written: Mapping[str, Any] = field(default_factory=dict)  # as written, for `policy show`


@dataclass(frozen=True, slots=True)
class Effects:
    """The decision parts a rule contributes, built once at compile time so that evaluation only
    collects references (no allocation per rule per request beyond the lists holding them)."""

    fired_enforce: FiredRule
    fired_monitor: FiredRule
    block: Block | None
    request_selectors: tuple[RedactSelector, ...]
    response_selectors: tuple[RedactSelector, ...]
    alert: Alert | None
    quarantine: Quarantine | None
    throttle_enforce: Throttle | None
    throttle_monitor: Throttle | None
    route: Route | None
    prompts: tuple[PromptEdit, ...]
    field_edits: tuple[FieldEdit, ...]
    response_edits: tuple[FieldEdit, ...]
    verdict_enforce: VerdictAsk | None = None
    verdict_monitor: VerdictAsk | None = None

    @classmethod
    def of(cls, rule_id: str, policy: str, phase: Phase, a: Actions) -> Effects:
        q = f"{policy}/{rule_id}"

        def selectors(direction: str) -> tuple[RedactSelector, ...]:
            # in a response-phase rule nothing is restored: the values were never the client's
            return tuple(
                RedactSelector(s.categories, s.kinds, s.mode, s.restore and phase is Phase.REQUEST, q)
                for s in a.redactions
                if direction in s.directions
            )

        def throttle(mode: Mode) -> Throttle | None:
            return Throttle(a.throttle[0], a.throttle[1], a.throttle[2], q, mode) if a.throttle is not None else None

        def verdict(mode: Mode) -> VerdictAsk | None:
            return VerdictAsk(*a.claude_verdict, rule=q, mode=mode) if a.claude_verdict is not None else None

        return cls(
            fired_enforce=FiredRule(rule_id, policy, Mode.ENFORCE, a.names),
            fired_monitor=FiredRule(rule_id, policy, Mode.MONITOR, a.names),
            block=Block(a.block[0], a.block[1], a.block[2], q) if a.block is not None else None,
            request_selectors=selectors("request"),
            response_selectors=selectors("response"),
            alert=Alert(a.alert[0], a.alert[1], q) if a.alert is not None else None,
            quarantine=Quarantine(a.quarantine, q) if a.quarantine is not None else None,
            throttle_enforce=throttle(Mode.ENFORCE),
            throttle_monitor=throttle(Mode.MONITOR),
            route=Route(a.route[0], a.route[1], q) if a.route is not None else None,
            prompts=tuple(PromptEdit(pos, role, text, q) for pos, role, text in a.prompts),
            field_edits=tuple(FieldEdit(op, ptr, value, q) for op, ptr, value in a.field_edits),
            response_edits=tuple(FieldEdit(op, ptr, value, q) for op, ptr, value in a.response_edits),
            verdict_enforce=verdict(Mode.ENFORCE),
            verdict_monitor=verdict(Mode.MONITOR),
        )


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    policy: str
    mode: Mode
    phase: Phase
    priority: int
    description: str
    match: Match
    unless: Match | None
    actions: Actions
    line: int
    effects: Effects

    @property
    def qualified(self) -> str:
        return f"{self.policy}/{self.id}"

    def applies(self, req: RequestFacts, model: str | None, det: Detections, resp: ResponseFacts | None) -> bool:
        if not self.match.matches(req, model, det, resp):
            return False
        return self.unless is None or not self.unless.matches(req, model, det, resp)

    def summary(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "policy": self.policy,
            "mode": self.mode.value,
            "phase": self.phase.value,
            "priority": self.priority,
            "line": self.line,
            "match": dict(self.match.summary),
            "actions": dict(self.actions.written),
        }
        if self.unless is not None:
            doc["unless"] = dict(self.unless.summary)
        if self.description:
            doc["description"] = self.description
        return doc
