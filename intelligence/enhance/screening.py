"""Screening of a candidate enhancement's text before it can run.

An enhancement's free text (a system prompt addition, an instruction, a find/replace, a tool
description) is written by Claude from evidence that came from users' requests, and the sidecar
would put it into other users' requests. So before it is stored as a candidate it goes through the
same detectors the gateway applies to requests (intelligence/detectors):

* the prompt-injection detector (heuristics, context, and the embedding layers when the static
  table is built): the text is scanned as *untrusted* (source ``user``), the strictest reading;
* the secret detector (known key formats and high-entropy tokens).

A candidate that trips either is stored with status ``rejected`` and the reason in
``enhancements.status_reason`` (details in ``enhancements.screening``); it can never be started.
``parameters`` changes have no free text and pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MAX_SCREENED_CHARS = 20_000
_TEXT_FIELDS = {
    "system_prompt": ("text",),
    "instruction_rewrite": ("text", "find", "replace"),
    "tool_description": ("description",),
    "parameters": (),
}


@dataclass(frozen=True)
class Screening:
    ok: bool
    reasons: tuple[str, ...] = ()
    findings: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "reasons": list(self.reasons), **self.findings}


def candidate_texts(kind: str, spec: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The (field, text) pairs of a spec that end up in requests."""
    spec = spec or {}
    out = []
    for name in _TEXT_FIELDS.get(kind, ()):
        value = spec.get(name)
        if isinstance(value, str) and value.strip():
            out.append((name, value[:MAX_SCREENED_CHARS]))
    return out


_injection: Any = None
_lock = threading.Lock()


def _injection_detector() -> Any:
    """The gateway's injection detector (built once; heuristics only until its embedding table is ready)."""
    global _injection
    with _lock:
        if _injection is None:
            from intelligence.detectors.injection import default_injection_detector

            _injection = default_injection_detector(background=True)
        return _injection


def screen_spec(
    kind: str,
    spec: Mapping[str, Any] | None,
    *,
    injection: Any = None,
    find_secrets: Callable[[str], list[Any]] | None = None,
) -> Screening:
    """Run the detectors over the candidate's texts. A detector that fails to run rejects the
    candidate (fail closed): text that was not screened never reaches a request."""
    texts = candidate_texts(kind, spec)
    if not texts:
        return Screening(True, (), {"screened": []})
    reasons: list[str] = []
    findings: dict[str, Any] = {"screened": [name for name, _ in texts], "injection": {}, "secrets": {}}
    try:
        detector = injection if injection is not None else _injection_detector()
        for name, text in texts:
            verdict = detector.scan_text(text, "user")
            findings["injection"][name] = {"score": round(float(verdict.score), 4), "threshold": verdict.threshold}
            if verdict.flagged:
                reasons.append(f"injection detector flagged {name} (score {verdict.score:.2f}: {verdict.explanation()[:200]})")
    except Exception as exc:  # fail closed
        log.exception("screening: the injection detector failed")
        reasons.append(f"injection detector unavailable ({type(exc).__name__}): not screened")
    try:
        if find_secrets is None:
            from intelligence.detectors.secrets import shared_secret_detector

            find_secrets = shared_secret_detector().find
        for name, text in texts:
            kinds = sorted({str(getattr(span, "kind", "secret")) for span in find_secrets(text)})
            if kinds:
                findings["secrets"][name] = kinds
                reasons.append(f"secret detector found {', '.join(kinds)} in {name}")
    except Exception as exc:  # fail closed
        log.exception("screening: the secret detector failed")
        reasons.append(f"secret detector unavailable ({type(exc).__name__}): not screened")
    return Screening(not reasons, tuple(reasons), findings)


__all__ = ["Screening", "candidate_texts", "screen_spec"]
