"""Strict validation of a policy document and its compilation into :class:`~.rules.Rule` objects.

Every problem is collected (not just the first) as a :class:`PolicyIssue` naming the line and the
field, e.g. ``policy.yaml:14: rules[2].match.modles: unknown key (did you mean 'models'?)``.
Unknown keys, wrong types, bad globs/regexes, bad JSON pointers and actions that make no sense in a
rule's phase are all errors. See docs/policy.md for the format.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from .decision import Mode, Phase
from .errors import PolicyError, PolicyIssue
from .pointer import PointerError, parse_pointer
from .rules import (
    ALWAYS,
    Actions,
    Check,
    Effects,
    Match,
    NumberRange,
    PatternError,
    RedactSpec,
    Rule,
    TimeWindow,
    any_of,
    compile_patterns,
    during,
    fact,
    flagged,
    found,
    headers_check,
    in_range,
)
from .yamlnodes import Node, compose

SCHEMA_VERSION = 1
MAX_POLICY_CHARS = 1_000_000
DEFAULT_PRIORITY = 100
KNOWN_APIS = ("chat", "responses", "messages", "embeddings", "completions", "ollama_chat", "ollama_generate")
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
REDACT_CATEGORIES = ("pii", "secrets")
# the injection threshold the detectors are calibrated for (extproc.security.injection.DEFAULT_THRESHOLD)
DETECTOR_DEFAULT = "default"

_TOP_KEYS = ("version", "name", "description", "defaults", "aliases", "rules")
_DEFAULTS_KEYS = ("mode", "priority")
_RULE_KEYS = ("id", "description", "mode", "priority", "phase", "match", "unless", "actions")
_MATCH_KEYS = ("keys", "clients", "models", "providers", "paths", "apis", "methods", "patterns", "pii", "secrets",
               "injection_score", "injection_layers", "flags", "request_bytes", "time", "headers",
               "status", "response_bytes")
_RESPONSE_ONLY_MATCH = ("status", "response_bytes")
_ACTION_KEYS = ("allow", "block", "redact", "mask", "require_headers", "strip_headers", "set_headers",
                "cap_max_tokens", "allow_models", "route", "tag", "alert", "throttle", "quarantine_key",
                "prepend_system", "append_system", "prepend_user", "append_user", "set_fields", "default_fields",
                "remove_fields", "strip_response_fields", "rewrite_response_fields")
_RESPONSE_ACTIONS = frozenset({"block", "redact", "mask", "tag", "alert", "quarantine_key", "strip_response_fields",
                               "rewrite_response_fields"})
# Fields a policy may not set by pointer: the model goes through `route` (so scope checks see it),
# and the exchange decides how to read the response from `stream`.
_PROTECTED_POINTERS = {"/model": "use `route: {model: ...}` to change the model", "/stream": "the stream flag is the client's"}
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_KIND = re.compile(r"[A-Za-z0-9_*?\[\]!-]+")
_HOURS = re.compile(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})")


def injection_threshold() -> float:
    """The detectors' calibrated operating point (imported lazily: the detectors pull in numpy)."""
    from extproc.security.injection import DEFAULT_THRESHOLD

    return float(DEFAULT_THRESHOLD)


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """One validated policy source (the file, or one database policy)."""

    name: str
    origin: str  # path, "db:<name>", or "<inline>"
    description: str
    aliases: Mapping[str, str]
    rules: tuple[Rule, ...]
    text: str = field(repr=False)
    sha256: str = ""


