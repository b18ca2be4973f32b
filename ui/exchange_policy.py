"""What the policy, the detectors, Claude and the enhancer did to one exchange, read from its flags.

The sidecar records only counts, kinds, rule ids and patches in ``exchanges.flags`` (never a
detected value); free text that reaches the page (notes, messages, errors, patch values) still goes
through :func:`ui.redact.mask_secrets`, because a policy author or a provider can put anything there.
Shapes: extproc/screening.py ``GuardOutcome.record()``, intelligence/policy/decision.py ``to_record()``,
extproc/exchange.py (``enhancement``, ``claude_verdict``, ``response_policy``), intelligence/enhance/live.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ui.redact import mask_secrets

RULE_COLUMNS = ["side", "policy", "rule", "mode", "actions", "note"]


def _text(value: Any) -> str:
    return mask_secrets("" if value is None else str(value))


def _doc(flags: dict[str, Any], key: str) -> dict[str, Any]:
    value = flags.get(key)
    return value if isinstance(value, dict) else {}


def decisions(flags: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request-side (``policy``) and response-side (``response_policy``) decisions; empty when absent."""
    return _doc(flags, "policy"), _doc(flags, "response_policy")


def edit_list(values: Any) -> list[str]:
    """The edits a decision applied (``flags.edits`` / ``response_policy.edits``: short descriptions)."""
    return [_text(v) for v in values] if isinstance(values, list) else []


def fired_rules(flags: dict[str, Any]) -> pd.DataFrame:
    """Every rule that fired, request side then response side."""
    rows = []
    for side, doc in (("request", _doc(flags, "policy")), ("response", _doc(flags, "response_policy"))):
        for f in doc.get("fired") or []:
            if isinstance(f, dict):
                rows.append(
                    {
                        "side": side,
                        "policy": _text(f.get("policy")),
                        "rule": _text(f.get("rule")),
                        "mode": _text(f.get("mode")),
                        "actions": ", ".join(_text(a) for a in f.get("actions") or []),
                        "note": _text(f.get("note")),
                    }
                )
    return pd.DataFrame(rows, columns=RULE_COLUMNS)


def block_reason(doc: dict[str, Any]) -> str | None:
    """``status code: message (rule)`` of a decision's block, or None."""
    b = doc.get("block")
    if not isinstance(b, dict):
        return None
    return _text(f"{b.get('status', '?')} {b.get('code', '')}: {b.get('message', '')} (rule {b.get('rule', '?')})")


@dataclass
class DetectorSummary:
    injection_score: float | None
    injection_layer: str | None
    counts: pd.DataFrame  # category, kind, count: types and numbers only
    flags: list[str] = field(default_factory=list)


def detector_summary(flags: dict[str, Any]) -> DetectorSummary | None:
    d = _doc(flags, "detections")
    if not d:
        return None
    rows = [
        {"category": category, "kind": _text(kind), "count": int(n)}
        for category in ("pii", "secrets")
        for kind, n in sorted((d.get(category) or {}).items())
        if isinstance(n, (int, float))
    ]
    score = d.get("injection_score")
    return DetectorSummary(
        injection_score=float(score) if isinstance(score, (int, float)) else None,
        injection_layer=_text(d.get("injection_layer")) or None,
        counts=pd.DataFrame(rows, columns=["category", "kind", "count"]),
        flags=[_text(f) for f in d.get("flags") or []],
    )


