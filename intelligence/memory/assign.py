"""Online pattern formation: a prompt joins the nearest pattern if it is similar enough, or starts one.

This is the only place that decides membership as prompts arrive; the background worker and
``llmproxy eval patterns`` both call :meth:`PatternAssigner.assign`. The thresholds and the
measurement behind their defaults are in docs/patterns.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from intelligence.memory.labels import heuristic_label
from intelligence.memory.repository import PatternRepository, PatternState

EXAMPLE_CHARS = 300


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

    async def assign(
        self, repo: PatternRepository, vector: np.ndarray, *, request_id: str, text: str, seen_at: datetime
    ) -> Assignment:
        """Put one embedded prompt into a pattern, updating the pattern's running state.

        The centroid is the running mean of member embeddings (cosine ignores its length), the
        spread the running mean of member distances to it, the radius the largest such distance.
        """
        cfg = self.config
        nearest = await repo.nearest_patterns(vector, k=1, ef_search=cfg.ef_search)
        if nearest and nearest[0].similarity >= cfg.join_threshold:
            return await self._join(repo, nearest[0], vector, request_id=request_id, text=text, seen_at=seen_at)
        pattern_id = await repo.create_pattern(
            vector, seen_at=seen_at, label=heuristic_label([text]), examples=[example(request_id, text, 1.0)]
        )
        return Assignment(pattern_id=pattern_id, similarity=1.0, created=True)

    async def _join(
        self, repo: PatternRepository, p: PatternState, vector: np.ndarray, *, request_id: str, text: str, seen_at: datetime
    ) -> Assignment:
        n = p.member_count + 1
        centroid = p.centroid + (vector - p.centroid) / n
        distance = 1.0 - p.similarity
        examples = keep_examples(p.examples, example(request_id, text, p.similarity), self.config.max_examples)
        label = heuristic_label(e["text"] for e in examples) if examples != p.examples else None
        await repo.update_pattern(
            p.id, centroid=centroid.astype(np.float32), member_count=n, examples=examples,
            spread=p.spread + (distance - p.spread) / n, radius=max(p.radius, distance), seen_at=seen_at, label=label,
        )
        return Assignment(pattern_id=p.id, similarity=p.similarity, created=False)
