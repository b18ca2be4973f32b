"""All SQL of pattern memory. Like the request log's repositories it never commits: the caller
owns the transaction (``async with session.begin(): ...``).

Vectors go in and come out as float32 numpy arrays. Nearest-neighbour queries are written as
``ORDER BY <column> <=> CAST(:v AS real[])::vector LIMIT k`` so that the HNSW (vector_cosine_ops) indexes serve them;
cosine similarity is ``1 - distance``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import REAL, Text, bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from intelligence.memory.models import (
    EMBEDDING_DIM,
    SIGNAL_KINDS,
    ExchangeEmbedding,
    Feedback,
    OutcomeSignal,
    Pattern,
    PatternCount,
    PatternUsage,
)
from intelligence.store.models import Exchange
from intelligence.store.sanitize import clean_optional_text, clean_text

_EMB = ExchangeEmbedding.__table__
_PAT = Pattern.__table__
_COUNTS = PatternCount.__table__
_USAGE = PatternUsage.__table__
_SIGNALS = OutcomeSignal.__table__
_FEEDBACK = Feedback.__table__
_EXCH = Exchange.__table__

_MAX_REDIRECT_HOPS = 32  # merges re-point old redirects, so real chains are one hop long


def _vec_param(name: str = "v") -> Any:
    # Sent as real[] and cast in SQL: asyncpg encodes a float array in binary, which is several
    # times cheaper than pgvector's text literal for 384 floats.
    return bindparam(name, type_=ARRAY(REAL))


def vec_arg(vector: np.ndarray | None) -> list[float] | None:
    return None if vector is None else np.asarray(vector, dtype=np.float32).tolist()


def as_vector(value: Any) -> np.ndarray:
    """A float32 array from whatever the driver returned (raw text from ``text()`` queries)."""
    if isinstance(value, str):
        value = np.fromstring(value.strip("[]"), dtype=np.float32, sep=",")
    return np.asarray(value, dtype=np.float32)


def utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def hour_bucket(dt: datetime) -> datetime:
    return utc(dt).replace(minute=0, second=0, microsecond=0)


def day_bucket(dt: datetime) -> datetime:
    return utc(dt).replace(hour=0, minute=0, second=0, microsecond=0)


# ---------------------------------------------------------------------------------------------
# value types


@dataclass(frozen=True, slots=True)
class PendingExchange:
    """What the worker needs of an exchange not yet embedded."""

    request_id: str
    started_at: datetime
    client_key_fp: str | None
    model: str | None
    status: int | None
    error: str | None
    finish_reason: str | None
    tool_args_invalid: int
    prompt_user: str | None
    prompt_system: str | None
    tool_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PatternState:
    """A live pattern as the assignment step reads and rewrites it."""

    id: int
    similarity: float  # of the query vector to the centroid
    centroid: np.ndarray
    member_count: int
    examples: list[dict[str, Any]]
    spread: float
    radius: float
    label: str
    label_source: str


@dataclass(frozen=True, slots=True)
class PatternUpdate:
    """New running state of a pattern; ``label`` None keeps the current label."""

    id: int
    centroid: np.ndarray
    member_count: int
    examples: list[dict[str, Any]]
    spread: float
    radius: float
    last_seen: datetime | None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class PatternSummary:
    id: int
    label: str
    label_source: str
    member_count: int
    first_seen: datetime
    last_seen: datetime
    examples: list[dict[str, Any]]
    spread: float
    radius: float


@dataclass(frozen=True, slots=True)
class SimilarPrompt:
    request_id: str
    similarity: float
    pattern_id: int | None
    text: str | None  # the exchange's last user turn
    model: str | None
    client_key_fp: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PatternStat:
    """One row of a top-patterns list. ``score`` is what the list is ordered by."""

    pattern_id: int
    label: str
    total: int
    failed: int = 0
    recent: int = 0
    previous: int = 0
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class TimePoint:
    bucket: datetime
    n: int
    failed: int


@dataclass(frozen=True, slots=True)
class SignalCount:
    failed: int = 0
    ok: int = 0


@dataclass(frozen=True, slots=True)
class SuccessRate:
    """Share of a pattern's exchanges without any failing signal, and the evidence per kind."""

    pattern_id: int
    total: int
    failed: int
    by_kind: dict[str, SignalCount] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        return None if self.total == 0 else (self.total - self.failed) / self.total


@dataclass(frozen=True, slots=True)
class Signal:
    request_id: str
    kind: str
    ok: bool
    value: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingRow:
    request_id: str
    embedding: np.ndarray | None
    canonical_hash: str
    pattern_id: int | None
    similarity: float | None
    client_key_fp: str | None
    model: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PatternUsageSummary:
    models: list[tuple[str, int]]
    clients: list[tuple[str, int]]