def parse_policy(text: str, *, origin: str = "<policy>", default_name: str = "policy",
                 name: str | None = None) -> PolicyDocument:
    """Validate and compile one policy document; raises :class:`PolicyError` listing every issue.

    ``name`` forces the policy's name (a database policy is named by its row, whatever its YAML says);
    otherwise the document's ``name:`` or ``default_name``.
    """
    if len(text) > MAX_POLICY_CHARS:
        raise PolicyError([PolicyIssue(0, "", f"policy is {len(text)} characters; the limit is {MAX_POLICY_CHARS}", origin)])
    forced = name
    root = compose(text, origin)
    r = _Reader(origin)
    if root is None:
        raise PolicyError([PolicyIssue(1, "", "empty policy: expected a mapping with `rules`", origin)])
    top = r.mapping(root, "", _TOP_KEYS)
    if top is None:
        raise PolicyError(r.issues)
    if "version" in top:
        version = r.integer(top["version"], "version")
        if version is not None and version != SCHEMA_VERSION:
            r.error(top["version"], "version", f"unsupported version {version}; this gateway reads version {SCHEMA_VERSION}")
    name = default_name
    if "name" in top:
        name = r.identifier(top["name"], "name") or default_name
    name = forced or name
    description = r.string(top["description"], "description", allow_empty=True) if "description" in top else ""
    mode, priority = Mode.ENFORCE, DEFAULT_PRIORITY
    if "defaults" in top:
        defaults = r.mapping(top["defaults"], "defaults", _DEFAULTS_KEYS) or {}
        if "mode" in defaults:
            mode = r.enum(defaults["mode"], "defaults.mode", Mode) or mode
        if "priority" in defaults:
            priority = r.priority(defaults["priority"], "defaults.priority") or priority
    aliases = _aliases(r, top["aliases"]) if "aliases" in top else {}
    rules: list[Rule] = []
    if "rules" not in top:
        r.error(root, "rules", "missing: a policy needs a `rules` list (it may be empty: `rules: []`)")
    elif top["rules"].kind != "seq":
        r.error(top["rules"], "rules", f"expected a list of rules, got {_kind(top['rules'])}")
    else:
        seen: dict[str, int] = {}
        for i, node in enumerate(top["rules"].value):
            rule = _rule(r, node, f"rules[{i}]", name, mode, priority)
            if rule is None:
                continue
            if rule.id in seen:
                r.error(node, f"rules[{i}].id", f"duplicate rule id {rule.id!r} (first on line {seen[rule.id]})")
                continue
            seen[rule.id] = rule.line
            rules.append(rule)
    if r.issues:
        raise PolicyError(r.issues)
    return PolicyDocument(name=name, origin=origin, description=description or "",
                          aliases=MappingProxyType(dict(aliases)), rules=tuple(rules), text=text,
                          sha256=hashlib.sha256(text.encode()).hexdigest())


def validate(text: str, *, origin: str = "<policy>") -> list[PolicyIssue]:
    """Every issue of a policy text (empty list: valid)."""
    try:
        parse_policy(text, origin=origin)
    except PolicyError as exc:
        return list(exc.issues)
    return []


# ---------------------------------------------------------------------------------------- reader
def _kind(node: Node) -> str:
    if node.kind == "map":
        return "a mapping"
    if node.kind == "seq":
        return "a list"
    v = node.value
    return "nothing (null)" if v is None else f"{type(v).__name__} {v!r}"[:80]