def decision_facts(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The rest of a decision, one line each (model change, route, redaction, caps, tags, alerts, quarantine)."""
    out: list[tuple[str, str]] = []
    if isinstance(doc.get("model"), dict):
        out.append(("model changed", _text(f"{doc['model'].get('from')} → {doc['model'].get('to')}")))
    if isinstance(doc.get("route"), dict):
        r = doc["route"]
        out.append(("routed", _text(f"{r.get('provider') or '?'} / {r.get('model') or '?'} (rule {r.get('rule')})")))
    for key, label in (("redact", "redaction"), ("response_redact", "response redaction")):
        for sel in doc.get(key) or []:
            if isinstance(sel, dict):
                what = ", ".join(sel.get("categories") or []) or sel.get("kinds") or "?"
                out.append(
                    (
                        label,
                        _text(
                            f"{what} · {sel.get('mode')}{' · restored' if sel.get('restore') else ''} (rule {sel.get('rule')})"
                        ),
                    )
                )
    if doc.get("cap_max_tokens") is not None:
        out.append(("max tokens capped", _text(doc["cap_max_tokens"])))
    if doc.get("tags"):
        out.append(("tags", ", ".join(_text(t) for t in doc["tags"])))
    for a in doc.get("alerts") or []:
        if isinstance(a, dict):
            out.append(("alert", _text(f"{a.get('severity')}: {a.get('message')} (rule {a.get('rule')})")))
    if isinstance(doc.get("quarantine"), dict):
        q = doc["quarantine"]
        out.append(("key quarantined", _text(f"{q.get('reason')} (rule {q.get('rule')})")))
    if isinstance(doc.get("masked"), dict):
        out.append(("masked", ", ".join(f"{_text(k)}: {_text(n)}" for k, n in sorted(doc["masked"].items()))))
    for key, label in (
        ("restored", "placeholders restored"),
        ("unsupported", "not applied"),
        ("block_not_enforced", "block not enforced"),
    ):
        if doc.get(key) not in (None, False, [], ""):
            out.append((label, _text(doc[key])))
    if doc.get("version"):
        out.append(("policy version", _text(doc["version"])))
    return out


def claude_verdict(flags: dict[str, Any]) -> list[tuple[str, str]]:
    """Claude's verdict on the request (settled or pending) and the rule that asked, as label/value lines."""
    v = _doc(flags, "claude_verdict")
    asked = _doc(_doc(flags, "policy"), "claude_verdict")
    if not v and not asked:
        return []
    v = v or {"rule": asked.get("rule"), "mode": asked.get("mode"), "outcome": "not recorded"}
    order = [
        "verdict",
        "confidence",
        "action",
        "outcome",
        "rule",
        "mode",
        "latency_ms",
        "timeout_ms",
        "fail_mode",
        "claude_call_id",
        "error",
    ]
    return [(k, _text(v[k])) for k in order if v.get(k) is not None]


@dataclass
class EnhancementView:
    experiment: int | None
    enhancement: int | None
    arm: str
    pattern: int | None
    patch_json: str  # the JSON patch applied, pretty-printed (empty list for a control arm)
    also_active: list[str] = field(default_factory=list)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def enhancement(flags: dict[str, Any]) -> EnhancementView | None:
    e = _doc(flags, "enhancement")
    if not e:
        return None
    return EnhancementView(
        experiment=_int(e.get("experiment")),
        enhancement=_int(e.get("enhancement")),
        arm=_text(e.get("arm")) or "?",
        pattern=_int(e.get("pattern")),
        patch_json=_text(json.dumps(e.get("patch") or [], indent=2, ensure_ascii=False)),
        also_active=[_text(a) for a in e.get("also_active") or []],
    )


def other_notes(flags: dict[str, Any]) -> list[tuple[str, str]]:
    """Gateway notes outside the policy: credentials injected, tools renamed, body not JSON, route skipped."""
    out = []
    if flags.get("credentials"):
        out.append(("credentials", _text(flags["credentials"])))
    if flags.get("tool_names_aliased"):
        out.append(("tool names aliased", _text(flags["tool_names_aliased"])))
    if flags.get("request_not_json"):
        out.append(("request body", "not JSON"))
    if isinstance(flags.get("policy_route"), dict):
        out.append(("route", _text(", ".join(f"{k}: {v}" for k, v in flags["policy_route"].items()))))
    return out