# ---------------------------------------------------------------------------------------------
# SQL text (kept here so EXPLAIN tests see exactly what runs)

NEAREST_PATTERNS_SQL = text(
    "SELECT id, 1 - (centroid <=> CAST(:v AS real[])::vector) AS similarity, centroid, member_count, examples, spread, radius, "
    "label, label_source FROM patterns WHERE centroid IS NOT NULL ORDER BY centroid <=> CAST(:v AS real[])::vector LIMIT :k"
).bindparams(_vec_param())

SIMILAR_EXCHANGES_SQL = text(
    "SELECT n.request_id, n.similarity, n.pattern_id, x.prompt_user, n.model, n.client_key_fp, n.created_at "
    "FROM (SELECT request_id, 1 - (embedding <=> CAST(:v AS real[])::vector) AS similarity, embedding <=> CAST(:v AS real[])::vector AS distance, pattern_id, "
    "      model, client_key_fp, created_at FROM exchange_embeddings WHERE embedding IS NOT NULL "
    "      ORDER BY embedding <=> CAST(:v AS real[])::vector LIMIT :k) AS n "
    "JOIN exchanges x ON x.request_id = n.request_id ORDER BY n.distance"
).bindparams(_vec_param())

# The client's recent rows are few: a materialized CTE makes the planner scan them by
# (client_key_fp, created_at) instead of walking the HNSW index and filtering (which can miss).
RECENT_FROM_CLIENT_SQL = text(
    "WITH recent AS MATERIALIZED ("
    "  SELECT request_id, embedding, canonical_hash, created_at FROM exchange_embeddings "
    "  WHERE client_key_fp = :client AND created_at >= :lo AND created_at <= :hi AND request_id <> :rid) "
    "SELECT request_id, created_at, canonical_hash = :hash AS same_hash, "
    "       coalesce(1 - (embedding <=> CAST(:v AS real[])::vector), 0) AS similarity "
    "FROM recent ORDER BY same_hash DESC, embedding <=> CAST(:v AS real[])::vector NULLS LAST, created_at DESC LIMIT 1"
).bindparams(_vec_param())


UPDATE_PATTERN_SQL = text(
    "UPDATE patterns SET centroid = CAST(:centroid AS real[])::vector, member_count = :member_count, "
    "examples = :examples, spread = :spread, radius = :radius, "
    "last_seen = greatest(last_seen, CAST(:last_seen AS timestamptz)), "
    "label = CASE WHEN label_source = 'heuristic' THEN coalesce(CAST(:label AS text), label) ELSE label END, "
    "updated_at = now() WHERE id = :id"
).bindparams(bindparam("centroid", type_=ARRAY(REAL)), bindparam("examples", type_=JSONB))

INSERT_EMBEDDING_SQL = text(
    "INSERT INTO exchange_embeddings (request_id, embedding, canonical_hash, pattern_id, similarity, client_key_fp, "
    "model, created_at) VALUES (:request_id, CAST(:embedding AS real[])::vector, :canonical_hash, :pattern_id, "
    ":similarity, :client_key_fp, :model, :created_at) ON CONFLICT (request_id) DO NOTHING"
).bindparams(bindparam("embedding", type_=ARRAY(REAL)))


class PatternRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # ----------------------------------------------------------------------------- worker input

    async def pending_exchanges(
        self, limit: int, since: datetime | None = None, exclude: Iterable[str] = ()
    ) -> list[PendingExchange]:
        """Exchanges with no embedding row yet, oldest first; ``since`` bounds the scan (see worker)."""
        e = _EXCH.c
        stmt = (
            select(
                e.request_id,
                e.started_at,
                e.client_key_fp,
                e.model,
                e.status,
                e.error,
                e.finish_reason,
                e.tool_args_invalid,
                e.prompt_user,
                e.prompt_system,
                e.tool_names,
            )
            .where(~select(_EMB.c.request_id).where(_EMB.c.request_id == e.request_id).exists())
            .order_by(e.started_at, e.request_id)
            .limit(limit)
        )
        if since is not None:
            stmt = stmt.where(e.started_at >= since)
        skipped = list(exclude)
        if skipped:
            stmt = stmt.where(e.request_id.not_in(skipped))
        rows = (await self._session.execute(stmt)).all()
        return [
            PendingExchange(
                request_id=r.request_id,
                started_at=r.started_at,
                client_key_fp=r.client_key_fp,
                model=r.model,
                status=r.status,
                error=r.error,
                finish_reason=r.finish_reason,
                tool_args_invalid=r.tool_args_invalid or 0,
                prompt_user=r.prompt_user,
                prompt_system=r.prompt_system,
                tool_names=tuple(r.tool_names or ()),
            )
            for r in rows
        ]

    # ----------------------------------------------------------------------------- patterns: write

    async def nearest_patterns(self, vector: np.ndarray, k: int = 1, ef_search: int | None = None) -> list[PatternState]:
        """The k live patterns whose centroids are nearest ``vector`` (HNSW), nearest first."""
        await self.set_ef_search(ef_search)
        rows = (await self._session.execute(NEAREST_PATTERNS_SQL, {"v": vec_arg(vector), "k": k})).all()
        return [
            PatternState(
                id=r.id,
                similarity=float(r.similarity),
                centroid=as_vector(r.centroid),
                member_count=r.member_count,
                examples=list(r.examples or []),
                spread=r.spread,
                radius=r.radius,
                label=r.label,
                label_source=r.label_source,
            )
            for r in rows
        ]

    async def create_pattern(
        self,
        centroid: np.ndarray,
        *,
        seen_at: datetime,
        label: str,
        examples: list[dict[str, Any]],
        member_count: int = 1,
        spread: float = 0.0,
        radius: float = 0.0,
    ) -> int:
        stmt = (
            pg_insert(_PAT)
            .values(
                centroid=centroid,
                label=label,
                label_source="heuristic",
                examples=examples,
                member_count=member_count,
                first_seen=seen_at,
                last_seen=seen_at,
                spread=spread,
                radius=radius,
            )
            .returning(_PAT.c.id)
        )
        return int((await self._session.execute(stmt)).scalar_one())

    async def update_pattern(
        self,
        pattern_id: int,
        *,
        centroid: np.ndarray,
        member_count: int,
        examples: list[dict[str, Any]],
        spread: float,
        radius: float,
        seen_at: datetime | None = None,
        label: str | None = None,
        first_seen: datetime | None = None,
    ) -> None:
        """Rewrite a pattern's running state. A heuristic ``label`` never replaces a Claude-written one."""
        values: dict[str, Any] = dict(
            centroid=centroid,
            member_count=member_count,
            examples=examples,
            spread=spread,
            radius=radius,
            updated_at=func.now(),
        )
        if seen_at is not None:
            values["last_seen"] = func.greatest(_PAT.c.last_seen, seen_at)
        if first_seen is not None:
            values["first_seen"] = func.least(_PAT.c.first_seen, first_seen)
        await self._session.execute(update(_PAT).where(_PAT.c.id == pattern_id).values(**values))
        if label is not None:
            await self._session.execute(
                update(_PAT).where(_PAT.c.id == pattern_id, _PAT.c.label_source == "heuristic").values(label=label)
            )

    async def update_patterns(self, updates: Sequence[PatternUpdate]) -> None:
        """Write the running state of several patterns at once (the assignment batch's flush)."""
        if not updates:
            return
        await self._session.execute(
            UPDATE_PATTERN_SQL,
            [
                {
                    "id": u.id,
                    "centroid": vec_arg(u.centroid),
                    "member_count": u.member_count,
                    "examples": u.examples,
                    "spread": float(u.spread),
                    "radius": float(u.radius),
                    "last_seen": u.last_seen,
                    "label": u.label,
                }
                for u in updates
            ],
        )

    async def set_label(self, pattern_id: int, label: str, source: str = "claude") -> None:
        """Set a label (the Claude integration calls this with source='claude')."""
        pattern_id = await self.resolve(pattern_id)
        await self._session.execute(
            update(_PAT).where(_PAT.c.id == pattern_id).values(label=clean_text(label), label_source=source)
        )

    async def insert_embeddings(self, rows: Sequence[EmbeddingRow]) -> None:
        """Store exchanges' embeddings; rows already stored are left alone."""
        if not rows:
            return
        await self._session.execute(
            INSERT_EMBEDDING_SQL,
            [
                {
                    "request_id": r.request_id,
                    "embedding": vec_arg(r.embedding),
                    "canonical_hash": r.canonical_hash,
                    "pattern_id": r.pattern_id,
                    "similarity": r.similarity,
                    "client_key_fp": r.client_key_fp,
                    "model": r.model,
                    "created_at": r.created_at,
                }
                for r in rows
            ],
        )

    async def add_counts(self, counts: dict[tuple[int, str, datetime], int]) -> None:
        """Add to the hourly/daily rollups: ``{(pattern_id, 'hour'|'day', bucket): n}``."""
        if not counts:
            return
        stmt = pg_insert(_COUNTS)
        stmt = stmt.on_conflict_do_update(
            index_elements=["pattern_id", "granularity", "bucket"], set_={"n": _COUNTS.c.n + stmt.excluded.n}
        )
        rows = [{"pattern_id": p, "granularity": g, "bucket": b, "n": n} for (p, g, b), n in sorted(counts.items())]
        await self._session.execute(stmt, rows)

    async def add_usage(self, usage: dict[tuple[int, str, str], tuple[int, datetime]]) -> None:
        """Add to model/client usage: ``{(pattern_id, 'model'|'client', value): (n, last_seen)}``."""
        if not usage:
            return
        stmt = pg_insert(_USAGE)
        stmt = stmt.on_conflict_do_update(
            index_elements=["pattern_id", "dimension", "value"],
            set_={"n": _USAGE.c.n + stmt.excluded.n, "last_seen": func.greatest(_USAGE.c.last_seen, stmt.excluded.last_seen)},
        )
        rows = [
            {"pattern_id": p, "dimension": d, "value": clean_text(v), "n": n, "last_seen": seen}
            for (p, d, v), (n, seen) in sorted(usage.items())
        ]
        await self._session.execute(stmt, rows)

    async def add_signals(self, signals: Sequence[Signal]) -> None:
        """Store signals; a second non-feedback signal of the same kind for a request is ignored."""
        plain = [s for s in signals if s.kind != "feedback"]
        feedback = [s for s in signals if s.kind == "feedback"]
        for s in signals:
            if s.kind not in SIGNAL_KINDS:
                raise ValueError(f"unknown signal kind {s.kind!r}")

        def rows(items: Sequence[Signal]) -> list[dict[str, Any]]:
            return [
                {
                    "request_id": s.request_id,
                    "kind": s.kind,
                    "ok": s.ok,
                    "value": clean_optional_text(s.value),
                    "detail": clean_optional_text(s.detail),
                }
                for s in items
            ]

        if plain:
            stmt = pg_insert(_SIGNALS).on_conflict_do_nothing(
                index_elements=["request_id", "kind"], index_where=text("kind <> 'feedback'")
            )
            await self._session.execute(stmt, rows(plain))
        if feedback:
            await self._session.execute(pg_insert(_SIGNALS), rows(feedback))

    async def add_feedback(
        self, request_id: str, *, score: float | None, thumbs: str | None, comment: str | None, ok: bool
    ) -> int:
        """Store feedback as posted and as a 'feedback' signal; returns the feedback id."""
        fid = (
            await self._session.execute(
                pg_insert(_FEEDBACK)
                .values(request_id=clean_text(request_id), score=score, thumbs=thumbs, comment=clean_optional_text(comment))
                .returning(_FEEDBACK.c.id)
            )
        ).scalar_one()
        value = thumbs if thumbs is not None else f"{score:g}"
        await self.add_signals([Signal(request_id, "feedback", ok, value=value, detail=comment)])
        return int(fid)

    async def recent_from_client(
        self,
        client_key_fp: str,
        vector: np.ndarray | None,
        canonical_hash: str,
        *,
        request_id: str,
        since: datetime,
        until: datetime,
    ) -> tuple[str, float, datetime] | None:
        """The client's exchange in [since, until] most like this prompt: (request_id, similarity, started_at).

        An identical canonical text counts as similarity 1 even when nothing was embedded.
        """
        params = {
            "client": client_key_fp,
            "lo": since,
            "hi": until,
            "rid": request_id,
            "hash": canonical_hash,
            "v": vec_arg(vector if vector is not None else np.zeros(EMBEDDING_DIM, dtype=np.float32)),
        }
        row = (await self._session.execute(RECENT_FROM_CLIENT_SQL, params)).first()
        if row is None:
            return None
        similarity = 1.0 if row.same_hash else (float(row.similarity) if vector is not None else 0.0)
        return row.request_id, similarity, row.created_at

    # ----------------------------------------------------------------------------- maintenance

    async def live_patterns(self, updated_since: datetime | None = None) -> list[tuple[int, np.ndarray, int]]:
        """(id, centroid, member_count) of patterns not redirected, optionally only those updated since."""
        stmt = select(_PAT.c.id, _PAT.c.centroid, _PAT.c.member_count).where(_PAT.c.centroid.is_not(None))
        if updated_since is not None:
            stmt = stmt.where(_PAT.c.updated_at >= updated_since)
        rows = (await self._session.execute(stmt.order_by(_PAT.c.id))).all()
        return [(r.id, as_vector(r.centroid), r.member_count) for r in rows]

    async def wide_patterns(self, min_members: int, min_spread: float, updated_since: datetime | None = None) -> list[int]:
        """Live patterns big and wide enough to be split candidates, widest first."""
        stmt = select(_PAT.c.id).where(
            _PAT.c.centroid.is_not(None), _PAT.c.member_count >= min_members, _PAT.c.spread > min_spread
        )
        if updated_since is not None:
            stmt = stmt.where(_PAT.c.updated_at >= updated_since)
        return [r.id for r in await self._session.execute(stmt.order_by(_PAT.c.spread.desc(), _PAT.c.id))]

    async def members(self, pattern_id: int) -> tuple[list[str], np.ndarray, list[str | None]]:
        """Request ids, embeddings and user texts of a pattern's embedded members."""
        rows = (
            await self._session.execute(
                select(_EMB.c.request_id, _EMB.c.embedding, _EXCH.c.prompt_user)
                .join(_EXCH, _EXCH.c.request_id == _EMB.c.request_id)
                .where(_EMB.c.pattern_id == pattern_id, _EMB.c.embedding.is_not(None))
                .order_by(_EMB.c.created_at, _EMB.c.request_id)
            )
        ).all()
        if not rows:
            return [], np.zeros((0, EMBEDDING_DIM), dtype=np.float32), []
        return [r.request_id for r in rows], np.stack([as_vector(r.embedding) for r in rows]), [r.prompt_user for r in rows]

    async def pattern_row(self, pattern_id: int) -> PatternSummary | None:
        r = (await self._session.execute(select(_PAT).where(_PAT.c.id == pattern_id))).first()
        if r is None:
            return None
        return PatternSummary(
            id=r.id,
            label=r.label,
            label_source=r.label_source,
            member_count=r.member_count,
            first_seen=r.first_seen,
            last_seen=r.last_seen,
            examples=list(r.examples or []),
            spread=r.spread,
            radius=r.radius,
        )

    async def redirect(self, loser: int, winner: int) -> None:
        """Fold ``loser`` into ``winner``: members, rollups and usage move; loser keeps a redirect."""
        await self._session.execute(update(_EMB).where(_EMB.c.pattern_id == loser).values(pattern_id=winner))
        await self._session.execute(
            text(
                "INSERT INTO pattern_counts (pattern_id, granularity, bucket, n) "
                "SELECT :w, granularity, bucket, n FROM pattern_counts WHERE pattern_id = :l "
                "ON CONFLICT (pattern_id, granularity, bucket) DO UPDATE SET n = pattern_counts.n + excluded.n"
            ),
            {"w": winner, "l": loser},
        )
        await self._session.execute(
            text(
                "INSERT INTO pattern_usage (pattern_id, dimension, value, n, last_seen) "
                "SELECT :w, dimension, value, n, last_seen FROM pattern_usage WHERE pattern_id = :l "
                "ON CONFLICT (pattern_id, dimension, value) DO UPDATE SET n = pattern_usage.n + excluded.n, "
                "last_seen = greatest(pattern_usage.last_seen, excluded.last_seen)"
            ),
            {"w": winner, "l": loser},
        )
        await self._session.execute(delete(_COUNTS).where(_COUNTS.c.pattern_id == loser))
        await self._session.execute(delete(_USAGE).where(_USAGE.c.pattern_id == loser))
        await self._session.execute(update(_PAT).where(_PAT.c.redirect_to == loser).values(redirect_to=winner))
        await self._session.execute(
            update(_PAT)
            .where(_PAT.c.id == loser)
            .values(redirect_to=winner, centroid=None, member_count=0, updated_at=func.now())
        )

    async def move_members(self, request_ids: Sequence[str], pattern_id: int) -> None:
        if request_ids:
            await self._session.execute(
                update(_EMB).where(_EMB.c.request_id.in_(list(request_ids))).values(pattern_id=pattern_id)
            )

    async def rebuild_rollups(self, pattern_ids: Iterable[int]) -> None:
        """Recount rollups and usage of these patterns from their members (after a split)."""
        ids = sorted(set(pattern_ids))
        if not ids:
            return
        param = bindparam("ids", type_=ARRAY(_PAT.c.id.type))
        await self._session.execute(delete(_COUNTS).where(_COUNTS.c.pattern_id.in_(ids)))
        await self._session.execute(delete(_USAGE).where(_USAGE.c.pattern_id.in_(ids)))
        for granularity in ("hour", "day"):
            await self._session.execute(
                text(
                    "INSERT INTO pattern_counts (pattern_id, granularity, bucket, n) "
                    f"SELECT pattern_id, '{granularity}', "
                    f"date_trunc('{granularity}', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', count(*) "
                    "FROM exchange_embeddings WHERE pattern_id = ANY(:ids) GROUP BY 1, 3"
                ).bindparams(param),
                {"ids": ids},
            )
        for dimension, column in (("model", "model"), ("client", "client_key_fp")):
            await self._session.execute(
                text(
                    "INSERT INTO pattern_usage (pattern_id, dimension, value, n, last_seen) "
                    f"SELECT pattern_id, '{dimension}', {column}, count(*), max(created_at) "
                    f"FROM exchange_embeddings WHERE pattern_id = ANY(:ids) AND {column} IS NOT NULL GROUP BY 1, 3"
                ).bindparams(param),
                {"ids": ids},
            )

    async def member_span(self, pattern_id: int) -> tuple[datetime, datetime] | None:
        row = (
            await self._session.execute(
                select(func.min(_EMB.c.created_at), func.max(_EMB.c.created_at)).where(_EMB.c.pattern_id == pattern_id)
            )
        ).first()
        return None if row is None or row[0] is None else (row[0], row[1])

    async def set_span(self, pattern_id: int, first_seen: datetime, last_seen: datetime) -> None:
        await self._session.execute(
            update(_PAT).where(_PAT.c.id == pattern_id).values(first_seen=first_seen, last_seen=last_seen)
        )

    # ----------------------------------------------------------------------------- queries

    async def resolve(self, pattern_id: int) -> int:
        """The live id a (possibly merged-away) pattern id now stands for."""
        current = pattern_id
        for _ in range(_MAX_REDIRECT_HOPS):
            nxt = (await self._session.execute(select(_PAT.c.redirect_to).where(_PAT.c.id == current))).scalar_one_or_none()
            if nxt is None:
                return current
            current = nxt
        return current

    async def get_pattern(self, pattern_id: int) -> PatternSummary | None:
        """The pattern, following redirects left by merges."""
        return await self.pattern_row(await self.resolve(pattern_id))

    async def pattern_for_request(self, request_id: str) -> PatternSummary | None:
        pid = (await self._session.execute(select(_EMB.c.pattern_id).where(_EMB.c.request_id == request_id))).scalar_one_or_none()
        return None if pid is None else await self.get_pattern(pid)

    async def pattern_id_for_hash(self, canonical_hash: str) -> int | None:
        """The pattern an identical canonical prompt joined before (newest), if any."""
        return (
            await self._session.execute(
                select(_EMB.c.pattern_id)
                .where(_EMB.c.canonical_hash == canonical_hash, _EMB.c.pattern_id.is_not(None))
                .order_by(_EMB.c.created_at.desc())
                .limit(1)
            )
        ).scalar_one_or_none()

    async def similar_to_vector(self, vector: np.ndarray, k: int = 10, ef_search: int | None = None) -> list[SimilarPrompt]:
        """The k stored prompts nearest ``vector`` (HNSW), nearest first."""
        await self.set_ef_search(ef_search)
        rows = (await self._session.execute(SIMILAR_EXCHANGES_SQL, {"v": vec_arg(vector), "k": k})).all()
        return [
            SimilarPrompt(
                request_id=r.request_id,
                similarity=float(r.similarity),
                pattern_id=r.pattern_id,
                text=r.prompt_user,
                model=r.model,
                client_key_fp=r.client_key_fp,
                created_at=r.created_at,
            )
            for r in rows
        ]

    async def similar_to_request(self, request_id: str, k: int = 10) -> list[SimilarPrompt]:
        """Prompts nearest a stored exchange's prompt, the exchange itself excluded."""
        vec = (await self._session.execute(select(_EMB.c.embedding).where(_EMB.c.request_id == request_id))).scalar_one_or_none()
        if vec is None:
            return []
        hits = await self.similar_to_vector(as_vector(vec), k + 1)
        return [h for h in hits if h.request_id != request_id][:k]

    async def pattern_usage(self, pattern_id: int, limit: int = 10) -> PatternUsageSummary:
        pattern_id = await self.resolve(pattern_id)
        rows = (
            await self._session.execute(
                select(_USAGE.c.dimension, _USAGE.c.value, _USAGE.c.n)
                .where(_USAGE.c.pattern_id == pattern_id)
                .order_by(_USAGE.c.n.desc(), _USAGE.c.value)
            )
        ).all()
        models = [(r.value, r.n) for r in rows if r.dimension == "model"][:limit]
        clients = [(r.value, r.n) for r in rows if r.dimension == "client"][:limit]
        return PatternUsageSummary(models=models, clients=clients)

    async def top_by_volume(self, since: datetime | None = None, limit: int = 10) -> list[PatternStat]:
        """Patterns with the most exchanges since ``since`` (from the hourly rollup), or ever."""
        if since is None:
            rows = (
                await self._session.execute(
                    select(_PAT.c.id, _PAT.c.label, _PAT.c.member_count.label("n"))
                    .where(_PAT.c.centroid.is_not(None), _PAT.c.member_count > 0)
                    .order_by(_PAT.c.member_count.desc(), _PAT.c.id)
                    .limit(limit)
                )
            ).all()
        else:
            rows = (
                await self._session.execute(
                    text(
                        "SELECT p.id, p.label, sum(c.n) AS n FROM pattern_counts c JOIN patterns p ON p.id = c.pattern_id "
                        "WHERE c.granularity = 'hour' AND c.bucket >= :since GROUP BY p.id, p.label "
                        "ORDER BY n DESC, p.id LIMIT :limit"
                    ),
                    {"since": hour_bucket(since), "limit": limit},
                )
            ).all()
        return [PatternStat(pattern_id=r.id, label=r.label, total=int(r.n), score=float(r.n)) for r in rows]

    async def top_by_failure_rate(self, since: datetime | None = None, limit: int = 10, min_count: int = 5) -> list[PatternStat]:
        """Patterns whose exchanges (at least ``min_count``) most often carry a failing signal."""
        rows = (
            await self._session.execute(
                text(
                    "WITH m AS (SELECT pattern_id, request_id FROM exchange_embeddings "
                    "           WHERE pattern_id IS NOT NULL AND (CAST(:since AS timestamptz) IS NULL OR created_at >= :since)), "
                    "f AS (SELECT DISTINCT s.request_id FROM outcome_signals s JOIN m ON m.request_id = s.request_id "
                    "      WHERE NOT s.ok) "
                    "SELECT m.pattern_id, p.label, count(*) AS total, count(f.request_id) AS failed "
                    "FROM m LEFT JOIN f ON f.request_id = m.request_id JOIN patterns p ON p.id = m.pattern_id "
                    "GROUP BY m.pattern_id, p.label HAVING count(*) >= :min_count "
                    "ORDER BY count(f.request_id)::float / count(*) DESC, count(f.request_id) DESC, m.pattern_id "
                    "LIMIT :limit"
                ),
                {"since": since, "min_count": min_count, "limit": limit},
            )
        ).all()
        return [
            PatternStat(pattern_id=r.pattern_id, label=r.label, total=r.total, failed=r.failed, score=r.failed / r.total)
            for r in rows
        ]

    async def top_by_growth(
        self, window: timedelta = timedelta(hours=24), *, now: datetime | None = None, limit: int = 10, min_recent: int = 5
    ) -> list[PatternStat]:
        """Patterns whose count in the last ``window`` most exceeds the window before it.

        ``score`` is (recent + 1) / (previous + 1): smoothing keeps a brand-new pattern's growth
        finite and ranks it by its size.
        """
        now = utc(now or datetime.now(UTC))
        hours = max(1, int(window.total_seconds() // 3600))
        end = hour_bucket(now) + timedelta(hours=1)
        mid = end - timedelta(hours=hours)
        start = mid - timedelta(hours=hours)
        rows = (
            await self._session.execute(
                text(
                    "SELECT p.id, p.label, "
                    "  coalesce(sum(c.n) FILTER (WHERE c.bucket >= :mid), 0) AS recent, "
                    "  coalesce(sum(c.n) FILTER (WHERE c.bucket < :mid), 0) AS previous "
                    "FROM pattern_counts c JOIN patterns p ON p.id = c.pattern_id "
                    "WHERE c.granularity = 'hour' AND c.bucket >= :start AND c.bucket < :end "
                    "GROUP BY p.id, p.label"
                ),
                {"start": start, "mid": mid, "end": end},
            )
        ).all()
        stats = [
            PatternStat(
                pattern_id=r.id,
                label=r.label,
                total=int(r.recent + r.previous),
                recent=int(r.recent),
                previous=int(r.previous),
                score=(r.recent + 1) / (r.previous + 1),
            )
            for r in rows
            if r.recent >= min_recent
        ]
        stats.sort(key=lambda s: (-s.score, -s.recent, s.pattern_id))
        return stats[:limit]

    async def time_series(
        self, pattern_id: int, granularity: str = "hour", since: datetime | None = None, until: datetime | None = None
    ) -> list[TimePoint]:
        """Counts per bucket from the rollup, with the failed exchanges of each bucket."""
        if granularity not in ("hour", "day"):
            raise ValueError("granularity must be 'hour' or 'day'")
        pattern_id = await self.resolve(pattern_id)
        rows = (
            await self._session.execute(
                text(
                    "WITH c AS (SELECT bucket, n FROM pattern_counts WHERE pattern_id = :p AND granularity = :g "
                    "           AND (CAST(:since AS timestamptz) IS NULL OR bucket >= :since) "
                    "           AND (CAST(:until AS timestamptz) IS NULL OR bucket < :until)), "
                    "f AS (SELECT date_trunc(:g, e.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket, "
                    "             count(DISTINCT e.request_id) AS failed "
                    "      FROM exchange_embeddings e JOIN outcome_signals s ON s.request_id = e.request_id AND NOT s.ok "
                    "      WHERE e.pattern_id = :p GROUP BY 1) "
                    "SELECT c.bucket, c.n, coalesce(f.failed, 0) AS failed FROM c LEFT JOIN f USING (bucket) "
                    "ORDER BY c.bucket"
                ),
                {"p": pattern_id, "g": granularity, "since": since, "until": until},
            )
        ).all()
        return [TimePoint(bucket=r.bucket, n=int(r.n), failed=int(r.failed)) for r in rows]

    async def success_rate(self, pattern_id: int, since: datetime | None = None) -> SuccessRate:
        """Share of the pattern's exchanges with no failing signal, with failed/ok counts per signal kind."""
        pattern_id = await self.resolve(pattern_id)
        params = {"p": pattern_id, "since": since}
        member_filter = (
            "FROM exchange_embeddings e WHERE e.pattern_id = :p "
            "AND (CAST(:since AS timestamptz) IS NULL OR e.created_at >= :since)"
        )
        totals = (
            await self._session.execute(
                text(
                    "SELECT count(*) AS total, count(*) FILTER (WHERE EXISTS ("
                    "  SELECT 1 FROM outcome_signals s WHERE s.request_id = e.request_id AND NOT s.ok)) AS failed "
                    + member_filter
                ),
                params,
            )
        ).one()
        kinds = (
            await self._session.execute(
                text(
                    "SELECT s.kind, count(DISTINCT s.request_id) FILTER (WHERE NOT s.ok) AS failed, "
                    "count(DISTINCT s.request_id) FILTER (WHERE s.ok) AS ok "
                    "FROM outcome_signals s JOIN (SELECT e.request_id " + member_filter + ") m "
                    "ON m.request_id = s.request_id GROUP BY s.kind"
                ),
                params,
            )
        ).all()
        by_kind = {k: SignalCount() for k in SIGNAL_KINDS}
        by_kind.update({r.kind: SignalCount(failed=int(r.failed), ok=int(r.ok)) for r in kinds})
        return SuccessRate(pattern_id=pattern_id, total=int(totals.total), failed=int(totals.failed), by_kind=by_kind)

    async def signals_for_request(self, request_id: str) -> list[Signal]:
        rows = (
            await self._session.execute(
                select(_SIGNALS.c.request_id, _SIGNALS.c.kind, _SIGNALS.c.ok, _SIGNALS.c.value, _SIGNALS.c.detail)
                .where(_SIGNALS.c.request_id == request_id)
                .order_by(_SIGNALS.c.id)
            )
        ).all()
        return [Signal(r.request_id, r.kind, r.ok, r.value, r.detail) for r in rows]

    async def count_patterns(self) -> int:
        return int(
            (await self._session.execute(select(func.count()).select_from(_PAT).where(_PAT.c.centroid.is_not(None)))).scalar_one()
        )

    async def pattern_assignments(self, request_ids: Sequence[str]) -> dict[str, int | None]:
        """request_id -> pattern id (as stored, i.e. already moved by merges and splits)."""
        if not request_ids:
            return {}
        rows = (
            await self._session.execute(
                select(_EMB.c.request_id, _EMB.c.pattern_id).where(
                    _EMB.c.request_id == func.any(bindparam("ids", list(request_ids), type_=ARRAY(Text)))
                )
            )
        ).all()
        return {r.request_id: r.pattern_id for r in rows}

    async def set_ef_search(self, ef_search: int | None) -> None:
        """Widen the HNSW candidate list for the rest of the current transaction."""
        # SET LOCAL lasts until the caller's transaction ends (the session always opens one), so the
        # setting never leaks to other users of the pooled connection.
        if ef_search is not None:
            await self._session.execute(text(f"SET LOCAL hnsw.ef_search = {int(ef_search)}"))