class _Reader:
    """Typed accessors that record an issue (and return None) instead of raising."""

    def __init__(self, source: str):
        self.source = source
        self.issues: list[PolicyIssue] = []

    def error(self, where: Node | int, field: str, message: str) -> None:
        line = where if isinstance(where, int) else where.line
        self.issues.append(PolicyIssue(line, field, message, self.source))

    def mapping(self, node: Node, field: str, allowed: Iterable[str]) -> dict[str, Node] | None:
        if node.kind != "map":
            self.error(node, field, f"expected a mapping, got {_kind(node)}")
            return None
        allowed = tuple(allowed)
        out: dict[str, Node] = {}
        for key, value in node.value.items():
            path = f"{field}.{key}" if field else key
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; expected one of: {', '.join(allowed)}"
                self.error(node.key_lines.get(key, node.line), path, f"unknown key{hint}")
                continue
            out[key] = value
        return out

    def string(self, node: Node, field: str, *, allow_empty: bool = False) -> str | None:
        if node.kind != "scalar" or not isinstance(node.value, str):
            self.error(node, field, f"expected a string, got {_kind(node)}")
            return None
        if not allow_empty and not node.value.strip():
            self.error(node, field, "must not be empty")
            return None
        return node.value

    def identifier(self, node: Node, field: str) -> str | None:
        value = self.string(node, field)
        if value is not None and not _ID.fullmatch(value):
            self.error(node, field, f"{value!r} is not a valid id: letters, digits, '_', '.', '-' (at most 128)")
            return None
        return value

    def integer(self, node: Node, field: str, *, lo: int | None = None, hi: int | None = None) -> int | None:
        v = node.value
        if node.kind != "scalar" or not isinstance(v, int) or isinstance(v, bool):
            self.error(node, field, f"expected a whole number, got {_kind(node)}")
            return None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            bounds = f"between {lo} and {hi}" if lo is not None and hi is not None else (f">= {lo}" if lo is not None else f"<= {hi}")
            self.error(node, field, f"{v} is out of range: must be {bounds}")
            return None
        return v

    def priority(self, node: Node, field: str) -> int | None:
        return self.integer(node, field, lo=-1_000_000, hi=1_000_000)

    def number(self, node: Node, field: str) -> float | None:
        v = node.value
        if node.kind != "scalar" or not isinstance(v, (int, float)) or isinstance(v, bool):
            self.error(node, field, f"expected a number, got {_kind(node)}")
            return None
        return float(v)

    def true(self, node: Node, field: str) -> bool:
        if node.kind != "scalar" or node.value is not True:
            self.error(node, field, f"expected `true` (leave the key out to not use it), got {_kind(node)}")
            return False
        return True

    def boolean(self, node: Node, field: str) -> bool | None:
        if node.kind != "scalar" or not isinstance(node.value, bool):
            self.error(node, field, f"expected true or false, got {_kind(node)}")
            return None
        return node.value

    def enum(self, node: Node, field: str, options: Any) -> Any:
        value = self.string(node, field)
        if value is None:
            return None
        values = [o.value for o in options] if isinstance(options, type) else list(options)
        if value not in values:
            self.error(node, field, f"{value!r} is not one of: {', '.join(values)}")
            return None
        return options(value) if isinstance(options, type) else value

    def strings(self, node: Node, field: str, *, allow_one: bool = True) -> list[str] | None:
        """A list of non-empty strings; a single string stands for a list of one."""
        if node.kind == "scalar" and isinstance(node.value, str) and allow_one:
            return [node.value] if self.string(node, field) is not None else None
        if node.kind != "seq":
            self.error(node, field, f"expected a list of strings, got {_kind(node)}")
            return None
        if not node.value:
            self.error(node, field, "must not be an empty list (leave the key out instead)")
            return None
        out: list[str] = []
        ok = True
        for i, item in enumerate(node.value):
            s = self.string(item, f"{field}[{i}]")
            if s is None:
                ok = False
            else:
                out.append(s)
        return out if ok else None

    def patterns(self, node: Node, field: str, *, ignore_case: bool, transform: Callable[[str], str] = lambda s: s,
                 any_word: bool = False) -> tuple[re.Pattern[str], list[str]] | None:
        values = self.strings(node, field)
        if values is None:
            return None
        if any_word:
            values = ["*" if v == "any" else v for v in values]
        values = [transform(v) for v in values]
        items = node.value if node.kind == "seq" else [node]
        ok = True
        for i, (value, item) in enumerate(zip(values, items)):
            try:
                compile_patterns([value], ignore_case=ignore_case)
            except PatternError as exc:
                self.error(item, f"{field}[{i}]" if node.kind == "seq" else field, str(exc))
                ok = False
        if not ok:
            return None
        return compile_patterns(values, ignore_case=ignore_case), values

    def pointer(self, node: Node, field: str, *, protect: bool) -> str | None:
        value = self.string(node, field)
        if value is None:
            return None
        try:
            tokens = parse_pointer(value)
        except PointerError as exc:
            self.error(node, field, str(exc))
            return None
        if not tokens:
            self.error(node, field, "the empty pointer means the whole body; point at a field, e.g. /temperature")
            return None
        if protect and "/" + tokens[0] in _PROTECTED_POINTERS:
            self.error(node, field, f"{value!r} may not be edited by pointer: {_PROTECTED_POINTERS['/' + tokens[0]]}")
            return None
        return value


# ---------------------------------------------------------------------------------------- aliases
def _aliases(r: _Reader, node: Node) -> dict[str, str]:
    out: dict[str, str] = {}
    if node.kind != "map":
        r.error(node, "aliases", f"expected a mapping of alias -> model, got {_kind(node)}")
        return out
    for alias, target in node.value.items():
        path = f"aliases.{alias}"
        line = node.key_lines.get(alias, node.line)
        if not alias.strip() or any(c in alias for c in "*?["):
            r.error(line, path, "an alias is a plain model name (no glob characters)")
            continue
        model = r.string(target, path)
        if model is not None:
            if model == alias:
                r.error(target, path, "an alias may not point at itself")
                continue
            out[alias] = model
    for alias, model in out.items():
        if model in out:
            r.error(node.value[alias], f"aliases.{alias}", f"alias target {model!r} is itself an alias; point at the model")
    return out


