"""The action registry: every action of the language is one registered class, documented in
docs/policy.md; and a new action is one class, usable through an extended registry without
touching any other file (or the default registry)."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from intelligence.policy import Mode, PolicySnapshot, parse_policy, validate
from intelligence.policy.actions import ACTION_KEYS, REGISTRY, RESPONSE_ACTIONS, Action, ActionRegistry, RuleContext, TagAction
from intelligence.policy.decision import Block, Phase
from intelligence.policy.facts import RequestFacts
from intelligence.policy.reader import Reader
from intelligence.policy.snapshot import Records, RequestAcc
from intelligence.policy.testing import request_facts
from intelligence.policy.yamlnodes import Node

POLICY_DOC = Path(__file__).resolve().parents[3] / "docs" / "policy.md"


def documented_actions() -> dict[str, str]:
    """docs/policy.md's action table: key -> its "response phase" cell."""
    text = POLICY_DOC.read_text()
    table = text.split("### Actions", 1)[1].split("\n\n", 2)[1]
    out: dict[str, str] = {}
    for line in table.splitlines()[2:]:  # after the header and the |---| row
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for key in re.findall(r"`([a-z_]+)", cells[0]):
            assert key not in out, f"{key} is in the action table twice"
            out[key] = cells[-1]
    return out


# ------------------------------------------------------------------------------------------ the registry
def test_every_documented_action_is_registered_exactly_once() -> None:
    documented = documented_actions()
    assert sorted(documented) == sorted(ACTION_KEYS)
    assert list(documented) == list(ACTION_KEYS)  # the registry's order is the table's
    classes = list(REGISTRY)
    assert len(classes) == len(set(classes)) == len(ACTION_KEYS) == len(set(ACTION_KEYS))
    assert [cls.key for cls in classes] == list(ACTION_KEYS)
    assert {k for k, cell in documented.items() if cell.startswith("yes")} == RESPONSE_ACTIONS
    for cls in classes:
        assert cls.__doc__, f"{cls.__name__} says what it does"
        assert cls.implemented or cls.ends_evaluation, f"{cls.__name__} does something"


def test_a_registry_refuses_a_key_twice_and_conflicts_with_unknown_keys() -> None:
    @dataclass(frozen=True, slots=True)
    class Retag(TagAction):
        pass

    with pytest.raises(ValueError, match="registered twice"):
        REGISTRY.extended(Retag)

    @dataclass(frozen=True, slots=True)
    class Odd(Action):
        key = "odd"

    with pytest.raises(ValueError, match="no `parse`"):
        REGISTRY.extended(Odd)

    @dataclass(frozen=True, slots=True)
    class Odder(TagAction):
        key = "odder"
        conflicts_with = {"nonsense": "never"}

    with pytest.raises(ValueError, match="unregistered"):
        REGISTRY.extended(Odder)


# ------------------------------------------------------------------------------------------ a new action
@dataclass(frozen=True, slots=True)
class StampAction(Action):
    """``stamp: text``: forward the request with ``x-stamp: text`` (the first stamp wins); tagged
    ``stamped`` even when the rule blocks."""

    key = "stamp"
    conflicts_with = {"allow": "an allowing rule does not stamp"}

    text: str

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> StampAction | None:
        text = r.string(node, field)
        if text is not None and "\n" in text:
            r.error(node, field, "one line, please")
            return None
        return cls(text) if text is not None else None

    def record(self, acc: Records) -> None:
        acc.tags.append("stamped")

    def enforce(self, acc: RequestAcc) -> None:
        acc.set_headers.setdefault("x-stamp", self.text)


@dataclass(frozen=True, slots=True)
class MaxRequestBytesAction(Action):
    """``max_request_bytes: n``: a gate, 413 for a larger request body."""

    key = "max_request_bytes"

    limit: int
    rule: str

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> MaxRequestBytesAction | None:
        limit = r.integer(node, field, lo=1)
        return cls(limit, rule.qualified) if limit is not None else None

    def refusal(self, facts: RequestFacts, model: str | None) -> Block | None:
        if facts.request_bytes <= self.limit:
            return None
        return Block(413, f"llmproxy: over {self.limit} bytes (policy rule {self.rule})", "request_too_large", self.rule)


EXTENDED = REGISTRY.extended(StampAction, MaxRequestBytesAction)


