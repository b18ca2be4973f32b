"""Compiled rules: precompiled predicates and actions, built once per snapshot by :mod:`.parse`.

A :class:`Match` is a tuple of predicates that must all hold (AND); each predicate tests one fact
against a list (OR). Globs and regexes are compiled into one regex per list. A predicate on a fact
that is unknown (``None``) is false.

A rule's :class:`Actions` are instances of the action classes of :mod:`.actions` (one per key);
:class:`Effects` collects, once per rule, the hooks they implement, which evaluation then calls.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .decision import Block, FiredRule, Mode, Phase
from .facts import Detections, RequestFacts, ResponseFacts

if TYPE_CHECKING:
    from .actions.base import Action
    from .snapshot import RequestAcc, ResponseAcc

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
class Actions:
    """A rule's actions: one :class:`~.actions.base.Action` per key written, in written order.

    ``names`` (the keys as written) is what :class:`FiredRule` reports; ``gates`` are the actions that
    may refuse the request, in registry order (``block``, ``require_headers``, ``allow_models``)."""

    items: tuple[Action, ...] = ()
    written: Mapping[str, Any] = field(default_factory=dict)  # as written, for `policy show`
    gates: tuple[Action, ...] = ()
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(a.key for a in self.items))

    def get(self, key: str) -> Action | None:
        for a in self.items:
            if a.key == key:
                return a
        return None

    def __getitem__(self, key: str) -> Action:
        a = self.get(key)
        if a is None:
            raise KeyError(key)
        return a

    def __contains__(self, key: object) -> bool:
        return key in self.names

    def __iter__(self) -> Iterator[Action]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


Gate = Callable[[RequestFacts, str | None], Block | None]


@dataclass(frozen=True, slots=True)
class Effects:
    """What a rule does, prepared once at compile time: its :class:`FiredRule` records, its refusal
    when it is fixed, and per situation the tuple of the hooks its actions implement (bound methods),
    so that evaluation calls only what the rule has and allocates nothing for a rule that does not
    fire (nothing beyond the lists of the decision for one that does)."""

    fired_enforce: FiredRule
    fired_monitor: FiredRule
    block: Block | None = None  # a fixed refusal (`block`): imposed on every request the rule matches
    fired_monitor_blocked: FiredRule | None = None  # the monitor record of that refusal (its message as note)
    gates: tuple[Gate, ...] = ()  # refusals that depend on the request, in registry order (none when `block`)
    on_enforce: tuple[Callable[[RequestAcc], None], ...] = ()  # enforcing, the request goes on
    on_block: tuple[Callable[[RequestAcc], None], ...] = ()  # enforcing and refusing: what is still recorded
    on_monitor: tuple[Callable[[RequestAcc], None], ...] = ()  # monitor mode
    on_respond: tuple[Callable[[ResponseAcc], None], ...] = ()  # enforcing, response phase
    terminal: bool = False  # `allow`: no later rule runs

    @classmethod
    def of(cls, rule_id: str, policy: str, phase: Phase, actions: Actions) -> Effects:
        def hooks(name: str) -> tuple[Any, ...]:
            return tuple(getattr(a, name) for a in actions.items if name in a.implemented)

        block = next((b for a in actions.gates if (b := a.fixed_refusal()) is not None), None)
        record = hooks("record")
        request = phase is Phase.REQUEST
        return cls(
            fired_enforce=FiredRule(rule_id, policy, Mode.ENFORCE, actions.names),
            fired_monitor=FiredRule(rule_id, policy, Mode.MONITOR, actions.names),
            block=block,
            fired_monitor_blocked=FiredRule(rule_id, policy, Mode.MONITOR, actions.names, block.message) if block else None,
            gates=tuple(a.refusal for a in actions.gates if "refusal" in a.implemented) if request and block is None else (),
            on_enforce=record + hooks("enforce") if request else (),
            on_block=record if request else (),
            on_monitor=hooks("monitor") if request else (),
            on_respond=() if request else record + hooks("respond"),
            terminal=any(a.ends_evaluation for a in actions.items),
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
