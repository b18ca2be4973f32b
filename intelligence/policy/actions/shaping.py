"""Actions that change the request on its way upstream: headers, the output cap, the model or
provider (``route``) and the prompt decorators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from ..decision import PromptEdit, Route
from ..reader import HEADER_NAME, Reader, header_names, kind_of
from ..yamlnodes import Node
from .base import Action, RuleContext

if TYPE_CHECKING:
    from ..snapshot import RequestAcc


@dataclass(frozen=True, slots=True)
class StripHeadersAction(Action):
    """``strip_headers: [..]``: removed before forwarding; removals union."""

    key = "strip_headers"

    headers: tuple[str, ...]  # lower-case

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> StripHeadersAction | None:
        # pseudo-headers (:path, ...) fail the header-name check: they cannot be stripped
        return cls(tuple(header_names(r, node, field, r.strings(node, field))))

    def enforce(self, acc: RequestAcc) -> None:
        for name in self.headers:
            acc.strip_headers[name] = None


@dataclass(frozen=True, slots=True)
class SetHeadersAction(Action):
    """``set_headers: {name: value}``: the first rule to set a header wins."""

    key = "set_headers"

    headers: tuple[tuple[str, str], ...]  # (lower-case name, value)

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> SetHeadersAction | None:
        if node.kind != "map" or not node.value:
            r.error(node, field, f"expected a mapping of header name -> value, got {kind_of(node)}")
            return None
        out = []
        for name, value in node.value.items():
            where = node.key_lines.get(name, node.line)
            path = f"{field}.{name}"
            lower = name.lower()
            if not HEADER_NAME.fullmatch(name):
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
        return cls(tuple(out))

    def enforce(self, acc: RequestAcc) -> None:
        for name, value in self.headers:
            acc.set_headers.setdefault(name, value)


@dataclass(frozen=True, slots=True)
class CapMaxTokensAction(Action):
    """``cap_max_tokens: n``: the smallest cap of all enforcing rules wins."""

    key = "cap_max_tokens"

    cap: int

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> CapMaxTokensAction | None:
        cap = r.integer(node, field, lo=1)
        return cls(cap) if cap is not None else None

    def enforce(self, acc: RequestAcc) -> None:
        if acc.cap is None or self.cap < acc.cap:
            acc.cap = self.cap


@dataclass(frozen=True, slots=True)
class RouteAction(Action):
    """``route: {model, provider}``: the first route wins."""

    key = "route"

    route: Route

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> RouteAction | None:
        spec = r.mapping(node, field, ("model", "provider"))
        if spec is None:
            return None
        if not node.value:
            r.error(node, field, "give model, provider or both")
        model = r.string(spec["model"], f"{field}.model") if "model" in spec else None
        provider = r.string(spec["provider"], f"{field}.provider") if "provider" in spec else None
        return cls(Route(model, provider.lower() if provider else None, rule.qualified))

    def target_model(self) -> str | None:
        return self.route.model

    def enforce(self, acc: RequestAcc) -> None:
        if acc.route is None:
            acc.route = self.route


@dataclass(frozen=True, slots=True)
class PromptAction(Action):
    """A prompt decorator: a text put before or after the system prompt or the last user turn; all
    apply, in rule order."""

    position: ClassVar[Literal["prepend", "append"]]
    role: ClassVar[Literal["system", "user"]]

    edit: PromptEdit

    @classmethod
    def parse(cls, r: Reader, node: Node, field: str, rule: RuleContext) -> PromptAction | None:
        text = r.string(node, field)
        return cls(PromptEdit(cls.position, cls.role, text, rule.qualified)) if text is not None else None

    def enforce(self, acc: RequestAcc) -> None:
        acc.prompts.append(self.edit)


@dataclass(frozen=True, slots=True)
class PrependSystemAction(PromptAction):
    key = "prepend_system"
    position = "prepend"
    role = "system"


@dataclass(frozen=True, slots=True)
class AppendSystemAction(PromptAction):
    key = "append_system"
    position = "append"
    role = "system"


@dataclass(frozen=True, slots=True)
class PrependUserAction(PromptAction):
    key = "prepend_user"
    position = "prepend"
    role = "user"


@dataclass(frozen=True, slots=True)
class AppendUserAction(PromptAction):
    key = "append_user"
    position = "append"
    role = "user"
