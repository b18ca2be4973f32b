"""The ``actions`` part of a rule: validated and compiled into :class:`~.rules.Actions`."""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

from .decision import Phase
from .reader import HEADER_NAME, Reader, header_names, kind_of
from .rules import Actions, RedactSpec
from .yamlnodes import Node

REDACT_CATEGORIES = ("pii", "secrets")
ACTION_KEYS = (
    "allow",
    "block",
    "redact",
    "mask",
    "require_headers",
    "strip_headers",
    "set_headers",
    "cap_max_tokens",
    "allow_models",
    "route",
    "tag",
    "alert",
    "throttle",
    "quarantine_key",
    "prepend_system",
    "append_system",
    "prepend_user",
    "append_user",
    "set_fields",
    "default_fields",
    "remove_fields",
    "strip_response_fields",
    "rewrite_response_fields",
    "claude_verdict",
)
RESPONSE_ACTIONS = frozenset(
    {"block", "redact", "mask", "tag", "alert", "quarantine_key", "strip_response_fields", "rewrite_response_fields"}
)
_KIND = re.compile(r"[A-Za-z0-9_*?\[\]!-]+")
# claude_verdict.timeout_ms bounds: the upper one leaves room under Envoy's ext_proc message_timeout
# (10 s in envoy.yaml), past which Envoy itself would fail the request.
VERDICT_TIMEOUT_MS = (100, 8000)
VERDICT_DEFAULT_TIMEOUT_MS = 1500
VERDICT_DEFAULT_CONFIDENCE = 0.8


def parse_actions(r: Reader, node: Node, path: str, phase: Phase, qualified: str, description: str) -> Actions | None:
    spec = r.mapping(node, path, ACTION_KEYS)
    if spec is None:
        return None
    if not spec and node.kind == "map" and not node.value:
        r.error(node, path, "no actions: give at least one (allow, block, redact, tag, ...)")
        return None
    before = len(r.issues)
    a: dict[str, Any] = {"names": tuple(spec), "written": MappingProxyType({k: v.plain() for k, v in spec.items()})}
    for key, value in spec.items():
        field = f"{path}.{key}"
        if phase is Phase.RESPONSE and key not in RESPONSE_ACTIONS:
            r.error(
                spec[key], field, f"not available in a `phase: response` rule (use one of: {', '.join(sorted(RESPONSE_ACTIONS))})"
            )
            continue
        _action(r, key, value, field, phase, qualified, description, a)
    if "allow" in spec and "block" in spec:
        r.error(spec["block"], f"{path}.block", "a rule cannot both allow and block")
    if "claude_verdict" in spec and "block" in spec:
        r.error(
            spec["claude_verdict"],
            f"{path}.claude_verdict",
            "a rule that blocks outright has no use for a verdict: drop `block` (the verdict blocks) or this",
        )
    if len(r.issues) > before:
        return None
    a["redactions"] = tuple(a.get("redactions", ()))
    a["prompts"] = tuple(a.get("prompts", ()))
    a["field_edits"] = tuple(a.get("field_edits", ()))
    a["response_edits"] = tuple(a.get("response_edits", ()))
    return Actions(**a)


def _action(
    r: Reader, key: str, node: Node, field: str, phase: Phase, qualified: str, description: str, a: dict[str, Any]
) -> None:
    if key == "allow":
        a["allow"] = r.true(node, field)
    elif key == "block":
        a["block"] = _block(r, node, field, qualified, description)
    elif key in ("redact", "mask"):
        spec = _redaction(r, node, field, "placeholder" if key == "redact" else "mask", phase)
        if spec is not None:
            a.setdefault("redactions", []).append(spec)
    elif key == "require_headers":
        a["require_headers"] = tuple(header_names(r, node, field, r.strings(node, field)))
    elif key == "strip_headers":
        # pseudo-headers (:path, ...) fail the header-name check: they cannot be stripped
        a["strip_headers"] = tuple(header_names(r, node, field, r.strings(node, field)))
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
    elif key == "claude_verdict":
        a["claude_verdict"] = _claude_verdict(r, node, field)
    elif key in ("prepend_system", "append_system", "prepend_user", "append_user"):
        text = r.string(node, field)
        if text is not None:
            position, role = key.split("_")
            a.setdefault("prompts", []).append((position, role, text))
    elif key in ("set_fields", "default_fields", "rewrite_response_fields"):
        if node.kind != "map" or not node.value:
            r.error(node, field, f"expected a mapping of JSON pointer -> value, got {kind_of(node)}")
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
            r.error(node, field, f"expected a list of JSON pointers, got {kind_of(node)}")
            return
        items = node.value if node.kind == "seq" else [node]
        for i, item in enumerate(items):
            pointer = r.pointer(item, f"{field}[{i}]", protect=target == "field_edits")
            if pointer is not None:
                a.setdefault(target, []).append(("remove", pointer, None))


