"""Reversible redaction, whole texts and streams.

One :class:`Redaction` lives for one request: the provider sees ``<EMAIL_1>``; the mapping restores
the real value in the response to the client. The same value gets the same placeholder within the
request, so the model can still refer to it consistently.

Streams: :class:`StreamRedactor` redacts a text arriving in chunks (an SSE response) and holds back
only the tail that could still be the beginning of a value (an unfinished word, a run of digit
groups, short upper-case groups of an IBAN), never more than ``max_hold`` characters.
:class:`StreamRestorer` puts original values back into a streamed response, holding back only a
trailing ``<``-prefix that could still become a placeholder.

Both work on *text*: the caller extracts the text deltas from the provider's SSE/JSON events.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from .pii import PLACEHOLDER_LABELS
from .spans import Span, SpanFinder

Mode = Literal["placeholder", "mask"]

PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*?)_(\d+)>")
_PARTIAL_PLACEHOLDER = re.compile(r"<[A-Z0-9_]*$")
MAX_PLACEHOLDER_CHARS = 48


def label_for(kind: str) -> str:
    return PLACEHOLDER_LABELS.get(kind, kind)


@dataclass
class Redaction:
    """Per-request redaction state. ``mode='mask'`` writes ``<EMAIL>`` and keeps no mapping."""

    mode: Mode = "placeholder"
    mapping: dict[str, str] = field(default_factory=dict)  # placeholder -> original value
    _by_value: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    _counters: dict[str, int] = field(default_factory=dict, repr=False)

    def placeholder(self, kind: str, value: str) -> str:
        label = label_for(kind)
        if self.mode == "mask":
            return f"<{label}>"
        key = (label, value)
        if key not in self._by_value:
            n = self._counters.get(label, 0) + 1
            self._counters[label] = n
            token = f"<{label}_{n}>"
            self._by_value[key] = token
            self.mapping[token] = value
        return self._by_value[key]

    def redact(self, text: str, spans: Sequence[Span]) -> str:
        """Replace each (non-overlapping, sorted) span by its placeholder."""
        out: list[str] = []
        pos = 0
        for s in sorted(spans, key=lambda s: s.start):
            if s.start < pos:
                continue
            out.append(text[pos : s.start])
            out.append(self.placeholder(s.kind, text[s.start : s.end]))
            pos = s.end
        out.append(text[pos:])
        return "".join(out)

    def restore(self, text: str) -> str:
        if not self.mapping or "<" not in text:
            return text
        return PLACEHOLDER.sub(lambda m: self.mapping.get(m.group(0), m.group(0)), text)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._counters)


def redact_text(text: str, find: SpanFinder, redaction: Redaction | None = None) -> tuple[str, Redaction, list[Span]]:
    redaction = redaction or Redaction()
    spans = find(text)
    return redaction.redact(text, spans), redaction, spans


class StreamRestorer:
    """Restores placeholders in a streamed response text."""

    def __init__(self, redaction: Redaction) -> None:
        self._redaction = redaction
        self._held = ""

    def feed(self, chunk: str) -> str:
        text = self._held + chunk
        cut = len(text)
        lt = text.rfind("<")
        if lt >= 0 and len(text) - lt <= MAX_PLACEHOLDER_CHARS and _PARTIAL_PLACEHOLDER.match(text, lt):
            cut = lt
        self._held = text[cut:]
        return self._redaction.restore(text[:cut])

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._redaction.restore(text)


# A token that could be one group of a value spread over several whitespace-separated tokens:
# digit groups of phone / card / IBAN numbers (with their punctuation) and short upper-case
# alphanumeric groups ("GB82 WEST 1234 ...").
_GROUP_TOKEN = re.compile(r"[(+]?[\d().+\-/:]*\d[\d().+\-/:,]*|[A-Z0-9]{1,4}[.,]?")
_TOKEN = re.compile(r"\S+")


def holdback_start(text: str, max_hold: int) -> int:
    """Index from which ``text`` must be held back because the next chunk may extend a value there."""
    tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
    cut = len(text)
    if not tokens:
        return cut
    i = len(tokens) - 1
    if tokens[i][1] == len(text):  # unfinished last word
        cut = tokens[i][0]
        if not _GROUP_TOKEN.fullmatch(text[tokens[i][0] : tokens[i][1]]):
            return max(cut, len(text) - max_hold)
        i -= 1
    # Walk left over value-group tokens that touch the end (through single spaces / dashes).
    while i >= 0:
        start, end = tokens[i]
        gap_end = tokens[i + 1][0] if i + 1 < len(tokens) else len(text)
        if gap_end - end > 2 or not _GROUP_TOKEN.fullmatch(text[start:end]):
            break
        cut = start
        i -= 1
    return max(cut, len(text) - max_hold)


class StreamRedactor:
    """Redacts values in a text that arrives in chunks; output equals redacting the whole text.

    ``context`` characters of already-emitted text are re-analysed with each chunk so context words
    ("my card is ...") still count; spans that start there were decided before and are skipped.
    A value longer than ``max_hold`` characters that is split across chunks can escape: the
    redactor then emits, rather than buffering without bound.
    """

    def __init__(self, find: SpanFinder, redaction: Redaction | None = None, *, max_hold: int = 128, context: int = 96) -> None:
        self._find = find
        self.redaction = redaction or Redaction()
        self._max_hold = max_hold
        self._context_chars = context
        self._context = ""
        self._pending = ""
        self.spans: list[Span] = []  # everything redacted so far, offsets into the whole stream
        self._emitted = 0  # raw characters emitted so far

    def feed(self, chunk: str) -> str:
        self._pending += chunk
        return self._emit(final=False)

    def flush(self) -> str:
        return self._emit(final=True)

    def _emit(self, *, final: bool) -> str:
        if not self._pending:
            return ""
        window = self._context + self._pending
        base = len(self._context)
        spans = [s for s in self._find(window) if s.end > base]
        cut = len(self._pending) if final else holdback_start(self._pending, self._max_hold)
        for s in spans:  # never cut through a value that was found
            if s.start - base < cut < s.end - base and not final:
                cut = max(0, s.start - base)
        out: list[str] = []
        pos = 0
        for s in sorted(spans, key=lambda s: s.start):
            start, end = max(s.start - base, 0), s.end - base
            if end > cut or start < pos:
                continue
            out.append(self._pending[pos:start])
            out.append(self.redaction.placeholder(s.kind, window[s.start : s.end]))
            self.spans.append(Span(s.kind, self._emitted + start, self._emitted + end, s.score, s.detector))
            pos = end
        out.append(self._pending[pos:cut])
        emitted_raw = self._pending[:cut]
        self._pending = self._pending[cut:]
        self._emitted += cut
        self._context = (self._context + emitted_raw)[-self._context_chars :]
        return "".join(out)
