"""Strict validation of a policy document and its compilation into :class:`~.rules.Rule` objects.

Every problem is collected (not just the first) as a :class:`PolicyIssue` naming the line and the
field, e.g. ``policy.yaml:14: rules[2].match.modles: unknown key (did you mean 'models'?)``.
Unknown keys, wrong types, bad globs/regexes, bad JSON pointers and actions that make no sense in a
rule's phase are all errors. See docs/policy.md for the format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .actions import REGISTRY, ActionRegistry, RuleContext, parse_actions
from .conditions import parse_match
from .decision import Mode, Phase
from .errors import PolicyError, PolicyIssue
from .reader import Reader, kind_of
from .rules import ALWAYS, Effects, Rule
from .yamlnodes import Node, compose

SCHEMA_VERSION = 1
MAX_POLICY_CHARS = 1_000_000
DEFAULT_PRIORITY = 100

_TOP_KEYS = ("version", "name", "description", "defaults", "aliases", "rules")
_DEFAULTS_KEYS = ("mode", "priority")
_RULE_KEYS = ("id", "description", "mode", "priority", "phase", "match", "unless", "actions")


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


def parse_policy(
    text: str,
    *,
    origin: str = "<policy>",
    default_name: str = "policy",
    name: str | None = None,
    actions: ActionRegistry = REGISTRY,
) -> PolicyDocument:
    """Validate and compile one policy document; raises :class:`PolicyError` listing every issue.

    ``name`` forces the policy's name (a database policy is named by its row, whatever its YAML says);
    otherwise the document's ``name:`` or ``default_name``. ``actions``: the action classes the
    document may use (:data:`.actions.REGISTRY`, or an extended registry).
    """
    if len(text) > MAX_POLICY_CHARS:
        raise PolicyError([PolicyIssue(0, "", f"policy is {len(text)} characters; the limit is {MAX_POLICY_CHARS}", origin)])
    forced = name
    root = compose(text, origin)
    r = Reader(origin)
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
        r.error(top["rules"], "rules", f"expected a list of rules, got {kind_of(top['rules'])}")
    else:
        seen: dict[str, int] = {}
        for i, node in enumerate(top["rules"].value):
            rule = _rule(r, node, f"rules[{i}]", name, mode, priority, actions)
            if rule is None:
                continue
            if rule.id in seen:
                r.error(node, f"rules[{i}].id", f"duplicate rule id {rule.id!r} (first on line {seen[rule.id]})")
                continue
            seen[rule.id] = rule.line
            rules.append(rule)
    if r.issues:
        raise PolicyError(r.issues)
    return PolicyDocument(
        name=name,
        origin=origin,
        description=description or "",
        aliases=MappingProxyType(dict(aliases)),
        rules=tuple(rules),
        text=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


def validate(text: str, *, origin: str = "<policy>", actions: ActionRegistry = REGISTRY) -> list[PolicyIssue]:
    """Every issue of a policy text (empty list: valid)."""
    try:
        parse_policy(text, origin=origin, actions=actions)
    except PolicyError as exc:
        return list(exc.issues)
    return []


# ---------------------------------------------------------------------------------------- aliases
def _aliases(r: Reader, node: Node) -> dict[str, str]:
    out: dict[str, str] = {}
    if node.kind != "map":
        r.error(node, "aliases", f"expected a mapping of alias -> model, got {kind_of(node)}")
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
def _rule(
    r: Reader, node: Node, path: str, policy: str, default_mode: Mode, default_priority: int, registry: ActionRegistry
) -> Rule | None:
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
    match = parse_match(r, spec["match"], f"{path}.match", phase) if "match" in spec else ALWAYS
    unless = parse_match(r, spec["unless"], f"{path}.unless", phase) if "unless" in spec else None
    if "actions" not in spec:
        r.error(node, f"{path}.actions", "missing: a rule needs actions (e.g. `actions: {block: true}`)")
        actions = None
    else:
        context = RuleContext(policy, rule_id or "?", phase, description)
        actions = parse_actions(r, spec["actions"], f"{path}.actions", context, registry)
    if len(r.issues) > before or rule_id is None or mode is None or priority is None or actions is None:
        return None
    return Rule(
        id=rule_id,
        policy=policy,
        mode=mode,
        phase=phase,
        priority=priority,
        description=description,
        match=match or ALWAYS,
        unless=unless,
        actions=actions,
        line=node.line,
        effects=Effects.of(rule_id, policy, phase, actions),
    )
