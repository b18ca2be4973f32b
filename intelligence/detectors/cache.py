"""Detector results remembered by text: a conversation resends its system prompt, tool definitions
and history on every turn, and an application sends the same system prompt with every request.

A :class:`CachedFinder` wraps any ``find(text) -> spans`` detector. The cache is bounded in entries
(cleared whole when full: a burst of new texts costs one rebuild, never unbounded memory) and skips
texts longer than ``max_chars`` (rare, and worth their own scan). Detectors are pure functions of the
text, so a remembered answer is the answer. A scan cut short by its deadline (``scan``) is not
remembered: it is not the answer.
"""

from __future__ import annotations

from typing import Any, TypeVar

from .spans import Scan

T = TypeVar("T")


class CachedFinder:
    def __init__(self, finder: Any, *, size: int = 4096, max_chars: int = 20_000) -> None:
        self.finder = finder
        self.size, self.max_chars = size, max_chars
        self._seen: dict[str, tuple[Any, ...]] = {}
        self.hits = self.misses = 0

    def find(self, text: str) -> list[Any]:
        if len(text) > self.max_chars:
            return list(self.finder.find(text))
        known = self._seen.get(text)
        if known is None:
            self.misses += 1
            known = tuple(self.finder.find(text))
            if len(self._seen) >= self.size:
                self._seen.clear()
            self._seen[text] = known
        else:
            self.hits += 1
        return list(known)

    __call__ = find

    def scan(self, text: str, *, deadline: float | None = None) -> Scan:
        """The wrapped detector's ``scan`` (or its ``find``, which always reads all of the text);
        only complete scans are remembered."""
        scan = getattr(self.finder, "scan", None)
        if scan is None:
            return Scan(self.find(text), True, len(text))
        if len(text) > self.max_chars:
            return scan(text, deadline=deadline)
        known = self._seen.get(text)
        if known is not None:
            self.hits += 1
            return Scan(list(known), True, len(text))
        self.misses += 1
        result = scan(text, deadline=deadline)
        if result.complete:
            if len(self._seen) >= self.size:
                self._seen.clear()
            self._seen[text] = tuple(result.spans)
        return result

    def __getattr__(self, name: str) -> Any:  # the wrapped detector's other attributes (kinds, supported, ...)
        return getattr(self.finder, name)


def cached(finder: T | None, **kw: Any) -> T | CachedFinder | None:
    """``finder`` behind a :class:`CachedFinder` (None stays None; an already cached one is not wrapped twice)."""
    if finder is None or isinstance(finder, CachedFinder):
        return finder
    return CachedFinder(finder, **kw)


__all__ = ["CachedFinder", "cached"]
