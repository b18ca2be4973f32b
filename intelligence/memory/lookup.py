"""Inline pattern lookup for the hot path: which pattern does this request belong to, right now?

Three tiers, cheapest first:

1. an in-process LRU keyed by the canonical prompt's sha256 (microseconds);
2. the database: an identical canonical prompt seen before already has a pattern (one indexed
   equality query, about a millisecond);
3. embed the prompt and ask the HNSW index for the nearest centroid (the embedding dominates).

:meth:`PatternLookup.lookup` never waits longer than its budget: when the budget runs out it
returns None and lets the work finish in the background so the next identical prompt hits the
cache. When ``max_inflight`` lookups are already running it returns None at once (skipped under
load). Nothing here can delay forwarding by more than the budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from intelligence.memory.assign import MemoryConfig
from intelligence.memory.canonical import CanonicalPrompt
from intelligence.memory.repository import PatternRepository
from intelligence.memory.worker import TextEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PatternMatch:
    pattern_id: int  # may since have been merged: PatternRepository.resolve() follows redirects
    similarity: float  # to the centroid; 1.0 for an identical prompt seen before
    matched: bool  # similar enough to join the pattern (False: the request looks new)
    source: str  # cache | hash | index
    vector: np.ndarray | None = None  # the prompt's embedding when it was computed here


@dataclass
class LookupStats:
    cache_hits: int = 0
    hash_hits: int = 0
    index_hits: int = 0
    timeouts: int = 0
    skipped: int = 0
    errors: int = 0


class PatternLookup:
    def __init__(
        self,
        engine: AsyncEngine,
        embedder: TextEncoder | Callable[[], TextEncoder],
        *,
        budget_ms: float = 5.0,
        cache_size: int = 10_000,
        ttl_s: float = 600.0,
        max_inflight: int = 2,
        config: MemoryConfig | None = None,
        ef_search: int = 40,
    ) -> None:
        self.budget_s = budget_ms / 1000.0
        self.cache_size = cache_size
        self.ttl_s = ttl_s
        self.max_inflight = max_inflight
        self.config = config or MemoryConfig()
        self.ef_search = ef_search
        self.stats = LookupStats()
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._embedder_source = embedder
        self._embedder: TextEncoder | None = embedder if hasattr(embedder, "dim") else None  # type: ignore[assignment]
        self._embedder_loading: asyncio.Task[Any] | None = None
        self._cache: OrderedDict[str, tuple[float, PatternMatch]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[PatternMatch | None]] = {}

    async def lookup(self, prompt: CanonicalPrompt) -> PatternMatch | None:
        """The pattern for this prompt within the budget, or None (unknown yet, too slow, or skipped)."""
        if prompt.empty:
            return None
        cached = self._cached(prompt.hash)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        task = self._inflight.get(prompt.hash)
        if task is None:
            if len(self._inflight) >= self.max_inflight:
                self.stats.skipped += 1
                return None
            task = asyncio.ensure_future(self._resolve(prompt))
            self._inflight[prompt.hash] = task
            task.add_done_callback(lambda _t, h=prompt.hash: self._inflight.pop(h, None))
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout=self.budget_s)
        except TimeoutError:
            self.stats.timeouts += 1
            return None
        except Exception:  # the lookup is advisory: a failure means "no answer"
            self.stats.errors += 1
            log.debug("pattern lookup failed", exc_info=True)
            return None

    def invalidate(self) -> None:
        """Forget cached answers (e.g. after maintenance merged or split patterns)."""
        self._cache.clear()

    def _cached(self, key: str) -> PatternMatch | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        stored_at, match = entry
        if time.monotonic() - stored_at > self.ttl_s:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return PatternMatch(match.pattern_id, match.similarity, match.matched, "cache", match.vector)

    def _remember(self, key: str, match: PatternMatch) -> None:
        self._cache[key] = (time.monotonic(), match)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def _resolve(self, prompt: CanonicalPrompt) -> PatternMatch | None:
        async with self._sessions() as session, session.begin():
            repo = PatternRepository(session)
            pattern_id = await repo.pattern_id_for_hash(prompt.hash)
            if pattern_id is not None:
                match = PatternMatch(pattern_id, 1.0, True, "hash")
                self.stats.hash_hits += 1
                self._remember(prompt.hash, match)
                return match
        embedder = await self._get_embedder()
        vector = (await asyncio.to_thread(embedder.encode, [prompt.text]))[0]
        async with self._sessions() as session, session.begin():
            nearest = await PatternRepository(session).nearest_patterns(vector, k=1, ef_search=self.ef_search)
        if not nearest:
            return None
        best = nearest[0]
        match = PatternMatch(best.id, best.similarity, best.similarity >= self.config.join_threshold, "index", vector)
        self.stats.index_hits += 1
        self._remember(prompt.hash, match)
        return match

    async def _get_embedder(self) -> TextEncoder:
        if self._embedder is not None:
            return self._embedder
        if self._embedder_loading is None:  # load once, off the loop; later callers wait for the same load
            factory = self._embedder_source
            self._embedder_loading = asyncio.ensure_future(asyncio.to_thread(factory))  # type: ignore[arg-type]
        try:
            self._embedder = await asyncio.shield(self._embedder_loading)
        except Exception:
            self._embedder_loading = None  # let a later lookup try to load it again
            raise
        return self._embedder
