"""The ``match`` / ``unless`` part of a rule: validated and compiled into predicates."""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

from .decision import Phase
from .reader import Reader, header_names
from .rules import (
    Check,
    Match,
    NumberRange,
    TimeWindow,
    any_of,
    during,
    fact,
    flagged,
    found,
    headers_check,
    in_range,
)
from .yamlnodes import Node

KNOWN_APIS = ("chat", "responses", "messages", "embeddings", "completions", "ollama_chat", "ollama_generate")
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# the injection threshold the detectors are calibrated for (intelligence.detectors.injection.DEFAULT_THRESHOLD)
DETECTOR_DEFAULT = "default"
MATCH_KEYS = (
    "keys",
    "clients",
    "models",
    "providers",
    "paths",
    "apis",
    "methods",
    "patterns",
    "pii",
    "secrets",
    "injection_score",
    "injection_layers",
    "detection_incomplete",
    "flags",
    "request_bytes",
    "time",
    "headers",
    "status",
    "response_bytes",
)
_RESPONSE_ONLY = ("status", "response_bytes")
_HOURS = re.compile(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})")


def injection_threshold() -> float:
    """The detectors' calibrated operating point (imported lazily: the detectors pull in numpy)."""
    from intelligence.detectors.injection import DEFAULT_THRESHOLD

    return float(DEFAULT_THRESHOLD)


def _range(
    r: Reader, node: Node, field: str, *, lo: float | None = None, hi: float | None = None, named_default: bool = False
) -> NumberRange | None:
    spec = r.mapping(node, field, ("gt", "gte", "lt", "lte"))
    if spec is None:
        return None
    if not node.value:
        r.error(node, field, "give at least one bound: gt, gte, lt or lte")
        return None
    bounds: dict[str, float] = {}
    for key, value in spec.items():
        if named_default and value.kind == "scalar" and value.value == DETECTOR_DEFAULT:
            bounds[key] = injection_threshold()
            continue
        number = r.number(value, f"{field}.{key}")
        if number is None:
            continue
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            bounds = (
                f"[{lo:g}, {hi:g}]" if lo is not None and hi is not None else f">= {lo:g}" if lo is not None else f"<= {hi:g}"
            )
            r.error(value, f"{field}.{key}", f"{number:g} is out of range: must be {bounds}")
            continue
        bounds[key] = number
    return NumberRange(**bounds) if len(bounds) == len(spec) else None


def _time(r: Reader, node: Node, field: str) -> TimeWindow | None:
    spec = r.mapping(node, field, ("days", "hours"))
    if spec is None:
        return None
    if not node.value:
        r.error(node, field, "give days, hours or both (UTC)")
        return None
    days: set[int] = set()
    minutes: list[tuple[int, int]] = []
    ok = True
    if "days" in spec:
        for value in r.strings(spec["days"], f"{field}.days") or []:
            key = value.strip().lower()[:3]
            if key not in DAY_NAMES or value.strip().lower() not in (key, _full_day(key)):
                r.error(spec["days"], f"{field}.days", f"{value!r} is not a day: use {', '.join(DAY_NAMES)}")
                ok = False
            else:
                days.add(DAY_NAMES.index(key))
    if "hours" in spec:
        for value in r.strings(spec["hours"], f"{field}.hours") or []:
            m = _HOURS.fullmatch(value.strip())
            start = end = -1
            if m:
                h1, m1, h2, m2 = (int(g) for g in m.groups())
                if h1 < 24 and m1 < 60 and (h2 < 24 and m2 < 60 or (h2, m2) == (24, 0)):
                    start, end = h1 * 60 + m1, h2 * 60 + m2
            if start < 0 or start == end:
                r.error(spec["hours"], f"{field}.hours", f"{value!r} is not a window like 09:00-17:30 (UTC; may wrap midnight)")
                ok = False
            else:
                minutes.append((start, end))
    return TimeWindow(frozenset(days), tuple(minutes)) if ok else None


def _full_day(short: str) -> str:
    return {
        "mon": "monday",
        "tue": "tuesday",
        "wed": "wednesday",
        "thu": "thursday",
        "fri": "friday",
        "sat": "saturday",
        "sun": "sunday",
    }[short]


def _headers_match(r: Reader, node: Node, field: str) -> Check | None:
    if node.kind != "map":  # a plain list: these headers must be present
        names = r.strings(node, field)
        return headers_check(tuple(header_names(r, node, field, names)), (), ()) if names is not None else None
    spec = r.mapping(node, field, ("present", "absent", "values"))
    if spec is None:
        return None
    if not node.value:
        r.error(node, field, "give present, absent or values")
        return None
    present = (
        header_names(r, spec["present"], f"{field}.present", r.strings(spec["present"], f"{field}.present"))
        if "present" in spec
        else []
    )
    absent = (
        header_names(r, spec["absent"], f"{field}.absent", r.strings(spec["absent"], f"{field}.absent"))
        if "absent" in spec
        else []
    )
    values: list[tuple[str, re.Pattern[str]]] = []
    if "values" in spec:
        vnode = spec["values"]
        if vnode.kind != "map" or not vnode.value:
            r.error(vnode, f"{field}.values", "expected a mapping of header name -> glob")
        else:
            for name, glob in vnode.value.items():
                header = header_names(r, vnode.key_lines.get(name, vnode.line), f"{field}.values.{name}", [name])
                compiled = r.patterns(glob, f"{field}.values.{name}", ignore_case=False)
                if header and compiled is not None:
                    values.append((header[0], compiled[0]))
    return headers_check(tuple(present), tuple(absent), tuple(values))


