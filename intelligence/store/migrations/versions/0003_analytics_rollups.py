"""analytics: hourly/daily rollups of exchanges and of pattern members, kept by triggers; search indexes

Revision ID: 0003_analytics_rollups
Revises: 0004_security_keys_audit
Create Date: 2025-01-03

The dashboard must answer "volume, latency percentiles, tokens, cost, errors over time by model,
provider, client or pattern" in well under a second with millions of exchanges. Two rollup tables
hold per hour and per day sums plus a fixed log-scale latency histogram (64 bins, factor 1.25,
so a percentile read from it is within ~12%); statement-level triggers with transition tables
keep them current in the inserting transaction, one grouped upsert per batch, so replayed or
duplicate inserts (ON CONFLICT DO NOTHING) never double count. Deleting exchanges leaves the
rollups alone: history outlives retention.

Nothing in a trigger may fail an insert of the request log: every value that could (NaN,
infinite or negative latencies, absurd token counts) is mapped to "unknown" first.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0003_analytics_rollups"
down_revision: str | Sequence[str] | None = "0004_security_keys_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept in step with intelligence.analytics (HIST_BINS, HIST_FACTOR); written out here so this
# revision never changes when that module does.
HIST_BINS = 64
HIST_FACTOR = 1.25
MAX_TOKENS = 1_000_000_000  # per exchange; anything larger is garbage from upstream
MAX_MS = 1e9

_FUNCTIONS = [
    f"""
