"""The action protocol: one :class:`Action` class per action key, held by an :class:`ActionRegistry`.

A class declares its ``key``, the ``phases`` it is available in, the keys it cannot be combined
with (``conflicts_with``), parses its YAML node (:meth:`Action.parse`, reporting issues through the
:class:`~..reader.Reader`) into an immutable instance holding its decision parts, built once, and
implements the hooks it needs. A hook left as the base's no-op is never called: the rule's
:class:`~..rules.Effects` only collects the implemented ones, once, at compile time.

======================  ======================================================================
hook                    called when
======================  ======================================================================
``fixed_refusal()``     compile time: the :class:`Block` a rule imposes on every request it matches (``block``)
``refusal(facts, m)``   the rule matched a request: the refusal this request gets, or None (gates)
``record(acc)``         the rule enforces, in either phase; kept when the request is refused (by this rule
                        or a later one): tags, alerts, quarantine
``enforce(acc)``        the rule enforces and the request goes on (request phase)
``monitor(acc)``        the rule matched in monitor mode (request phase): throttles and verdicts still count
``respond(acc)``        the rule enforces in the response phase
``link(siblings)``      compile time: adjust to the rule's other actions (``allow_models`` reads ``route``)
======================  ======================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from ..decision import Block, Phase
from ..facts import RequestFacts
from ..reader import Reader
from ..rules import Actions
from ..yamlnodes import Node

if TYPE_CHECKING:
    from ..snapshot import Records, RequestAcc, ResponseAcc

REQUEST_ONLY: frozenset[Phase] = frozenset({Phase.REQUEST})
BOTH_PHASES: frozenset[Phase] = frozenset(Phase)
HOOKS = ("fixed_refusal", "refusal", "record", "enforce", "monitor", "respond")


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What an action may know about its rule while it is parsed."""

    policy: str
    rule_id: str  # "?" when the rule has no valid id (the rule is then rejected anyway)
    phase: Phase
    description: str = ""

    @property
    def qualified(self) -> str:
        """``policy/rule``: what every decision part names as its rule."""
        return f"{self.policy}/{self.rule_id}"


class Action:
    """One action of a rule. Subclasses are frozen dataclasses holding decision parts built at
    parse time (a :class:`Block`, an :class:`Alert`, redaction selectors...), so evaluation only
    appends references to them."""

    __slots__ = ()

    key: ClassVar[str]  # the action's name in `actions:`
    phases: ClassVar[frozenset[Phase]] = REQUEST_ONLY  # where it may be written
    conflicts_with: ClassVar[Mapping[str, str]] = MappingProxyType({})  # other key -> the error (reported on this key)
    ends_evaluation: ClassVar[bool] = False  # `allow`: no later rule runs once this rule enforces
    asks_claude: ClassVar[bool] = False  # the sidecar needs its Claude client for a rule with this action
    implemented: ClassVar[frozenset[str]] = frozenset()  # the hooks the class overrides (set per subclass)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.implemented = frozenset(h for h in HOOKS if getattr(cls, h) is not getattr(Action, h))

    # ------------------------------------------------------------------------ compile time
    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> Action | None:
        """The action as written at ``field``; report problems with ``r.error(node, field, ...)`` (or the
        Reader's typed accessors). An instance returned alongside issues is discarded with the rule."""
        raise NotImplementedError

    def link(self, siblings: Actions) -> Action:
        """This action adjusted to the other actions of its rule (compile time); by default itself."""
        return self

    def detectors(self) -> frozenset[str]:
        """Detector categories (pii | secrets | injection | flags) the exchange must run for this action."""
        return frozenset()

    def target_model(self) -> str | None:
        """The model this action sends the request to (``route``), for the rule's own model checks."""
        return None

    # ------------------------------------------------------------------------ hooks (see the module doc)
    def fixed_refusal(self) -> Block | None:
        return None

    def refusal(self, facts: RequestFacts, model: str | None) -> Block | None:
        return None

    def record(self, acc: Records) -> None:
        return None

    def enforce(self, acc: RequestAcc) -> None:
        return None

    def monitor(self, acc: RequestAcc) -> None:
        return None

    def respond(self, acc: ResponseAcc) -> None:
        return None

    @property
    def is_gate(self) -> bool:
        """A gate refuses requests: a fixed refusal (``block``) or one that depends on the request."""
        return "fixed_refusal" in self.implemented or "refusal" in self.implemented