# ---------------------------------------------------------------------------------------- rules
def _rule(r: _Reader, node: Node, path: str, policy: str, default_mode: Mode, default_priority: int) -> Rule | None:
    before = len(r.issues)
    spec = r.mapping(node, path, _RULE_KEYS)
    if spec is None:
        return None
    rule_id = r.identifier(spec["id"], f"{path}.id") if "id" in spec else None
    if "id" not in spec:
        r.error(node, f"{path}.id", "missing: every rule needs an id (it is recorded on every decision)")
    mode = r.enum(spec["mode"], f"{path}.mode", Mode) if "mode" in spec else default_mode
    priority = r.priority(spec["priority"], f"{path}.priority") if "priority" in spec else default_priority
    phase = r.enum(spec["phase"], f"{path}.phase", Phase) if "phase" in spec else Phase.REQUEST
    description = (r.string(spec["description"], f"{path}.description", allow_empty=True) or "") if "description" in spec else ""
    phase = phase or Phase.REQUEST
    qualified = f"{policy}/{rule_id or '?'}"
    match = _match(r, spec["match"], f"{path}.match", phase) if "match" in spec else ALWAYS
    unless = _match(r, spec["unless"], f"{path}.unless", phase) if "unless" in spec else None
    if "actions" not in spec:
        r.error(node, f"{path}.actions", "missing: a rule needs actions (e.g. `actions: {block: true}`)")
        actions = None
    else:
        actions = _actions(r, spec["actions"], f"{path}.actions", phase, qualified, description)
    if len(r.issues) > before or rule_id is None or mode is None or priority is None or actions is None:
        return None
    return Rule(id=rule_id, policy=policy, mode=mode, phase=phase, priority=priority, description=description,
                match=match or ALWAYS, unless=unless, actions=actions, line=node.line,
                effects=Effects.of(rule_id, policy, phase, actions))


# ---------------------------------------------------------------------------------------- match
def _range(r: _Reader, node: Node, field: str, *, lo: float | None = None, hi: float | None = None,
           named_default: bool = False) -> NumberRange | None:
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
            r.error(value, f"{field}.{key}", f"{number:g} is out of range [{lo:g}, {hi:g}]")
            continue
        bounds[key] = number
    return NumberRange(**bounds) if len(bounds) == len(spec) else None


def _time(r: _Reader, node: Node, field: str) -> TimeWindow | None:
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
    return {"mon": "monday", "tue": "tuesday", "wed": "wednesday", "thu": "thursday", "fri": "friday",
            "sat": "saturday", "sun": "sunday"}[short]


def _headers_match(r: _Reader, node: Node, field: str) -> Check | None:
    if node.kind != "map":  # a plain list: these headers must be present
        names = r.strings(node, field)
        return headers_check(tuple(_header_names(r, node, field, names)), (), ()) if names is not None else None
    spec = r.mapping(node, field, ("present", "absent", "values"))
    if spec is None:
        return None
    if not node.value:
        r.error(node, field, "give present, absent or values")
        return None
    present = _header_names(r, spec["present"], f"{field}.present", r.strings(spec["present"], f"{field}.present")) if "present" in spec else []
    absent = _header_names(r, spec["absent"], f"{field}.absent", r.strings(spec["absent"], f"{field}.absent")) if "absent" in spec else []
    values: list[tuple[str, re.Pattern[str]]] = []
    if "values" in spec:
        vnode = spec["values"]
        if vnode.kind != "map" or not vnode.value:
            r.error(vnode, f"{field}.values", "expected a mapping of header name -> glob")
        else:
            for name, glob in vnode.value.items():
                header = _header_names(r, vnode.key_lines.get(name, vnode.line), f"{field}.values.{name}", [name])
                compiled = r.patterns(glob, f"{field}.values.{name}", ignore_case=False)
                if header and compiled is not None:
                    values.append((header[0], compiled[0]))
    return headers_check(tuple(present), tuple(absent), tuple(values))


