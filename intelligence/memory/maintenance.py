"""The periodic pattern job: merge near-duplicate patterns, split patterns grown too wide.

Online assignment is order-dependent: two patterns can start for one kind of prompt before their
centroids drift together, and a pattern can slowly absorb two kinds. Ids stay meaningful:

* a merge keeps the larger pattern's id; the smaller one keeps its row with ``redirect_to`` set
  (queries follow it), and its members, rollups and usage move to the survivor;
* a split keeps the id on the larger part and gives the smaller part a new pattern.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from intelligence.memory.assign import MemoryConfig, example, unit
from intelligence.memory.labels import heuristic_label
from intelligence.memory.repository import PatternRepository

log = logging.getLogger(__name__)

_CHUNK = 1024  # rows of the centroid similarity matrix computed at once (bounded memory)


@dataclass
class MaintenanceReport:
    merged: list[tuple[int, int]] = field(default_factory=list)  # (merged-away id, surviving id)
    split: list[tuple[int, int]] = field(default_factory=list)  # (kept id, new id)


def spread_of(vectors: np.ndarray) -> tuple[np.ndarray, float, float, np.ndarray]:
    """(mean vector, mean and max cosine distance to it, per-member similarity)."""
    mean = vectors.mean(axis=0)
    sims = vectors @ unit(mean)
    return mean, float(1.0 - sims.mean()), float(1.0 - sims.min()), sims


def two_means(vectors: np.ndarray, iterations: int = 10) -> np.ndarray:
    """Spherical 2-means seeded with two far-apart members (deterministic); returns 0/1 labels."""
    far = int(np.argmin(vectors @ unit(vectors.mean(axis=0))))
    other = int(np.argmin(vectors @ vectors[far]))
    centres = np.stack([vectors[far], vectors[other]])
    labels = (vectors @ centres.T).argmax(axis=1)
    for _ in range(iterations):
        if labels.min() == labels.max():
            break
        centres = np.stack([unit(vectors[labels == k].mean(axis=0)) for k in (0, 1)])
        new = (vectors @ centres.T).argmax(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def near_duplicate_pairs(
    ids: list[int], centroids: np.ndarray, dirty: set[int], threshold: float
) -> list[tuple[float, int, int]]:
    """(similarity, i, j) index pairs with cosine >= threshold where at least one side is dirty."""
    if len(ids) < 2:
        return []
    unit_rows = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    rows = [i for i, pid in enumerate(ids) if pid in dirty]
    pairs: dict[tuple[int, int], float] = {}
    for start in range(0, len(rows), _CHUNK):
        block = rows[start : start + _CHUNK]
        sims = unit_rows[block] @ unit_rows.T
        for bi, i in enumerate(block):
            sims[bi, i] = -1.0
            for j in np.nonzero(sims[bi] >= threshold)[0]:
                key = (min(i, int(j)), max(i, int(j)))
                pairs[key] = float(sims[bi, j])
    return sorted(((s, i, j) for (i, j), s in pairs.items()), key=lambda t: (-t[0], t[1], t[2]))


class PatternMaintenance:
    def __init__(self, engine: AsyncEngine, config: MemoryConfig | None = None) -> None:
        self.config = config or MemoryConfig()
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._last_run: datetime | None = None

    async def run(self) -> MaintenanceReport:
        """Merge then split, looking only at patterns changed since the previous run (all, the first time)."""
        report = MaintenanceReport()
        async with self._sessions() as session, session.begin():
            started = await _db_now(session)
            await self._merge(PatternRepository(session), report)
        async with self._sessions() as session:
            ids = await PatternRepository(session).wide_patterns(
                self.config.split_min_members, self.config.split_max_spread, updated_since=self._last_run
            )
        for pattern_id in ids:
            async with self._sessions() as session, session.begin():
                new_id = await self._split(PatternRepository(session), pattern_id)
            if new_id is not None:
                report.split.append((pattern_id, new_id))
        self._last_run = started
        if report.merged or report.split:
            log.info("pattern maintenance: %d merged, %d split", len(report.merged), len(report.split))
        return report

    async def _merge(self, repo: PatternRepository, report: MaintenanceReport) -> None:
        live = await repo.live_patterns()
        if len(live) < 2:
            return
        dirty = {pid for pid, _, _ in await repo.live_patterns(updated_since=self._last_run)} if self._last_run else None
        ids = [pid for pid, _, _ in live]
        centroids = np.stack([c for _, c, _ in live])
        counts = {pid: n for pid, _, n in live}
        vectors = {pid: c for pid, c, _ in live}
        used: set[int] = set()
        for _sim, i, j in near_duplicate_pairs(
            ids, centroids, dirty if dirty is not None else set(ids), self.config.merge_threshold
        ):
            a, b = ids[i], ids[j]
            if a in used or b in used:
                continue  # one merge per pattern per run: the survivor's centroid has moved
            used.update((a, b))
            winner, loser = (a, b) if (counts[a], -a) >= (counts[b], -b) else (b, a)
            await self._fold(repo, winner, loser, vectors, counts)
            report.merged.append((loser, winner))

    async def _fold(
        self, repo: PatternRepository, winner: int, loser: int, vectors: dict[int, np.ndarray], counts: dict[int, int]
    ) -> None:
        w, lo = await repo.pattern_row(winner), await repo.pattern_row(loser)
        assert w is not None and lo is not None
        n_w, n_l = max(counts[winner], 0), max(counts[loser], 0)
        total = max(n_w + n_l, 1)
        centroid = (vectors[winner] * n_w + vectors[loser] * n_l) / total if n_w + n_l else vectors[winner]
        examples = sorted(w.examples + lo.examples, key=lambda e: -float(e.get("similarity", 0.0)))[: self.config.max_examples]
        await repo.redirect(loser, winner)
        await repo.update_pattern(
            winner,
            centroid=centroid.astype(np.float32),
            member_count=n_w + n_l,
            examples=examples,
            spread=(w.spread * n_w + lo.spread * n_l) / total,
            radius=max(w.radius, lo.radius),
            seen_at=lo.last_seen,
            first_seen=lo.first_seen,
            label=heuristic_label(e["text"] for e in examples),
        )

    async def _split(self, repo: PatternRepository, pattern_id: int) -> int | None:
        cfg = self.config
        request_ids, vectors, texts = await repo.members(pattern_id)
        if len(request_ids) < cfg.split_min_members:
            return None
        _, spread, _, _ = spread_of(vectors)
        labels = two_means(vectors)
        sizes = [int((labels == k).sum()) for k in (0, 1)]
        if min(sizes) < cfg.split_min_part:
            return None
        parts = [spread_of(vectors[labels == k]) for k in (0, 1)]
        if max(p[1] for p in parts) > spread - cfg.split_min_gain:
            return None
        if float(unit(parts[0][0]) @ unit(parts[1][0])) >= cfg.merge_threshold:
            return None
        keep, new = (0, 1) if sizes[0] >= sizes[1] else (1, 0)
        texts_arr = np.array([t or "" for t in texts], dtype=object)
        ids_arr = np.array(request_ids, dtype=object)

        def part_state(k: int) -> tuple[np.ndarray, float, float, list[dict], str, list[str]]:
            mask = labels == k
            mean, part_spread, part_radius, sims = parts[k]
            order = np.argsort(-sims)[: cfg.max_examples]
            members, member_texts = ids_arr[mask], texts_arr[mask]
            examples = [example(str(members[i]), str(member_texts[i]), float(sims[i])) for i in order]
            return mean, part_spread, part_radius, examples, heuristic_label(member_texts[:200]), list(members)

        mean_k, spread_k, radius_k, examples_k, label_k, _ = part_state(keep)
        mean_n, spread_n, radius_n, examples_n, label_n, members_n = part_state(new)
        span = await repo.member_span(pattern_id)
        assert span is not None
        new_id = await repo.create_pattern(
            mean_n.astype(np.float32),
            seen_at=span[0],
            label=label_n,
            examples=examples_n,
            member_count=sizes[new],
            spread=spread_n,
            radius=radius_n,
        )
        await repo.move_members(members_n, new_id)
        await repo.update_pattern(
            pattern_id,
            centroid=mean_k.astype(np.float32),
            member_count=sizes[keep],
            examples=examples_k,
            spread=spread_k,
            radius=radius_k,
            label=label_k,
        )
        for pid in (pattern_id, new_id):
            first, last = await repo.member_span(pid) or span
            await repo.set_span(pid, first, last)
        await repo.rebuild_rollups([pattern_id, new_id])
        return new_id


async def _db_now(session: AsyncSession) -> datetime:
    # the database clock, so "changed since the last run" compares like with like (updated_at = now())
    return (await session.execute(text("SELECT now()"))).scalar_one()