class ActionRegistry:
    """The action classes a parser knows, by key, in a fixed order (the order of docs/policy.md's
    table, of the "expected one of" hints, and the order in which a rule's gates are checked).
    Immutable: :meth:`extended` returns a new registry, so a parse with extra actions never touches
    the default one."""

    __slots__ = ("_classes", "keys")

    def __init__(self, classes: Iterable[type[Action]]):
        by_key: dict[str, type[Action]] = {}
        for cls in classes:
            key = getattr(cls, "key", None)
            if not isinstance(key, str) or not key.isidentifier() or not key.islower():
                raise ValueError(f"{cls.__name__}: `key` must be a lower-case identifier, got {key!r}")
            if key in by_key:
                raise ValueError(f"action {key!r} registered twice: {by_key[key].__name__} and {cls.__name__}")
            if not cls.phases or not cls.phases <= BOTH_PHASES:
                raise ValueError(f"{cls.__name__}: `phases` must be a non-empty set of Phase")
            if cls.parse.__func__ is Action.parse.__func__:  # type: ignore[attr-defined]
                raise ValueError(f"{cls.__name__}: no `parse`")
            by_key[key] = cls
        for cls in by_key.values():
            unknown = [k for k in cls.conflicts_with if k not in by_key]
            if unknown:
                raise ValueError(f"{cls.__name__}: conflicts_with names unregistered actions {unknown}")
        self._classes: Mapping[str, type[Action]] = MappingProxyType(by_key)
        self.keys: tuple[str, ...] = tuple(by_key)

    def extended(self, *classes: type[Action]) -> ActionRegistry:
        """A new registry: these classes after the ones registered here."""
        return ActionRegistry((*self._classes.values(), *classes))

    def available(self, phase: Phase) -> tuple[str, ...]:
        return tuple(k for k, cls in self._classes.items() if phase in cls.phases)

    def __getitem__(self, key: str) -> type[Action]:
        return self._classes[key]

    def __contains__(self, key: object) -> bool:
        return key in self._classes

    def __iter__(self) -> Iterator[type[Action]]:
        return iter(self._classes.values())

    def __len__(self) -> int:
        return len(self._classes)

    def __repr__(self) -> str:
        return f"ActionRegistry({', '.join(self.keys)})"


def parse_actions(r: Reader, node: Node, path: str, rule: RuleContext, registry: ActionRegistry) -> Actions | None:
    """The ``actions`` mapping of a rule, every action parsed by its registered class; None (with the
    issues in ``r``) when anything is wrong."""
    spec = r.mapping(node, path, registry.keys)
    if spec is None:
        return None
    if not spec and node.kind == "map" and not node.value:
        r.error(node, path, "no actions: give at least one (allow, block, redact, tag, ...)")
        return None
    before = len(r.issues)
    parsed: list[Action] = []
    for key, value in spec.items():
        cls, field = registry[key], f"{path}.{key}"
        if rule.phase not in cls.phases:
            r.error(
                value,
                field,
                f"not available in a `phase: {rule.phase.value}` rule (use one of: {', '.join(sorted(registry.available(rule.phase)))})",
            )
            continue
        n = len(r.issues)
        action = cls.parse(r, value, field, rule)
        if action is None and len(r.issues) == n:  # a parser must say why it built nothing
            r.error(value, field, "could not be compiled")
        if action is not None:
            parsed.append(action)
    for key in registry.keys:  # cross-action checks, declared by the classes involved, in registry order
        if key in spec:
            for other, message in registry[key].conflicts_with.items():
                if other in spec:
                    r.error(spec[key], f"{path}.{key}", message)
    if len(r.issues) > before:
        return None
    draft = Actions(items=tuple(parsed), written=MappingProxyType({k: v.plain() for k, v in spec.items()}))
    items = tuple(a.link(draft) for a in parsed)
    order = {k: i for i, k in enumerate(registry.keys)}
    gates = tuple(sorted((a for a in items if a.is_gate), key=lambda a: order[a.key]))
    return Actions(items=items, written=draft.written, gates=gates)