def _header_names(r: _Reader, where: Node | int, field: str, names: list[str] | None) -> list[str]:
    out = []
    for name in names or []:
        if not _HEADER_NAME.fullmatch(name):
            r.error(where, field, f"{name!r} is not a valid header name")
            continue
        out.append(name.lower())
    return out


def _kinds_transform(value: str) -> str:
    return value.upper()


def _match(r: _Reader, node: Node, path: str, phase: Phase) -> Match | None:
    spec = r.mapping(node, path, _MATCH_KEYS)
    if spec is None:
        return None
    checks: list[Check] = []
    summary: dict[str, Any] = {}
    uses: set[str] = set()
    before = len(r.issues)
    for key, value in spec.items():
        field = f"{path}.{key}"
        summary[key] = value.plain()
        if key in _RESPONSE_ONLY_MATCH and phase is not Phase.RESPONSE:
            r.error(spec[key], field, "only for `phase: response` rules")
            continue
        check = _condition(r, key, value, field)
        if check is None:
            continue
        checks.append(check)
        if key in ("pii", "secrets", "flags"):
            uses.add(key)
        elif key in ("injection_score", "injection_layers"):
            uses.add("injection")
    if len(r.issues) > before:
        return None
    return Match(checks=tuple(checks), summary=MappingProxyType(summary), uses=frozenset(uses))


def _condition(r: _Reader, key: str, node: Node, field: str) -> Check | None:
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


# ---------------------------------------------------------------------------------------- actions
def _actions(r: _Reader, node: Node, path: str, phase: Phase, qualified: str, description: str) -> Actions | None:
    spec = r.mapping(node, path, _ACTION_KEYS)
    if spec is None:
        return None
    if not spec and node.kind == "map" and not node.value:
        r.error(node, path, "no actions: give at least one (allow, block, redact, tag, ...)")
        return None
    before = len(r.issues)
    a: dict[str, Any] = {"names": tuple(spec), "written": MappingProxyType({k: v.plain() for k, v in spec.items()})}
    for key, value in spec.items():
        field = f"{path}.{key}"
        if phase is Phase.RESPONSE and key not in _RESPONSE_ACTIONS:
            r.error(spec[key], field, f"not available in a `phase: response` rule (use one of: {', '.join(sorted(_RESPONSE_ACTIONS))})")
            continue
        _action(r, key, value, field, phase, qualified, description, a)
    if "allow" in spec and "block" in spec:
        r.error(spec["block"], f"{path}.block", "a rule cannot both allow and block")
    if len(r.issues) > before:
        return None
    a["redactions"] = tuple(a.get("redactions", ()))
    a["prompts"] = tuple(a.get("prompts", ()))
    a["field_edits"] = tuple(a.get("field_edits", ()))
    a["response_edits"] = tuple(a.get("response_edits", ()))
    return Actions(**a)


