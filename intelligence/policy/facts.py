"""What the policy engine decides on: plain, immutable facts about one exchange.

The exchange gathers these (routing, gateway key, detector results) and hands them to
:meth:`PolicySnapshot.evaluate_request` / :meth:`evaluate_response`. A fact that is not known yet is
``None`` (or empty); a condition on an unknown fact does not match (see docs/policy.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .decision import RequestDecision

_EMPTY: Mapping[str, int] = MappingProxyType({})


def _counts(kinds: Iterable[str]) -> Mapping[str, int]:
    out: dict[str, int] = {}
    for kind in kinds:
        out[kind] = out.get(kind, 0) + 1
    return MappingProxyType(out)


@dataclass(frozen=True, slots=True)
class Detections:
    """Detector results for one text direction (the request, or the response).

    ``pii`` / ``secrets`` map a detector kind (``EMAIL_ADDRESS``, ``AWS_ACCESS_KEY``, ...) to how many
    were found. ``injection_score`` is in [0, 1] (None: not scanned); ``injection_layer`` names the
    layer that scored highest. ``flags`` are normaliser findings (``zero_width``, ``bidi``,
    ``homoglyph``, ``base64``, ...).
    """

    pii: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    secrets: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    injection_score: float | None = None
    injection_layer: str | None = None
    flags: frozenset[str] = frozenset()
    # A scan ran out of its time budget (or input was cut): part of the request was not screened by
    # every detector. None: nothing was scanned. Policy condition ``detection_incomplete``.
    incomplete: bool | None = None
    # Which scans did not finish: "injection", "pii".
    incomplete_scans: frozenset[str] = frozenset()

    @classmethod
    def from_results(
        cls,
        *,
        pii: Iterable[Any] = (),
        secrets: Iterable[Any] = (),
        injection: Any = None,
        flags: Iterable[str] = (),
        pii_complete: bool | None = None,
    ) -> Detections:
        """From the detectors' own outputs: spans with ``.kind`` (intelligence.detectors.spans.Span) and an
        ``InjectionVerdict`` (``.score``, ``.layers``, ``.flags``); duck-typed so that this module
        does not import the detectors. ``pii_complete``: whether the PII scan read everything (None:
        it did not run)."""
        score = layer = incomplete = None
        all_flags = set(flags)
        unfinished: set[str] = set()
        if pii_complete is not None:
            incomplete = not pii_complete
            if not pii_complete:
                unfinished.add("pii")
        if injection is not None:
            score = float(injection.score)
            if getattr(injection, "incomplete", False):
                unfinished.add("injection")
            incomplete = bool(unfinished)
            layers = list(getattr(injection, "layers", ()) or ())
            if layers:
                layer = max(layers, key=lambda x: x.score).layer
            all_flags |= set(getattr(injection, "flags", ()) or ())
        return cls(
            pii=_counts(s.kind for s in pii),
            secrets=_counts(s.kind for s in secrets),
            injection_score=score,
            injection_layer=layer,
            flags=frozenset(all_flags),
            incomplete=incomplete,
            incomplete_scans=frozenset(unfinished),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "pii": dict(self.pii),
            "secrets": dict(self.secrets),
            "injection_score": self.injection_score,
            "injection_layer": self.injection_layer,
            "flags": sorted(self.flags),
            "incomplete": self.incomplete,
            "incomplete_scans": sorted(self.incomplete_scans),
        }


NO_DETECTIONS = Detections()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """One request as the policy sees it. ``headers`` keys are lower-case (as Envoy hands them over)."""

    api: str | None = None  # chat | responses | messages | embeddings | completions | ollama_chat | ...
    path: str = ""
    method: str = "POST"
    provider: str | None = None
    model: str | None = None  # as the client sent it (aliases are resolved by the engine)
    key_id: str | None = None  # the gateway key, when one authenticated the request
    key_name: str | None = None
    client: str | None = None  # a stable client identity: gateway key id or credential fingerprint
    client_addr: str | None = None
    pattern_id: str | None = None
    request_bytes: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    detections: Detections = NO_DETECTIONS
    now: datetime = field(default_factory=_utcnow)


@dataclass(frozen=True, slots=True)
class ResponseFacts:
    """The response to a request; ``request_decision`` carries what the request phase decided for
    the response (redactions, response-field edits, restore)."""

    request: RequestFacts
    status: int | None = None
    response_bytes: int = 0
    streamed: bool = False
    detections: Detections = NO_DETECTIONS
    request_decision: RequestDecision | None = None