def _block(r: Reader, node: Node, field: str, qualified: str, description: str) -> tuple[int, str, str] | None:
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


def _redaction(r: Reader, node: Node, field: str, mode: str, phase: Phase) -> RedactSpec | None:
    if node.kind == "map":
        allowed = ("kinds", "in", "restore", "reversible") if mode == "placeholder" else ("kinds", "in")
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
            r.error(
                kinds_node, f"{field}.kinds", f"{k!r} is not a detector kind: use pii, secrets or kinds like EMAIL_ADDRESS, AWS_*"
            )
            return None
    regex = None
    if globs:
        got = r.patterns(
            Node("seq", [Node("scalar", g, kinds_node.line) for g in globs], kinds_node.line), f"{field}.kinds", ignore_case=False
        )
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
    # `reversible` is a synonym of `restore` (the issue's word for it); giving both is an error
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
    return RedactSpec(
        categories=categories,
        kinds=regex,
        mode=mode,
        directions=frozenset(directions),  # type: ignore[arg-type]
        restore=restore,
        written=tuple(kinds),
    )


def _set_headers(r: Reader, node: Node, field: str) -> tuple[tuple[str, str], ...]:
    if node.kind != "map" or not node.value:
        r.error(node, field, f"expected a mapping of header name -> value, got {kind_of(node)}")
        return ()
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
    return tuple(out)


def _alert(r: Reader, node: Node, field: str, qualified: str, description: str) -> tuple[str, str] | None:
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


def _throttle(r: Reader, node: Node, field: str) -> tuple[int, int, str] | None:
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


def _quarantine(r: Reader, node: Node, field: str, qualified: str, description: str) -> str | None:
    default = f"policy rule {qualified}" + (f": {description}" if description else "")
    if node.kind == "scalar" and node.value is True:
        return default
    spec = r.mapping(node, field, ("reason",))
    if spec is None:
        return None
    return r.string(spec["reason"], f"{field}.reason") if "reason" in spec else default


def _claude_verdict(r: Reader, node: Node, field: str) -> tuple[int, str, str, float] | None:
    """``{timeout_ms, on_timeout, block_at, min_confidence}``; ``on_timeout`` has no default: whether
    the gateway fails open or closed when Claude does not answer in time is the operator's call."""
    spec = r.mapping(node, field, ("timeout_ms", "on_timeout", "block_at", "min_confidence"))
    if spec is None:
        return None
    if "on_timeout" not in spec:
        r.error(
            node,
            f"{field}.on_timeout",
            "missing: declare what happens without a verdict in time: allow (fail-open) or block (fail-closed)",
        )
        return None
    lo, hi = VERDICT_TIMEOUT_MS
    timeout = (
        r.integer(spec["timeout_ms"], f"{field}.timeout_ms", lo=lo, hi=hi) if "timeout_ms" in spec else VERDICT_DEFAULT_TIMEOUT_MS
    )
    on_timeout = r.enum(spec["on_timeout"], f"{field}.on_timeout", ("allow", "block"))
    block_at = r.enum(spec["block_at"], f"{field}.block_at", ("malicious", "suspicious")) if "block_at" in spec else "malicious"
    confidence: float | None = VERDICT_DEFAULT_CONFIDENCE
    if "min_confidence" in spec:
        confidence = r.number(spec["min_confidence"], f"{field}.min_confidence")
        if confidence is not None and not 0.0 <= confidence <= 1.0:
            r.error(spec["min_confidence"], f"{field}.min_confidence", f"{confidence:g} is out of range: must be in [0, 1]")
            confidence = None
    if timeout is None or on_timeout is None or block_at is None or confidence is None:
        return None
    return timeout, on_timeout, block_at, confidence
