"""All SQL the dashboard needs beyond the request log's and pattern memory's own repositories.

Heavy questions (volume, percentiles, tokens and errors over weeks) are answered from the
rollup tables of migration 0003_analytics_rollups; recent-traffic questions read ``exchanges``
through its ``started_at`` index. Like the other repositories this never commits.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from intelligence.analytics_models import HIST_BINS, HIST_FACTOR
from intelligence.records import ExchangeRecord
from intelligence.store.repositories import record_from_row

GRANULARITIES = ("hour", "day")
MEASURES = (
    "n",
    "errors",
    "client_errors",
    "server_errors",
    "rate_limited",
    "streamed",
    "latency_n",
    "latency_sum",
    "ttft_n",
    "ttft_sum",
    "upstream_n",
    "upstream_sum",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
)
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error", "none")

# Columns of an exchange cheap enough to list by the hundred (no bodies: they can be megabytes), alias ``x``.
LIGHT_COLUMNS = (
    "x.request_id, x.started_at, x.finished_at, x.session_id, x.client_key_fp, x.client_addr, x.provider, "
    "x.model, x.api, x.path, x.status, x.streamed, x.latency_ms, x.ttft_ms, x.upstream_ms, x.input_tokens, "
    "x.output_tokens, x.cached_tokens, x.reasoning_tokens, x.finish_reason, x.error, x.flags, "
    "x.tool_args_invalid, x.tool_names, left(x.prompt_user, 300) AS prompt_preview"
)


# ---------------------------------------------------------------------------------------------
# value types


@dataclass(frozen=True, slots=True)
class RollupRow:
    """One rollup row. ``pattern_id`` is set for pattern rollups, ``provider``/``client`` for exchange rollups."""

    bucket: datetime
    model: str
    api: str
    provider: str | None
    client: str | None
    pattern_id: int | None
    measures: dict[str, float]
    latency_hist: np.ndarray
    ttft_hist: np.ndarray


@dataclass(frozen=True, slots=True)
class LiveBucket:
    """Recent traffic in one time bucket; ``bucket`` None is the whole window."""

    bucket: datetime | None
    n: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True, slots=True)
class ExchangeRow:
    """An exchange without its bodies."""

    request_id: str
    started_at: datetime
    finished_at: datetime
    session_id: str | None
    client_key_fp: str | None
    client_addr: str | None
    provider: str | None
    model: str | None
    api: str | None
    path: str | None
    status: int | None
    streamed: bool
    latency_ms: float | None
    ttft_ms: float | None
    upstream_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    finish_reason: str | None
    error: str | None
    flags: dict[str, Any]
    tool_args_invalid: int
    tool_names: tuple[str, ...]
    prompt_preview: str | None
    pattern_id: int | None = None


# What the gateway did to an exchange, as conditions on exchanges.flags (written by extproc/screening.py
# GuardOutcome.record() and extproc/exchange.py): the Explorer's "Policy action" filter. The response
# side (flags.response_policy) counts as well.
POLICY_ACTIONS: dict[str, str] = {
    "blocked": "(x.flags -> 'policy' -> 'block' IS NOT NULL OR x.flags -> 'response_policy' -> 'block' IS NOT NULL)",
    "redacted": "(x.flags -> 'redacted_strings' IS NOT NULL OR x.flags -> 'policy' -> 'redact' IS NOT NULL "
    "OR x.flags -> 'response_policy' -> 'redact' IS NOT NULL "
    "OR x.flags -> 'response_policy' -> 'masked' IS NOT NULL)",
    "alerted": "(x.flags -> 'policy' -> 'alerts' IS NOT NULL OR x.flags -> 'response_policy' -> 'alerts' IS NOT NULL)",
    "monitor rule fired": "(x.flags -> 'policy' -> 'fired' @> '[{\"mode\": \"monitor\"}]' "
    "OR x.flags -> 'response_policy' -> 'fired' @> '[{\"mode\": \"monitor\"}]')",
    "edited": "(x.flags -> 'edits' IS NOT NULL OR x.flags -> 'response_policy' -> 'edits' IS NOT NULL)",
    "enhanced (any arm)": "x.flags -> 'enhancement' IS NOT NULL",
    "Claude verdict": "(x.flags -> 'claude_verdict' IS NOT NULL OR x.flags -> 'policy' -> 'claude_verdict' IS NOT NULL)",
}


def policy_action_where(actions: tuple[str, ...]) -> str:
    """One SQL condition (alias ``x``) matching exchanges with ANY of ``actions``; raises on unknown names."""
    unknown = [a for a in actions if a not in POLICY_ACTIONS]
    if unknown:
        raise ValueError(f"unknown policy action(s) {unknown}; known: {list(POLICY_ACTIONS)}")
    return "(" + " OR ".join(POLICY_ACTIONS[a] for a in actions) + ")"


@dataclass(frozen=True, slots=True)
class ExchangeFilter:
    """Explorer filters; every field None/empty means "any"."""

    since: datetime | None = None
    until: datetime | None = None
    client: str | None = None  # key fingerprint or source address
    session_id: str | None = None
    models: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    status_class: str | None = None  # one of STATUS_CLASSES
    pattern_id: int | None = None
    text: str | None = None  # substring of the last user turn, or an exact request id
    policy_actions: tuple[str, ...] = ()  # names in POLICY_ACTIONS: exchanges with any of them


@dataclass(frozen=True, slots=True)
class SessionTurn:
    request_id: str
    started_at: datetime
    finished_at: datetime
    model: str | None
    api: str | None
    status: int | None
    latency_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    error: str | None
    prompt_user: str | None
    response: dict[str, Any] | None  # the response body as returned to the client
    response_text: str | None = None  # the provider-neutral summary (migration 0013); None on older rows
    tool_calls: tuple[dict[str, Any], ...] = ()
    summarised: bool = False  # whether the row carries the summary at all (older rows do not)


@dataclass(frozen=True, slots=True)
class MapPoint:
    request_id: str
    pattern_id: int | None
    failed: bool
    embedding: np.ndarray
    prompt_preview: str | None


@dataclass(frozen=True, slots=True)
class PatternBucket:
    pattern_id: int
    bucket: datetime
    n: int
    errors: int


@dataclass(frozen=True, slots=True)
class DatabaseOverview:
    server_version: str
    extensions: dict[str, str]
    schema_revision: str | None
    estimated_exchanges: int
    table_bytes: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# histogram arithmetic (the bins the migration's llmproxy_hist_bin() fills)


def hist_bounds(i: int) -> tuple[float, float]:
    """[low, high) in ms of bin ``i``."""
    low = 0.0 if i == 0 else HIST_FACTOR**i
    return low, HIST_FACTOR ** (i + 1)


def hist_bin(value_ms: float) -> int | None:
    """The bin the database puts ``value_ms`` in (None for values it ignores)."""
    if value_ms is None or not math.isfinite(value_ms) or value_ms < 0 or value_ms >= 1e9:
        return None
    return min(HIST_BINS - 1, int(math.floor(math.log(max(value_ms, 1.0)) / math.log(HIST_FACTOR))))


def hist_quantile(hist: Sequence[int] | np.ndarray, q: float) -> float | None:
    """The q-quantile (0..1) of the values counted in ``hist``: the geometric middle of the bin it falls in.

    The middle of a bin is within a factor sqrt(HIST_FACTOR) (11.8%) of any value in it, so that is
    the worst error; interpolating inside the bin would be better on average but worse at worst.
    """
    counts = np.asarray(hist, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return None
    cum = np.cumsum(counts)
    i = int(np.searchsorted(cum, max(q, 0.0) * total, side="left"))
    while i < len(counts) - 1 and counts[i] == 0:  # q = 0 lands before the first non-empty bin
        i += 1
    low, high = hist_bounds(min(i, len(counts) - 1))
    return high / 2 if low <= 0 else math.sqrt(low * high)


# ---------------------------------------------------------------------------------------------
# SQL


def light_row(r: Any, pattern_id: int | None = None) -> ExchangeRow:
    m = r._mapping
    return ExchangeRow(
        request_id=m["request_id"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        session_id=m["session_id"],
        client_key_fp=m["client_key_fp"],
        client_addr=m["client_addr"],
        provider=m["provider"],
        model=m["model"],
        api=m["api"],
        path=m["path"],
        status=m["status"],
        streamed=bool(m["streamed"]),
        latency_ms=m["latency_ms"],
        ttft_ms=m["ttft_ms"],
        upstream_ms=m["upstream_ms"],
        input_tokens=m["input_tokens"],
        output_tokens=m["output_tokens"],
        cached_tokens=m["cached_tokens"],
        reasoning_tokens=m["reasoning_tokens"],
        finish_reason=m["finish_reason"],
        error=m["error"],
        flags=dict(m["flags"] or {}),
        tool_args_invalid=int(m["tool_args_invalid"] or 0),
        tool_names=tuple(m["tool_names"] or ()),
        prompt_preview=m["prompt_preview"],
        pattern_id=m.get("pattern_id", pattern_id),
    )


_STATUS_SQL = {
    "2xx": "x.status BETWEEN 200 AND 299 AND x.error IS NULL",
    "3xx": "x.status BETWEEN 300 AND 399",
    "4xx": "x.status BETWEEN 400 AND 499",
    "5xx": "x.status >= 500",
    "error": "(x.error IS NOT NULL OR x.status >= 400)",
    "none": "x.status IS NULL",
}

_TEXT_ARRAY = ARRAY(Text)


class AnalyticsRepository:
    def __init__(self, session: AsyncSession | AsyncConnection) -> None:
        self._session = session

    # ----------------------------------------------------------------------------- rollups

    async def rollup(
        self,
        granularity: str,
        since: datetime,
        until: datetime | None = None,
        *,
        by_pattern: bool = False,
        pattern_ids: Sequence[int] | None = None,
    ) -> list[RollupRow]:
        """Rollup rows with ``since <= bucket < until``: per provider/model/client/api, or per pattern/model/api."""
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}")
        measures = ", ".join(MEASURES)
        where = "granularity = :g AND bucket >= :since AND (CAST(:until AS timestamptz) IS NULL OR bucket < :until)"
        params: dict[str, Any] = {"g": granularity, "since": since, "until": until}
        if by_pattern:
            sql = f"SELECT bucket, model, api, pattern_id, {measures}, latency_hist, ttft_hist FROM pattern_rollups WHERE {where}"
            if pattern_ids is not None:
                sql += " AND pattern_id = ANY(:ids)"
                params["ids"] = list(pattern_ids)
        else:
            sql = f"SELECT bucket, model, api, provider, client, {measures}, latency_hist, ttft_hist FROM exchange_rollups WHERE {where}"
        rows = (await self._session.execute(text(sql + " ORDER BY bucket"), params)).all()
        out = []
        for r in rows:
            m = r._mapping
            out.append(
                RollupRow(
                    bucket=m["bucket"],
                    model=m["model"],
                    api=m["api"],
                    provider=None if by_pattern else m["provider"],
                    client=None if by_pattern else m["client"],
                    pattern_id=m["pattern_id"] if by_pattern else None,
                    measures={k: float(m[k]) for k in MEASURES},
                    latency_hist=np.asarray(m["latency_hist"], dtype=np.int64),
                    ttft_hist=np.asarray(m["ttft_hist"], dtype=np.int64),
                )
            )
        return out

    async def pattern_buckets(self, pattern_ids: Sequence[int], granularity: str, since: datetime) -> list[PatternBucket]:
        """Exchanges and errors per bucket of each pattern (its trend line)."""
        if not pattern_ids:
            return []
        rows = (
            await self._session.execute(
                text(
                    "SELECT pattern_id, bucket, sum(n) AS n, sum(errors) AS errors FROM pattern_rollups "
                    "WHERE pattern_id = ANY(:ids) AND granularity = :g AND bucket >= :since "
                    "GROUP BY pattern_id, bucket ORDER BY pattern_id, bucket"
                ),
                {"ids": list(pattern_ids), "g": granularity, "since": since},
            )
        ).all()
        return [PatternBucket(int(r.pattern_id), r.bucket, int(r.n), int(r.errors)) for r in rows]

    async def dimension_values(self, since: datetime) -> dict[str, list[str]]:
        """Providers, models and clients seen since ``since`` (for filter choices), busiest first."""
        out: dict[str, list[str]] = {}
        for dim in ("provider", "model", "client"):
            rows = (
                await self._session.execute(
                    text(
                        f"SELECT {dim} AS v FROM exchange_rollups WHERE granularity = 'day' AND bucket >= date_trunc('day', CAST(:since AS timestamptz), 'UTC') "
                        f"AND {dim} <> '' GROUP BY {dim} ORDER BY sum(n) DESC LIMIT 500"
                    ),
                    {"since": since},
                )
            ).all()
            out[dim] = [r.v for r in rows]
        return out

    # ----------------------------------------------------------------------------- recent traffic

    async def live_buckets(self, since: datetime, bucket_seconds: int) -> list[LiveBucket]:
        """Per-bucket and whole-window counts and exact latency percentiles of exchanges started since ``since``.

        The whole-window row comes first (``bucket`` None).
        """
        rows = (
            await self._session.execute(
                text(
                    "SELECT CASE WHEN GROUPING(b) = 0 THEN b END AS bucket, count(*) AS n, "
                    "count(*) FILTER (WHERE error IS NOT NULL OR status >= 400) AS errors, "
                    "percentile_cont(0.5) WITHIN GROUP (ORDER BY llmproxy_ms(latency_ms)) AS p50, "
                    "percentile_cont(0.95) WITHIN GROUP (ORDER BY llmproxy_ms(latency_ms)) AS p95 "
                    "FROM (SELECT to_timestamp(floor(extract(epoch FROM started_at) / :s) * :s) AS b, error, status, latency_ms "
                    "      FROM exchanges WHERE started_at >= :since) AS w "
                    "GROUP BY GROUPING SETS ((), (b)) ORDER BY GROUPING(b) DESC, b"
                ),
                {"since": since, "s": int(bucket_seconds)},
            )
        ).all()
        return [LiveBucket(r.bucket, int(r.n), int(r.errors), r.p50, r.p95) for r in rows]

    async def recent(self, limit: int = 200) -> list[ExchangeRow]:
        """The newest exchanges, without bodies."""
        rows = (
            await self._session.execute(
                text(f"SELECT {LIGHT_COLUMNS} FROM exchanges x ORDER BY x.started_at DESC, x.request_id DESC LIMIT :limit"),
                {"limit": limit},
            )
        ).all()
        return [light_row(r) for r in rows]

    async def search(self, f: ExchangeFilter, limit: int = 200, before: datetime | None = None) -> list[ExchangeRow]:
        """Exchanges matching the filter, newest first; ``before`` pages back. Each carries its pattern id."""
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        binds = []
        if f.since is not None:
            where.append("x.started_at >= :since")
            params["since"] = f.since
        if f.until is not None:
            where.append("x.started_at < :until")
            params["until"] = f.until
        if before is not None:
            where.append("x.started_at < :before")
            params["before"] = before
        if f.client:
            where.append("(x.client_key_fp = :client OR (x.client_key_fp IS NULL AND x.client_addr = :client))")
            params["client"] = f.client
        if f.session_id:
            where.append("x.session_id = :session_id")
            params["session_id"] = f.session_id
        if f.models:
            where.append("x.model = ANY(:models)")
            params["models"] = list(f.models)
            binds.append(bindparam("models", type_=_TEXT_ARRAY))
        if f.providers:
            where.append("x.provider = ANY(:providers)")
            params["providers"] = list(f.providers)
            binds.append(bindparam("providers", type_=_TEXT_ARRAY))
        if f.status_class:
            if f.status_class not in _STATUS_SQL:
                raise ValueError(f"status_class must be one of {STATUS_CLASSES}")
            where.append(_STATUS_SQL[f.status_class])
        if f.text:
            # the trigram index serves the substring; the primary key the exact id
            where.append("(x.request_id = :text_exact OR x.prompt_user ILIKE :text_like)")
            params["text_exact"] = f.text.strip()
            params["text_like"] = "%" + _escape_like(f.text.strip()) + "%"
        if f.policy_actions:
            where.append(policy_action_where(f.policy_actions))
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        if f.pattern_id is not None:
            # walk the pattern's members newest first (index pattern_id, created_at)
            params["pattern_id"] = f.pattern_id
            sql = (
                f"SELECT {LIGHT_COLUMNS}, e.pattern_id FROM exchange_embeddings e JOIN exchanges x ON x.request_id = e.request_id"
                f"{cond}{' AND' if cond else ' WHERE'} e.pattern_id = :pattern_id "
                "ORDER BY e.created_at DESC, e.request_id DESC LIMIT :limit"
            )
        else:
            sql = (
                f"SELECT x.*, e.pattern_id FROM (SELECT {LIGHT_COLUMNS} FROM exchanges x{cond} "
                "ORDER BY x.started_at DESC, x.request_id DESC LIMIT :limit) AS x "
                "LEFT JOIN exchange_embeddings e ON e.request_id = x.request_id "
                "ORDER BY x.started_at DESC, x.request_id DESC"
            )
        stmt = text(sql)
        if binds:
            stmt = stmt.bindparams(*binds)
        return [light_row(r) for r in (await self._session.execute(stmt, params)).all()]

    async def session_turns(self, session_id: str, limit: int = 200) -> list[SessionTurn]:
        """A session's exchanges, oldest first, with what the client got back."""
        rows = (
            await self._session.execute(
                text(
                    "SELECT * FROM (SELECT request_id, started_at, finished_at, model, api, status, latency_ms, input_tokens, "
                    "output_tokens, error, prompt_user, response_client, response_text, tool_calls "
                    "FROM exchanges WHERE session_id = :sid "
                    "ORDER BY started_at DESC LIMIT :limit) AS t ORDER BY started_at"
                ),
                {"sid": session_id, "limit": limit},
            )
        ).all()
        return [
            SessionTurn(
                request_id=r.request_id,
                started_at=r.started_at,
                finished_at=r.finished_at,
                model=r.model,
                api=r.api,
                status=r.status,
                latency_ms=r.latency_ms,
                input_tokens=r.input_tokens,
                output_tokens=r.output_tokens,
                error=r.error,
                prompt_user=r.prompt_user,
                response=(r.response_client or {}).get("json") if isinstance(r.response_client, dict) else None,
                response_text=r.response_text,
                tool_calls=summary_calls(r.tool_calls),
                summarised=r.response_text is not None or r.tool_calls is not None,
            )
            for r in rows
        ]

    async def exchange(self, request_id: str) -> ExchangeRecord | None:
        """One exchange with everything stored, including the response summary (``response_text``, ``tool_calls``)."""
        row = (await self._session.execute(text("SELECT * FROM exchanges WHERE request_id = :id"), {"id": request_id})).first()
        if row is None:
            return None
        m = row._mapping
        return dataclasses.replace(
            record_from_row(row), response_text=m.get("response_text"), tool_calls=summary_calls(m.get("tool_calls"))
        )

    # ----------------------------------------------------------------------------- pattern memory

    async def embedding_sample(self, limit: int) -> list[MapPoint]:
        """The newest embedded prompts with their pattern and whether the exchange failed (any failing signal)."""
        rows = (
            await self._session.execute(
                text(
                    "SELECT e.request_id, e.pattern_id, e.embedding::real[] AS embedding, left(x.prompt_user, 200) AS preview, "
                    "  (x.error IS NOT NULL OR x.status >= 400 OR EXISTS (SELECT 1 FROM outcome_signals s "
                    "   WHERE s.request_id = e.request_id AND NOT s.ok)) AS failed "
                    "FROM (SELECT request_id, pattern_id, embedding FROM exchange_embeddings WHERE embedding IS NOT NULL "
                    "      ORDER BY created_at DESC LIMIT :limit) AS e JOIN exchanges x ON x.request_id = e.request_id"
                ),
                {"limit": limit},
            )
        ).all()
        return [
            MapPoint(
                request_id=r.request_id,
                pattern_id=r.pattern_id,
                failed=bool(r.failed),
                embedding=np.asarray(r.embedding, dtype=np.float32),  # real[] decodes ~2x faster than text
                prompt_preview=r.preview,
            )
            for r in rows
        ]

    async def pattern_labels(self, pattern_ids: Sequence[int]) -> dict[int, str]:
        if not pattern_ids:
            return {}
        rows = (
            await self._session.execute(text("SELECT id, label FROM patterns WHERE id = ANY(:ids)"), {"ids": list(pattern_ids)})
        ).all()
        return {int(r.id): r.label for r in rows}

    async def worker_backlog(self, since: datetime) -> int:
        """Exchanges started since ``since`` that pattern memory has not processed yet."""
        return int(
            (
                await self._session.execute(
                    text(
                        "SELECT count(*) FROM exchanges x WHERE x.started_at >= :since AND NOT EXISTS "
                        "(SELECT 1 FROM exchange_embeddings e WHERE e.request_id = x.request_id)"
                    ),
                    {"since": since},
                )
            ).scalar_one()
        )

    # ----------------------------------------------------------------------------- the database itself

    async def overview(self) -> DatabaseOverview:
        version = (await self._session.execute(text("SHOW server_version"))).scalar_one()
        exts = {
            r.extname: r.extversion
            for r in (await self._session.execute(text("SELECT extname, extversion FROM pg_extension ORDER BY extname"))).all()
        }
        revision = None
        if (await self._session.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL"))).scalar_one():
            revision = (
                await self._session.execute(text("SELECT string_agg(version_num, ',') FROM alembic_version"))
            ).scalar_one()
        sizes = {
            r.relname: int(r.bytes)
            for r in (
                await self._session.execute(
                    text(
                        "SELECT c.relname, pg_total_relation_size(c.oid) AS bytes FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r' "
                        "ORDER BY bytes DESC LIMIT 20"
                    )
                )
            ).all()
        }
        # reltuples is the planner's estimate: exact count(*) over millions of rows takes seconds
        estimate = (
            await self._session.execute(
                text("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass('exchanges')")
            )
        ).scalar_one_or_none()
        if not estimate:  # never analysed: small enough to count
            estimate = (await self._session.execute(text("SELECT count(*) FROM exchanges"))).scalar_one()
        return DatabaseOverview(
            server_version=str(version),
            extensions=exts,
            schema_revision=revision,
            estimated_exchanges=int(estimate or 0),
            table_bytes=sizes,
        )


def summary_calls(value: Any) -> tuple[dict[str, Any], ...]:
    """The stored ``tool_calls`` JSON as the record's tuple of dicts (anything malformed left out)."""
    if not isinstance(value, list):
        return ()
    return tuple(dict(c) for c in value if isinstance(c, dict))


def _escape_like(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
