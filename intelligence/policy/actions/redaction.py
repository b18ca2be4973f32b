"""``redact`` and ``mask``: which detector findings are replaced, where (request, response), and
whether the request's placeholders are put back in the response (``restore``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..decision import Phase, RedactMode, RedactSelector
from ..reader import Reader
from ..yamlnodes import Node
from .base import BOTH_PHASES, Action, RuleContext

if TYPE_CHECKING:
    from ..snapshot import RequestAcc, ResponseAcc

REDACT_CATEGORIES = ("pii", "secrets")
_KIND = re.compile(r"[A-Za-z0-9_*?\[\]!-]+")


@dataclass(frozen=True, slots=True)
class RedactionAction(Action):
    """The shape both share: ``[kinds]`` or ``{kinds, in, ...}``; one selector, in each direction it covers."""

    phases = BOTH_PHASES
    mode: ClassVar[RedactMode]
    options: ClassVar[tuple[str, ...]]

    request_selectors: tuple[RedactSelector, ...]
    response_selectors: tuple[RedactSelector, ...]
    needs: frozenset[str]  # detector categories to run
    written: tuple[str, ...]  # the kinds as written

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> RedactionAction | None:
        spec: dict[str, Node]
        if node.kind == "map":
            got = r.mapping(node, field, cls.options)
            if got is None:
                return None
            if "kinds" not in got:
                r.error(node, f"{field}.kinds", "missing: which detector kinds (pii, secrets, EMAIL_ADDRESS, AWS_*, ...)")
                return None
            spec, kinds_node = got, got["kinds"]
        else:
            spec, kinds_node = {}, node
        kinds = r.strings(kinds_node, f"{field}.kinds" if spec else field)
        if kinds is None:
            return None
        categories = frozenset(k.lower() for k in kinds if k.lower() in REDACT_CATEGORIES)
        globs = [k.upper() for k in kinds if k.lower() not in REDACT_CATEGORIES]
        for k in globs:
            if not _KIND.fullmatch(k):
                r.error(
                    kinds_node,
                    f"{field}.kinds",
                    f"{k!r} is not a detector kind: use pii, secrets or kinds like EMAIL_ADDRESS, AWS_*",
                )
                return None
        regex = None
        if globs:
            seq = Node("seq", [Node("scalar", g, kinds_node.line) for g in globs], kinds_node.line)
            patterns = r.patterns(seq, f"{field}.kinds", ignore_case=False)
            if patterns is None:
                return None
            regex = patterns[0]
        response_phase = rule.phase is Phase.RESPONSE
        directions = ["response"] if response_phase else ["request"]
        if "in" in spec:
            directions = r.strings(spec["in"], f"{field}.in") or directions
            bad = [d for d in directions if d not in ("request", "response")]
            if bad:
                r.error(spec["in"], f"{field}.in", f"{bad[0]!r}: use request, response or both")
                return None
            if response_phase and "request" in directions:
                r.error(spec["in"], f"{field}.in", "a `phase: response` rule only sees the response")
                return None
        restore = False
        # `reversible` is a synonym of `restore` (the word for it); giving both is an error
        if "restore" in spec and "reversible" in spec:
            r.error(spec["reversible"], f"{field}.reversible", "give `restore` or `reversible`, not both (they are synonyms)")
            return None
        option = "restore" if "restore" in spec else "reversible" if "reversible" in spec else None
        if option is not None:
            flag = r.boolean(spec[option], f"{field}.{option}")
            if flag is None:
                return None
            restore = bool(flag)
            if restore and "request" not in directions:
                r.error(
                    spec[option], f"{field}.{option}", f"{option} puts back values redacted from the request: add `in: [request]`"
                )
                return None
        # in a response-phase rule nothing is restored: the values were never the client's
        selector = RedactSelector(categories, regex, cls.mode, restore and not response_phase, rule.qualified)
        return cls(
            request_selectors=(selector,) if "request" in directions else (),
            response_selectors=(selector,) if "response" in directions else (),
            needs=categories if regex is None else frozenset(REDACT_CATEGORIES),
            written=tuple(kinds),
        )

    def detectors(self) -> frozenset[str]:
        return self.needs

    def enforce(self, acc: RequestAcc) -> None:
        if self.request_selectors:
            acc.redact.extend(self.request_selectors)
        if self.response_selectors:
            acc.response_redact.extend(self.response_selectors)

    def respond(self, acc: ResponseAcc) -> None:
        acc.selectors.extend(self.response_selectors)


@dataclass(frozen=True, slots=True)
class RedactAction(RedactionAction):
    """``redact``: numbered placeholders (``<EMAIL_1>``), restorable in the response."""

    key = "redact"
    mode = "placeholder"
    options = ("kinds", "in", "restore", "reversible")


@dataclass(frozen=True, slots=True)
class MaskAction(RedactionAction):
    """``mask``: a generic label (``<EMAIL>``), irreversibly; it beats ``redact`` for the same kind."""

    key = "mask"
    mode = "mask"
    options = ("kinds", "in")
