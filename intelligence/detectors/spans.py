"""A detected value inside a text, shared by the PII and secret detectors."""

from __future__ import annotations

from bisect import bisect_right
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


@dataclass(frozen=True, slots=True)
class Scan:
    """One text's scan against a deadline: the spans found, and whether all of the text was read
    (``scanned_chars`` of it were: what lies past that is unread)."""

    spans: list[Span]
    complete: bool = True
    scanned_chars: int = 0


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Keep a non-overlapping subset: higher score first, then the longer span; sorted by start."""
    ranked = sorted(spans, key=lambda s: (-s.score, -(s.end - s.start), s.start))
    # kept spans never overlap, so ordered by start they are ordered by end too: a candidate can only
    # collide with its neighbours in that order (bisection, not a scan of every kept span: a text
    # with thousands of matches stays cheap)
    starts: list[int] = []
    kept: list[Span] = []
    for s in ranked:
        if s.end <= s.start:
            continue
        i = bisect_right(starts, s.start)
        if i > 0 and kept[i - 1].end > s.start:
            continue
        if i < len(kept) and kept[i].start < s.end:
            continue
        starts.insert(i, s.start)
        kept.insert(i, s)
    return kept


def combine(*finders: SpanFinder) -> SpanFinder:
    """One finder out of several (e.g. PII and secrets), overlaps resolved."""

    def find(text: str) -> list[Span]:
        found: list[Span] = []
        for f in finders:
            found.extend(f(text))
        return resolve_overlaps(found)

    return find