def _kinds_transform(value: str) -> str:
    return value.upper()


def parse_match(r: Reader, node: Node, path: str, phase: Phase) -> Match | None:
    spec = r.mapping(node, path, MATCH_KEYS)
    if spec is None:
        return None
    checks: list[Check] = []
    summary: dict[str, Any] = {}
    uses: set[str] = set()
    before = len(r.issues)
    for key, value in spec.items():
        field = f"{path}.{key}"
        summary[key] = value.plain()
        if key in _RESPONSE_ONLY and phase is not Phase.RESPONSE:
            r.error(spec[key], field, "only for `phase: response` rules")
            continue
        check = _condition(r, key, value, field)
        if check is None:
            continue
        checks.append(check)
        if key in ("pii", "secrets", "flags"):
            uses.add(key)
        elif key in ("injection_score", "injection_layers", "detection_incomplete"):
            uses.add("injection")
    if len(r.issues) > before:
        return None
    return Match(checks=tuple(checks), summary=MappingProxyType(summary), uses=frozenset(uses))


def _condition(r: Reader, key: str, node: Node, field: str) -> Check | None:
    def pats(ignore_case: bool = True, **kw: Any) -> re.Pattern[str] | None:
        got = r.patterns(node, field, ignore_case=ignore_case, **kw)
        return got[0] if got is not None else None

    if key == "keys":
        rx = pats()
        return any_of(lambda q, m, d, s: (q.key_id, q.key_name), rx) if rx else None
    if key == "clients":
        rx = pats()
        return any_of(lambda q, m, d, s: (q.client, q.client_addr), rx) if rx else None
    if key == "models":
        rx = pats()
        return fact(lambda q, m, d, s: m, rx) if rx else None
    if key == "providers":
        rx = pats()
        return fact(lambda q, m, d, s: q.provider, rx) if rx else None
    if key == "paths":
        rx = pats(ignore_case=False)
        return fact(lambda q, m, d, s: q.path.split("?", 1)[0], rx) if rx else None
    if key == "apis":
        values = r.strings(node, field)
        if values is None:
            return None
        bad = [v for v in values if v not in KNOWN_APIS]
        if bad:
            r.error(node, field, f"unknown api {bad[0]!r}: use {', '.join(KNOWN_APIS)}")
            return None
        wanted = frozenset(values)
        return lambda q, m, d, s: q.api in wanted
    if key == "methods":
        rx = pats()
        return fact(lambda q, m, d, s: q.method, rx) if rx else None
    if key == "patterns":
        rx = pats(ignore_case=False)
        return fact(lambda q, m, d, s: q.pattern_id, rx) if rx else None
    if key in ("pii", "secrets"):
        rx = pats(transform=_kinds_transform, any_word=True)
        if rx is None:
            return None
        return found((lambda det: det.pii) if key == "pii" else (lambda det: det.secrets), rx)
    if key == "flags":
        rx = pats(any_word=True)
        return flagged(rx) if rx else None
    if key == "injection_layers":
        rx = pats()
        return (lambda q, m, d, s: d.injection_layer is not None and rx.fullmatch(d.injection_layer) is not None) if rx else None
    if key == "detection_incomplete":
        # true: the injection or PII scan did not reach every part of the request within its budget
        incomplete = r.boolean(node, field)
        if incomplete is None:
            return None
        return lambda q, m, d, s: d.incomplete is not None and d.incomplete is incomplete
    if key == "injection_score":
        rng = _range(r, node, field, lo=0.0, hi=1.0, named_default=True)
        return in_range(lambda q, d, s: d.injection_score, rng) if rng else None
    if key == "request_bytes":
        rng = _range(r, node, field, lo=0.0)
        return in_range(lambda q, d, s: q.request_bytes, rng) if rng else None
    if key == "response_bytes":
        rng = _range(r, node, field, lo=0.0)
        return in_range(lambda q, d, s: s.response_bytes if s is not None else None, rng) if rng else None
    if key == "status":
        rng = _range(r, node, field, lo=100, hi=599)
        return in_range(lambda q, d, s: s.status if s is not None else None, rng) if rng else None
    if key == "time":
        window = _time(r, node, field)
        return during(window) if window else None
    assert key == "headers", key
    return _headers_match(r, node, field)