CREATE FUNCTION llmproxy_ms(v double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT CASE WHEN v >= 0 AND v < {MAX_MS} THEN v END $$""",
    f"""
CREATE FUNCTION llmproxy_tokens(v bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT CASE WHEN v >= 0 AND v <= {MAX_TOKENS} THEN v END $$""",
    f"""
CREATE FUNCTION llmproxy_hist_bin(v double precision) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT CASE WHEN v >= 0 AND v < {MAX_MS}
          THEN least({HIST_BINS - 1}, floor(ln(greatest(v, 1.0)) / ln({HIST_FACTOR})))::integer END $$""",
    # a dense histogram (one count per bin) of bin numbers, each counted `weight` times. PL/pgSQL
    # updates a local array in place: ~50x faster than a generate_series/unnest join per group.
    f"""
CREATE FUNCTION llmproxy_hist(bins integer[], weight bigint) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
  h bigint[] := array_fill(0::bigint, ARRAY[{HIST_BINS}]);
  b integer;
BEGIN
  FOREACH b IN ARRAY coalesce(bins, '{{}}'::integer[]) LOOP
    IF b IS NOT NULL THEN h[b + 1] := h[b + 1] + weight; END IF;
  END LOOP;
  RETURN h;
END $fn$""",
    f"""
CREATE FUNCTION llmproxy_hist_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
  h bigint[] := coalesce(a, array_fill(0::bigint, ARRAY[{HIST_BINS}]));
BEGIN
  IF b IS NULL THEN RETURN h; END IF;
  FOR i IN 1..{HIST_BINS} LOOP
    h[i] := coalesce(h[i], 0) + coalesce(b[i], 0);
  END LOOP;
  RETURN h;
END $fn$""",
]

_MEASURES = (
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
_HISTS = ("latency_hist", "ttft_hist")


def _measure_exprs(sign: str) -> str:
    """The SELECT list of every measure over exchanges ``x``, each multiplied by ``sign``."""

    def s(expr: str) -> str:
        return f"{sign} * {expr}"

    return ",\n       ".join(
        [
            s("count(*)"),
            s("count(*) FILTER (WHERE x.error IS NOT NULL OR x.status >= 400)"),
            s("count(*) FILTER (WHERE x.status BETWEEN 400 AND 499)"),
            s("count(*) FILTER (WHERE x.status >= 500 OR (x.status IS NULL AND x.error IS NOT NULL))"),
            s("count(*) FILTER (WHERE x.status = 429)"),
            s("count(*) FILTER (WHERE x.streamed)"),
            s("count(llmproxy_ms(x.latency_ms))"),
            s("coalesce(sum(llmproxy_ms(x.latency_ms)), 0)"),
            s("count(llmproxy_ms(x.ttft_ms))"),
            s("coalesce(sum(llmproxy_ms(x.ttft_ms)), 0)"),
            s("count(llmproxy_ms(x.upstream_ms))"),
            s("coalesce(sum(llmproxy_ms(x.upstream_ms)), 0)"),
            s("coalesce(sum(llmproxy_tokens(x.input_tokens)), 0)"),
            s("coalesce(sum(llmproxy_tokens(x.output_tokens)), 0)"),
            s("coalesce(sum(llmproxy_tokens(x.cached_tokens)), 0)"),
            s("coalesce(sum(llmproxy_tokens(x.reasoning_tokens)), 0)"),
            f"llmproxy_hist(array_agg(llmproxy_hist_bin(x.latency_ms)), {sign})",
            f"llmproxy_hist(array_agg(llmproxy_hist_bin(x.ttft_ms)), {sign})",
        ]
    )


def _on_conflict(keys: Sequence[str]) -> str:
    sets = [f"{m} = r.{m} + excluded.{m}" for m in _MEASURES]
    sets += [f"{h} = llmproxy_hist_add(r.{h}, excluded.{h})" for h in _HISTS]
    return f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET " + ", ".join(sets)


_EXCHANGE_KEYS = ("granularity", "bucket", "provider", "model", "client", "api")
_PATTERN_KEYS = ("granularity", "bucket", "pattern_id", "model", "api")
_GRAINS = "(VALUES ('hour'), ('day')) AS g(granularity)"
_BUCKET = "date_trunc(g.granularity, x.started_at, 'UTC')"


def _exchange_rollup_sql(source: str) -> str:
    """Add the exchanges in relation ``source`` to exchange_rollups."""
    cols = ", ".join((*_EXCHANGE_KEYS, *_MEASURES, *_HISTS))
    return (
        f"INSERT INTO exchange_rollups AS r ({cols})\n"
        f"SELECT g.granularity, {_BUCKET}, coalesce(x.provider, ''), coalesce(x.model, ''),\n"
        f"       coalesce(x.client_key_fp, x.client_addr, ''), coalesce(x.api, ''),\n"
        f"       {_measure_exprs('1')}\n"
        f"FROM {source} AS x CROSS JOIN {_GRAINS}\n"
        "GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6\n"  # a fixed lock order: concurrent writers never deadlock
        f"{_on_conflict(_EXCHANGE_KEYS)}"
    )


def _pattern_rollup_sql(members: str, sign: str) -> str:
    """Add (sign 1) or remove (sign -1) the exchanges of ``members`` (request_id, pattern_id) to pattern_rollups."""
    cols = ", ".join((*_PATTERN_KEYS, *_MEASURES, *_HISTS))
    return (
        f"INSERT INTO pattern_rollups AS r ({cols})\n"
        f"SELECT g.granularity, {_BUCKET}, m.pattern_id, coalesce(x.model, ''), coalesce(x.api, ''),\n"
        f"       {_measure_exprs(sign)}\n"
        f"FROM {members} AS m JOIN exchanges AS x ON x.request_id = m.request_id CROSS JOIN {_GRAINS}\n"
        "WHERE m.pattern_id IS NOT NULL\n"
        "GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5\n"
        f"{_on_conflict(_PATTERN_KEYS)}"
    )


# Only rows whose pattern changed move; an UPDATE trigger with transition tables cannot name columns.
_MOVED_OLD = (
    "(SELECT o.request_id, o.pattern_id FROM old_rows o JOIN new_rows n ON n.request_id = o.request_id "
    "WHERE o.pattern_id IS DISTINCT FROM n.pattern_id)"
)
_MOVED_NEW = (
    "(SELECT n.request_id, n.pattern_id FROM old_rows o JOIN new_rows n ON n.request_id = o.request_id "
    "WHERE o.pattern_id IS DISTINCT FROM n.pattern_id)"
)

_TRIGGERS = [
    f"""CREATE FUNCTION llmproxy_rollup_exchanges() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
{_exchange_rollup_sql("new_rows")};
RETURN NULL;
END $fn$""",
    "CREATE TRIGGER trg_exchanges_rollup AFTER INSERT ON exchanges "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION llmproxy_rollup_exchanges()",
    f"""CREATE FUNCTION llmproxy_rollup_members_insert() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
{_pattern_rollup_sql("new_rows", "1")};
RETURN NULL;
END $fn$""",
    "CREATE TRIGGER trg_exchange_embeddings_rollup_insert AFTER INSERT ON exchange_embeddings "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION llmproxy_rollup_members_insert()",
    f"""CREATE FUNCTION llmproxy_rollup_members_move() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
{_pattern_rollup_sql(_MOVED_OLD, "-1")};
{_pattern_rollup_sql(_MOVED_NEW, "1")};
DELETE FROM pattern_rollups r USING (SELECT DISTINCT pattern_id FROM old_rows) AS o
 WHERE r.pattern_id = o.pattern_id AND r.n = 0;
RETURN NULL;
END $fn$""",
    "CREATE TRIGGER trg_exchange_embeddings_rollup_move AFTER UPDATE ON exchange_embeddings "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION llmproxy_rollup_members_move()",
]


def _measure_columns() -> list[sa.Column]:
    zero = sa.text("0")
    cols = [
        sa.Column(m, sa.Double() if m.endswith("_sum") else sa.BigInteger(), nullable=False, server_default=zero)
        for m in _MEASURES
    ]
    empty = sa.text(f"array_fill(0::bigint, ARRAY[{HIST_BINS}])")
    cols += [sa.Column(h, pg.ARRAY(sa.BigInteger()), nullable=False, server_default=empty) for h in _HISTS]
    return cols


def _grain_check(table: str) -> sa.CheckConstraint:
    return sa.CheckConstraint("granularity IN ('hour', 'day')", name=f"ck_{table}_granularity")


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")

    op.create_table(
        "exchange_rollups",
        sa.Column("granularity", sa.Text(), primary_key=True),
        sa.Column("bucket", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("provider", sa.Text(), primary_key=True),
        sa.Column("model", sa.Text(), primary_key=True),
        sa.Column("client", sa.Text(), primary_key=True),
        sa.Column("api", sa.Text(), primary_key=True),
        *_measure_columns(),
        _grain_check("exchange_rollups"),
    )
    op.create_table(
        "pattern_rollups",
        sa.Column("granularity", sa.Text(), primary_key=True),
        sa.Column("bucket", sa.DateTime(timezone=True), primary_key=True),
        # no foreign key: a pattern's rows are adjusted while FK actions run on patterns
        sa.Column("pattern_id", sa.BigInteger(), primary_key=True),
        sa.Column("model", sa.Text(), primary_key=True),
        sa.Column("api", sa.Text(), primary_key=True),
        *_measure_columns(),
        _grain_check("pattern_rollups"),
    )
    op.create_index("ix_pattern_rollups_pattern", "pattern_rollups", ["pattern_id", "granularity", "bucket"])

    # Explorer filters: a client's exchanges newest first, and free text over the last user turn.
    op.create_index("ix_exchanges_client_started", "exchanges", ["client_key_fp", "started_at"])
    op.create_index(
        "ix_exchanges_prompt_user_trgm",
        "exchanges",
        ["prompt_user"],
        postgresql_using="gin",
        postgresql_ops={"prompt_user": "gin_trgm_ops"},
    )

    for statement in _FUNCTIONS:
        op.execute(statement)
    # Existing rows first, then the triggers (one transaction: nothing inserted in between is lost).
    op.execute(_exchange_rollup_sql("exchanges"))
    op.execute(_pattern_rollup_sql("exchange_embeddings", "1"))
    for statement in _TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS trg_exchange_embeddings_rollup_move ON exchange_embeddings")
    op.execute("DROP TRIGGER IF EXISTS trg_exchange_embeddings_rollup_insert ON exchange_embeddings")
    op.execute("DROP TRIGGER IF EXISTS trg_exchanges_rollup ON exchanges")
    for fn in (
        "llmproxy_rollup_members_move()",
        "llmproxy_rollup_members_insert()",
        "llmproxy_rollup_exchanges()",
        "llmproxy_hist_add(bigint[], bigint[])",
        "llmproxy_hist(integer[], bigint)",
        "llmproxy_hist_bin(double precision)",
        "llmproxy_tokens(bigint)",
        "llmproxy_ms(double precision)",
    ):
        op.execute(f"DROP FUNCTION IF EXISTS {fn}")
    op.drop_index("ix_exchanges_prompt_user_trgm", table_name="exchanges")
    op.drop_index("ix_exchanges_client_started", table_name="exchanges")
    op.drop_table("pattern_rollups")
    op.drop_table("exchange_rollups")
    # pg_trgm stays, like vector: other schemas in the database may use it