def snap(text: str, registry: ActionRegistry = EXTENDED) -> PolicySnapshot:
    return PolicySnapshot.build([parse_policy(textwrap.dedent(text), name="t", actions=registry)])


def test_a_new_action_is_parsed_and_applied_through_an_extended_registry() -> None:
    s = snap("""
        rules:
          - id: stamp-team-a
            match: {keys: [team-a]}
            actions: {stamp: from-team-a, tag: a}
          - id: stamp-all
            actions: {stamp: everyone}
          - id: size
            actions: {max_request_bytes: 1000}
        """)
    d = s.evaluate_request(request_facts())
    assert dict(d.set_headers) == {"x-stamp": "from-team-a"} and d.tags == ("stamped", "a")
    assert d.fired[0].actions == ("stamp", "tag") and not d.blocked
    other = s.evaluate_request(request_facts(key_name="team-b", key_id="gk_b"))
    assert dict(other.set_headers) == {"x-stamp": "everyone"}
    big = s.evaluate_request(request_facts(request_bytes=5000))
    assert big.block is not None and (big.block.status, big.block.code, big.block.rule) == (413, "request_too_large", "t/size")
    assert big.tags == ("stamped", "a") and big.set_headers == ()  # recorded, not forwarded
    assert big.fired[-1].note is not None and "over 1000 bytes" in big.fired[-1].note
    assert s.rule("t/stamp-all").summary()["actions"] == {"stamp": "everyone"}


def test_a_new_action_follows_the_modes_and_the_rules_of_evaluation() -> None:
    s = snap("""
        rules:
          - id: size
            priority: 1
            actions: {max_request_bytes: 100, stamp: refused}
          - id: watch
            mode: monitor
            actions: {max_request_bytes: 10, stamp: never}
        """)
    refused = s.evaluate_request(request_facts(request_bytes=500))
    assert refused.block is not None and refused.block.rule == "t/size" and refused.tags == ("stamped",)
    assert refused.set_headers == ()
    watched = s.evaluate_request(request_facts(request_bytes=50))
    assert not watched.blocked and watched.set_headers == (("x-stamp", "refused"),)
    assert [(f.rule, f.mode) for f in watched.fired] == [("size", Mode.ENFORCE), ("watch", Mode.MONITOR)]
    assert "over 10 bytes" in (watched.fired[1].note or "")  # what the monitor rule would have refused


def test_a_new_action_is_validated_like_the_others() -> None:
    def issues(body: str, registry: ActionRegistry = EXTENDED) -> list[tuple[int, str, str]]:
        text = f"rules:\n  - id: a\n{textwrap.indent(textwrap.dedent(body), '    ')}"
        return [(i.line, i.field, i.message) for i in validate(text, origin="p.yaml", actions=registry)]

    assert issues("actions: {stamp: 5}") == [(3, "rules[0].actions.stamp", "expected a string, got int 5")]
    assert issues('actions: {stamp: "a\\nb"}') == [(3, "rules[0].actions.stamp", "one line, please")]
    assert issues("actions: {stamp: x, allow: true}") == [(3, "rules[0].actions.stamp", "an allowing rule does not stamp")]
    ((line, field, message),) = issues("phase: response\nactions: {stamp: x}")
    assert (line, field) == (4, "rules[0].actions.stamp") and "not available in a `phase: response` rule" in message
    assert "stamp" not in message  # the list of what is available there
    # the default registry does not know it, and was not changed by the extension
    ((_, field, message),) = issues("actions: {stamp: x}", REGISTRY)
    assert field == "rules[0].actions.stamp" and message.startswith("unknown key")
    assert "stamp" not in REGISTRY and REGISTRY.keys == ACTION_KEYS and "stamp" in EXTENDED.keys


def test_hooks_are_collected_once_per_rule() -> None:
    s = snap("rules:\n  - {id: a, actions: {stamp: x, tag: t, max_request_bytes: 5}}\n")
    (rule,) = s.request_rules
    fx = rule.effects
    assert len(fx.on_enforce) == 3  # record (stamp, tag) + enforce (stamp)
    assert len(fx.on_block) == 2 and len(fx.gates) == 1 and fx.on_monitor == () and fx.block is None
    assert isinstance(rule.actions["stamp"], StampAction) and rule.actions.names == ("stamp", "tag", "max_request_bytes")
    assert Phase.REQUEST in StampAction.phases and sorted(StampAction.implemented) == ["enforce", "record"]
