"""A detected value inside a text, shared by the PII and secret detectors."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

SpanFinder = Callable[[str], "list[Span]"]


@dataclass(frozen=True, slots=True)
class Span:
    kind: str  # EMAIL_ADDRESS, CREDIT_CARD, AWS_ACCESS_KEY, ... (upper snake case)
    start: int
    end: int
    score: float
    detector: str  # which library / recogniser produced it, for the explanation

    def value(self, text: str) -> str:
        return text[self.start : self.end]

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "start": self.start, "end": self.end, "score": round(self.score, 3), "detector": self.detector}


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Keep a non-overlapping subset: higher score first, then the longer span; sorted by start."""
    ranked = sorted(spans, key=lambda s: (-s.score, -(s.end - s.start), s.start))
    kept: list[Span] = []
    for s in ranked:
        if s.end <= s.start:
            continue
        if all(s.end <= k.start or s.start >= k.end for k in kept):
            kept.append(s)
    return sorted(kept, key=lambda s: s.start)


def combine(*finders: SpanFinder) -> SpanFinder:
    """One finder out of several (e.g. PII and secrets), overlaps resolved."""

    def find(text: str) -> list[Span]:
        found: list[Span] = []
        for f in finders:
            found.extend(f(text))
        return resolve_overlaps(found)

    return find