def _action(r: _Reader, key: str, node: Node, field: str, phase: Phase, qualified: str, description: str,
            a: dict[str, Any]) -> None:
    if key == "allow":
        a["allow"] = r.true(node, field)
    elif key == "block":
        a["block"] = _block(r, node, field, qualified, description)
    elif key in ("redact", "mask"):
        spec = _redaction(r, node, field, "placeholder" if key == "redact" else "mask", phase)
        if spec is not None:
            a.setdefault("redactions", []).append(spec)
    elif key == "require_headers":
        a["require_headers"] = tuple(_header_names(r, node, field, r.strings(node, field)))
    elif key == "strip_headers":
        names = _header_names(r, node, field, r.strings(node, field))
        if any(n.startswith(":") for n in names):
            r.error(node, field, "pseudo-headers (:path, :authority, ...) cannot be stripped")
        a["strip_headers"] = tuple(names)
    elif key == "set_headers":
        a["set_headers"] = _set_headers(r, node, field)
    elif key == "cap_max_tokens":
        a["cap_max_tokens"] = r.integer(node, field, lo=1)
    elif key == "allow_models":
        got = r.patterns(node, field, ignore_case=True)
        if got is not None:
            a["allow_models"], written = got
            a["allow_models_written"] = tuple(written)
    elif key == "route":
        spec = r.mapping(node, field, ("model", "provider"))
        if spec is not None:
            if not node.value:
                r.error(node, field, "give model, provider or both")
            model = r.string(spec["model"], f"{field}.model") if "model" in spec else None
            provider = r.string(spec["provider"], f"{field}.provider") if "provider" in spec else None
            a["route"] = (model, provider.lower() if provider else None)
    elif key == "tag":
        tags = r.strings(node, field)
        a["tags"] = tuple(dict.fromkeys(tags or ()))
    elif key == "alert":
        a["alert"] = _alert(r, node, field, qualified, description)
    elif key == "throttle":
        a["throttle"] = _throttle(r, node, field)
    elif key == "quarantine_key":
        a["quarantine"] = _quarantine(r, node, field, qualified, description)
    elif key in ("prepend_system", "append_system", "prepend_user", "append_user"):
        text = r.string(node, field)
        if text is not None:
            position, role = key.split("_")
            a.setdefault("prompts", []).append((position, role, text))
    elif key in ("set_fields", "default_fields", "rewrite_response_fields"):
        if node.kind != "map" or not node.value:
            r.error(node, field, f"expected a mapping of JSON pointer -> value, got {_kind(node)}")
            return
        op = "default" if key == "default_fields" else "set"
        target = "response_edits" if key == "rewrite_response_fields" else "field_edits"
        for ptr, value in node.value.items():
            where = node.key_lines.get(ptr, node.line)
            pointer = r.pointer(Node("scalar", ptr, where), f"{field}[{ptr!r}]", protect=target == "field_edits")
            if pointer is not None:
                a.setdefault(target, []).append((op, pointer, value.plain()))
    else:
        assert key in ("remove_fields", "strip_response_fields"), key
        target = "response_edits" if key == "strip_response_fields" else "field_edits"
        if node.kind != "seq" and not (node.kind == "scalar" and isinstance(node.value, str)):
            r.error(node, field, f"expected a list of JSON pointers, got {_kind(node)}")
            return
        items = node.value if node.kind == "seq" else [node]
        for i, item in enumerate(items):
            pointer = r.pointer(item, f"{field}[{i}]", protect=target == "field_edits")
            if pointer is not None:
                a.setdefault(target, []).append(("remove", pointer, None))


def _block(r: _Reader, node: Node, field: str, qualified: str, description: str) -> tuple[int, str, str] | None:
    default_message = f"llmproxy: request refused by policy rule {qualified}" + (f": {description}" if description else "")
    if node.kind == "scalar" and node.value is True:
        return 403, default_message, "policy_blocked"
    spec = r.mapping(node, field, ("status", "message", "code"))
    if spec is None:
        return None
    status = r.integer(spec["status"], f"{field}.status", lo=400, hi=599) if "status" in spec else 403
    message = r.string(spec["message"], f"{field}.message") if "message" in spec else default_message
    code = r.identifier(spec["code"], f"{field}.code") if "code" in spec else "policy_blocked"
    if status is None or message is None or code is None:
        return None
    return status, message, code


def _redaction(r: _Reader, node: Node, field: str, mode: str, phase: Phase) -> RedactSpec | None:
    if node.kind == "map":
        allowed = ("kinds", "in", "restore") if mode == "placeholder" else ("kinds", "in")
        spec = r.mapping(node, field, allowed)
        if spec is None:
            return None
        if "kinds" not in spec:
            r.error(node, f"{field}.kinds", "missing: which detector kinds (pii, secrets, EMAIL_ADDRESS, AWS_*, ...)")
            return None
        kinds_node = spec["kinds"]
    else:
        spec, kinds_node = {}, node
    kinds = r.strings(kinds_node, f"{field}.kinds" if spec else field)
    if kinds is None:
        return None
    categories = frozenset(k.lower() for k in kinds if k.lower() in REDACT_CATEGORIES)
    globs = [k.upper() for k in kinds if k.lower() not in REDACT_CATEGORIES]
    for k in globs:
        if not _KIND.fullmatch(k):
            r.error(kinds_node, f"{field}.kinds", f"{k!r} is not a detector kind: use pii, secrets or kinds like EMAIL_ADDRESS, AWS_*")
            return None
    regex = None
    if globs:
        got = r.patterns(Node("seq", [Node("scalar", g, kinds_node.line) for g in globs], kinds_node.line),
                         f"{field}.kinds", ignore_case=False)
        if got is None:
            return None
        regex = got[0]
    default_dirs = ["response"] if phase is Phase.RESPONSE else ["request"]
    directions = default_dirs
    if "in" in spec:
        directions = r.strings(spec["in"], f"{field}.in") or default_dirs
        bad = [d for d in directions if d not in ("request", "response")]
        if bad:
            r.error(spec["in"], f"{field}.in", f"{bad[0]!r}: use request, response or both")
            return None
        if phase is Phase.RESPONSE and "request" in directions:
            r.error(spec["in"], f"{field}.in", "a `phase: response` rule only sees the response")
            return None
    restore = False
    if "restore" in spec:
        restore = bool(r.boolean(spec["restore"], f"{field}.restore"))
        if restore and "request" not in directions:
            r.error(spec["restore"], f"{field}.restore", "restore puts back values redacted from the request: add `in: [request]`")
            return None
    return RedactSpec(categories=categories, kinds=regex, mode=mode, directions=frozenset(directions),  # type: ignore[arg-type]
                      restore=restore, written=tuple(kinds))


