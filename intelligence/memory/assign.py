"""Online pattern formation: a prompt joins the nearest pattern if it is similar enough, or starts one.

This is the only place that decides membership as prompts arrive; the background worker and
``llmproxy eval patterns`` both go through :class:`AssignmentBatch`. The thresholds and the
measurement behind their defaults are in docs/patterns.md.

Within a batch, patterns touched so far are kept in memory and written once at :meth:`flush`
(one HNSW index update per pattern per batch instead of one per prompt); the nearest-centroid
search asks the HNSW index for a few candidates and re-scores them against the batch's own,
newer centroids.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from intelligence.memory.labels import heuristic_label
from intelligence.memory.repository import PatternRepository, PatternState, PatternUpdate

EXAMPLE_CHARS = 300
CANDIDATES = 3  # centroids fetched from the index per prompt, re-scored with in-batch state


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    # Cosine similarity to a pattern's centroid needed to join it. 0.50 is the middle of the plateau
    # of adjusted Rand index against CLINC150's intents (train and val splits, two orders) for
    # all-MiniLM-L6-v2; another embedding model needs its own measurement.
    join_threshold: float = 0.50
    # Two patterns whose centroids are this similar are one pattern (maintenance merges them).
    merge_threshold: float = 0.80
    # A pattern is split when it has at least this many members and their mean cosine distance
    # to the centroid exceeds split_max_spread, and 2-means lowers every part's spread by split_min_gain.
    split_min_members: int = 20
    split_max_spread: float = 0.30
    split_min_gain: float = 0.02
    split_min_part: int = 5
    max_examples: int = 5
    # HNSW candidate list for nearest-centroid search; above the pgvector default of 40 for recall.
    ef_search: int = 100
    # A retry: the same client sends a near-identical prompt within this window.
    retry_window_s: float = 120.0
    retry_similarity: float = 0.95


@dataclass(frozen=True, slots=True)
class Assignment:
    pattern_id: int
    similarity: float  # to the centroid the prompt joined (1.0 for a new pattern)
    created: bool


@dataclass
class _Working:
    """A pattern's running state while a batch changes it."""

    id: int
    centroid: np.ndarray
    member_count: int
    examples: list[dict[str, Any]]
    spread: float
    radius: float
    last_seen: datetime | None = None
    examples_changed: bool = False

    @classmethod
    def of(cls, p: PatternState) -> _Working:
        return cls(p.id, p.centroid.astype(np.float32), p.member_count, list(p.examples), p.spread, p.radius)


def unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def example(request_id: str, text: str, similarity: float) -> dict[str, Any]:
    return {"request_id": request_id, "text": text[:EXAMPLE_CHARS], "similarity": round(float(similarity), 4)}


def keep_examples(examples: list[dict[str, Any]], candidate: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """The ``limit`` examples closest to the centroid (as measured when each joined)."""
    merged = [e for e in examples if e.get("request_id") != candidate["request_id"]] + [candidate]
    merged.sort(key=lambda e: -float(e.get("similarity", 0.0)))
    return merged[:limit]


class PatternAssigner:
    def __init__(self, config: MemoryConfig | None = None) -> None:
        self.config = config or MemoryConfig()

    def batch(self, repo: PatternRepository) -> AssignmentBatch:
        return AssignmentBatch(repo, self.config)

    async def assign(
        self, repo: PatternRepository, vector: np.ndarray, *, request_id: str, text: str, seen_at: datetime
    ) -> Assignment:
        """Assign one prompt and write the change at once."""
        batch = self.batch(repo)
        result = await batch.assign(vector, request_id=request_id, text=text, seen_at=seen_at)
        await batch.flush()
        return result


class AssignmentBatch:
    """Assignments inside one transaction; call :meth:`flush` before committing."""

    def __init__(self, repo: PatternRepository, config: MemoryConfig) -> None:
        self.repo = repo
        self.config = config
        self._touched: dict[int, _Working] = {}
        self._ef_set = False

    async def assign(self, vector: np.ndarray, *, request_id: str, text: str, seen_at: datetime) -> Assignment:
        """Join the nearest pattern when similarity >= join_threshold, else start a new one.

        The centroid is the running mean of member embeddings (cosine ignores its length), the
        spread the running mean of member distances to it, the radius the largest such distance.
        """
        cfg = self.config
        if not self._ef_set:
            await self.repo.set_ef_search(cfg.ef_search)
            self._ef_set = True
        best, best_sim = await self._nearest(vector)
        if best is not None and best_sim >= cfg.join_threshold:
            self._join(best, vector, best_sim, request_id=request_id, text=text, seen_at=seen_at)
            return Assignment(pattern_id=best.id, similarity=best_sim, created=False)
        first = example(request_id, text, 1.0)
        pattern_id = await self.repo.create_pattern(vector, seen_at=seen_at, label=heuristic_label([text]), examples=[first])
        self._touched[pattern_id] = _Working(pattern_id, vector.astype(np.float32), 1, [first], 0.0, 0.0)
        return Assignment(pattern_id=pattern_id, similarity=1.0, created=True)

    async def _nearest(self, vector: np.ndarray) -> tuple[_Working | None, float]:
        candidates: dict[int, tuple[_Working, float]] = {}
        for p in await self.repo.nearest_patterns(vector, k=CANDIDATES):
            working = self._touched.get(p.id)
            if working is None:
                candidates[p.id] = (_Working.of(p), p.similarity)
        if self._touched:  # the batch's own patterns, scored against their current centroids
            touched = list(self._touched.values())
            centroids = np.stack([w.centroid for w in touched])
            sims = centroids @ vector / np.maximum(np.linalg.norm(centroids, axis=1), 1e-12)
            for w, s in zip(touched, sims):
                candidates[w.id] = (w, float(s))
        if not candidates:
            return None, -1.0
        working, sim = max(candidates.values(), key=lambda ws: (ws[1], -ws[0].id))
        return working, sim

    def _join(self, w: _Working, vector: np.ndarray, similarity: float, *, request_id: str, text: str, seen_at: datetime) -> None:
        self._touched[w.id] = w
        w.member_count += 1
        w.centroid = (w.centroid + (vector - w.centroid) / w.member_count).astype(np.float32)
        distance = 1.0 - similarity
        w.spread += (distance - w.spread) / w.member_count
        w.radius = max(w.radius, distance)
        w.last_seen = seen_at if w.last_seen is None else max(w.last_seen, seen_at)
        examples = keep_examples(w.examples, example(request_id, text, similarity), self.config.max_examples)
        if examples != w.examples:
            w.examples = examples
            w.examples_changed = True

    async def flush(self) -> None:
        """Write every pattern the batch changed (one row update each)."""
        updates = [
            PatternUpdate(
                id=w.id,
                centroid=w.centroid,
                member_count=w.member_count,
                examples=w.examples,
                spread=w.spread,
                radius=w.radius,
                last_seen=w.last_seen,
                label=heuristic_label(e["text"] for e in w.examples) if w.examples_changed else None,
            )
            for w in self._touched.values()
            if w.last_seen is not None  # created and never joined: the INSERT already wrote it
        ]
        await self.repo.update_patterns(updates)
        self._touched.clear()
