"""Carrying out a decision on a parsed body: request edits, response edits, redaction of texts.

Everything provider-specific goes through :mod:`extproc.providers.edits`. Each function returns the
list of changes made (for the exchange record); an edit the API cannot take (a system prompt on
/v1/embeddings) is listed as ``skipped`` rather than failing the request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from extproc.providers import edits
from intelligence.policy.decision import FieldEdit, RedactPlan, RequestDecision, ResponseDecision

Category = Literal["pii", "secrets"]


def apply_request(decision: RequestDecision, api: str | None, doc: dict, *, provider: str | None = None) -> list[str]:
    """Apply model change, field edits, max-tokens cap and prompt decorators to ``doc`` in place, in
    that order. ``provider`` is the upstream provider (chat bodies name max tokens per provider)."""
    made: list[str] = []
    if decision.blocked:
        return made
    if decision.model_changed_from is not None and decision.model is not None:
        rule = decision.route.rule if decision.route is not None else "aliases"
        _run(made, rule, lambda: edits.set_model(api, doc, decision.model))  # type: ignore[arg-type]
    _field_edits(made, decision.field_edits, doc)
    if decision.cap_max_tokens is not None:
        cap = decision.cap_max_tokens
        _run(made, "cap_max_tokens", lambda: edits.cap_max_tokens(api, doc, cap, provider=provider))
    for p in decision.prompts:
        fn = edits.prepend_message if p.position == "prepend" else edits.append_message
        _run(made, p.rule, lambda fn=fn, p=p: fn(api, doc, p.role, p.text))
    return made


def apply_response(decision: ResponseDecision, api: str | None, doc: dict) -> list[str]:
    """Strip or rewrite response fields (JSON pointers) of a buffered response in place."""
    made: list[str] = []
    _field_edits(made, decision.field_edits, doc)
    return made


def _field_edits(made: list[str], field_edits: Iterable[FieldEdit], doc: dict) -> None:
    for e in field_edits:
        if e.op == "remove":
            _run(made, e.rule, lambda e=e: edits.remove_field(doc, e.pointer))
        elif e.op == "default":
            _run(made, e.rule, lambda e=e: edits.default_field(doc, e.pointer, e.value))
        else:
            _run(made, e.rule, lambda e=e: edits.set_field(doc, e.pointer, e.value))


def _run(made: list[str], rule: str, edit: Any) -> None:
    try:
        change = edit()
    except edits.EditNotSupported as exc:
        made.append(f"skipped: {exc} [{rule}]")
        return
    if change:
        made.append(f"{change} [{rule}]")


# ---------------------------------------------------------------------------------------- redaction
@dataclass
class Redactions:
    """The per-request redaction state for a plan: placeholders to restore in the response, placeholders
    kept (never restored) and masks. Kinds are split by the plan, so the two placeholder maps never
    share a label and restoring one cannot pick a value from the other."""

    restorable: Any  # intelligence.detectors.redact.Redaction, mode placeholder
    kept: Any
    masked: Any  # mode mask

    @classmethod
    def new(cls) -> Redactions:
        from intelligence.detectors.redact import Redaction

        return cls(Redaction(), Redaction(), Redaction(mode="mask"))

    def restore(self, text: str) -> str:
        return self.restorable.restore(text)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in (self.restorable, self.kept):
            for label, n in r.counts.items():
                out[label] = out.get(label, 0) + n
        return out


def redact_text(plan: RedactPlan, text: str, spans: Iterable[tuple[Category, Any]], state: Redactions) -> str:
    """``text`` with every span the plan covers replaced (spans: ``(category, Span)`` with ``kind``,
    ``start``, ``end``). Overlapping spans: the earlier, then the longer one is kept."""
    chosen: list[tuple[int, int, str, str]] = []
    for category, span in sorted(spans, key=lambda cs: (cs[1].start, -(cs[1].end - cs[1].start))):
        mode = plan.mode_for(span.kind, category)
        if mode is None or span.end <= span.start or (chosen and span.start < chosen[-1][1]):
            continue
        if mode == "mask":
            target = "masked"
        else:
            target = "restorable" if plan.restores(span.kind, category) else "kept"
        chosen.append((span.start, span.end, span.kind, target))
    if not chosen:
        return text
    out: list[str] = []
    pos = 0
    for start, end, kind, target in chosen:
        out.append(text[pos:start])
        out.append(getattr(state, target).placeholder(kind, text[start:end]))
        pos = end
    out.append(text[pos:])
    return "".join(out)