def _set_headers(r: _Reader, node: Node, field: str) -> tuple[tuple[str, str], ...]:
    if node.kind != "map" or not node.value:
        r.error(node, field, f"expected a mapping of header name -> value, got {_kind(node)}")
        return ()
    out = []
    for name, value in node.value.items():
        where = node.key_lines.get(name, node.line)
        path = f"{field}.{name}"
        lower = name.lower()
        if not _HEADER_NAME.fullmatch(name):
            r.error(where, path, f"{name!r} is not a valid header name")
            continue
        if lower.startswith("x-llmproxy-"):
            r.error(where, path, "x-llmproxy-* headers are the gateway's own (use `route` to pick a provider)")
            continue
        if lower in ("content-length", "host", "transfer-encoding"):
            r.error(where, path, f"{lower} is managed by the gateway")
            continue
        is_number = value.kind == "scalar" and isinstance(value.value, (int, float)) and not isinstance(value.value, bool)
        text = str(value.value) if is_number else r.string(value, path, allow_empty=True)
        if text is None:
            continue
        if "\r" in text or "\n" in text:
            r.error(value, path, "header values may not contain line breaks")
            continue
        out.append((lower, text))
    return tuple(out)


def _alert(r: _Reader, node: Node, field: str, qualified: str, description: str) -> tuple[str, str] | None:
    default = f"policy rule {qualified} fired" + (f": {description}" if description else "")
    if node.kind == "scalar" and node.value is True:
        return "warning", default
    if node.kind == "scalar" and isinstance(node.value, str):
        text = r.string(node, field)
        return ("warning", text) if text is not None else None
    spec = r.mapping(node, field, ("severity", "message"))
    if spec is None:
        return None
    severity = r.enum(spec["severity"], f"{field}.severity", ("info", "warning", "critical")) if "severity" in spec else "warning"
    message = r.string(spec["message"], f"{field}.message") if "message" in spec else default
    return (severity, message) if severity is not None and message is not None else None


def _throttle(r: _Reader, node: Node, field: str) -> tuple[int, int, str] | None:
    spec = r.mapping(node, field, ("rpm", "burst", "per"))
    if spec is None:
        return None
    if "rpm" not in spec:
        r.error(node, f"{field}.rpm", "missing: requests per minute")
        return None
    rpm = r.integer(spec["rpm"], f"{field}.rpm", lo=1, hi=1_000_000)
    burst = r.integer(spec["burst"], f"{field}.burst", lo=1, hi=1_000_000) if "burst" in spec else rpm
    per = r.enum(spec["per"], f"{field}.per", ("key", "client")) if "per" in spec else "key"
    if rpm is None or burst is None or per is None:
        return None
    return rpm, burst, per


def _quarantine(r: _Reader, node: Node, field: str, qualified: str, description: str) -> str | None:
    default = f"policy rule {qualified}" + (f": {description}" if description else "")
    if node.kind == "scalar" and node.value is True:
        return default
    spec = r.mapping(node, field, ("reason",))
    if spec is None:
        return None
    return r.string(spec["reason"], f"{field}.reason") if "reason" in spec else default

