"""Migration 0008: exposures per experiment kept by triggers, and the partial index for enforced requests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sqlalchemy import text

from intelligence.store.repositories import ExchangeRepository
from tests.intelligence.conftest import MigratedDb
from tests.intelligence.factories import make_record

_MIGRATION = Path(__file__).resolve().parents[2] / "intelligence/store/migrations/versions/0008_dashboard_indexes.py"
COUNT_FROM_LOG = (
    "SELECT (flags -> 'enhancement' ->> 'experiment')::bigint AS id, count(*) AS n FROM exchanges "
    "WHERE flags ? 'enhancement' AND flags -> 'enhancement' ->> 'experiment' IS NOT NULL GROUP BY 1"
)


def _migration():
    spec = importlib.util.spec_from_file_location("rev0008", _MIGRATION)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _exposed(experiment: int | None, arm: str = "control") -> dict:
    return {"enhancement": {"experiment": experiment, "enhancement": 1, "arm": arm, "pattern": 1, "patch": []}}


async def _counts(db: MigratedDb) -> tuple[dict[int, int], dict[int, int]]:
    async with db.engine.connect() as conn:
        kept = {r.experiment_id: r.n for r in (await conn.execute(text("SELECT * FROM experiment_exposures WHERE n <> 0")))}
        live = {r.id: r.n for r in (await conn.execute(text(COUNT_FROM_LOG)))}
    return kept, live


async def test_exposure_counts_follow_inserts_updates_deletes_and_truncate(migrated_db: MigratedDb) -> None:
    records = (
        [make_record(flags=_exposed(11)) for _ in range(3)]
        + [make_record(flags=_exposed(12, "variant")) for _ in range(2)]
        + [make_record(flags=_exposed(None, "active")), make_record(), make_record(flags={"policy": {"block": {}}})]
    )
    async with migrated_db.engine.begin() as conn:
        await ExchangeRepository(conn).insert_batch(records)
    async with migrated_db.engine.begin() as conn:  # a replay: skipped as a duplicate, so not counted again
        await ExchangeRepository(conn).insert_batch(records[:2])
    kept, live = await _counts(migrated_db)
    assert kept == live == {11: 3, 12: 2}

    async with migrated_db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE exchanges SET flags = CAST(:f AS jsonb) WHERE request_id = :id"),
            {"f": '{"enhancement": {"experiment": 12, "arm": "control"}}', "id": records[0].request_id},
        )
        await conn.execute(text("DELETE FROM exchanges WHERE request_id = :id"), {"id": records[3].request_id})
    kept, live = await _counts(migrated_db)
    assert kept == live == {11: 2, 12: 2}

    async with migrated_db.engine.begin() as conn:
        await conn.execute(text("TRUNCATE exchanges CASCADE"))
    assert await _counts(migrated_db) == ({}, {})


async def test_experiments_page_reads_the_kept_counts(migrated_db: MigratedDb) -> None:
    async with migrated_db.engine.begin() as conn:
        await ExchangeRepository(conn).insert_batch([make_record(flags=_exposed(21)) for _ in range(4)])
        rows = (
            await conn.execute(
                text("SELECT experiment_id AS id, n FROM experiment_exposures WHERE experiment_id = ANY(:ids) AND n > 0"),
                {"ids": [21, 22]},
            )
        ).all()
    assert [(r.id, r.n) for r in rows] == [(21, 4)]


async def test_enforced_query_is_served_by_the_partial_index(migrated_db: MigratedDb) -> None:
    from ui.intel import ENFORCED_WHERE

    assert _migration().ENFORCED_PREDICATE == ENFORCED_WHERE  # the index applies only to this exact condition
    async with migrated_db.engine.begin() as conn:
        await ExchangeRepository(conn).insert_batch([make_record() for _ in range(50)])
        await conn.execute(text("ANALYZE exchanges"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            r[0]
            for r in await conn.execute(
                text(
                    f"EXPLAIN SELECT request_id FROM exchanges WHERE started_at >= now() - interval '7 days' "
                    f"AND ({ENFORCED_WHERE}) ORDER BY started_at DESC LIMIT 500"
                )
            )
        )
    assert "ix_exchanges_enforced" in plan, plan


async def test_seed_fills_what_the_security_and_experiments_pages_read(migrated_db: MigratedDb) -> None:
    from extproc.cli import seed as seed_cli

    result = await seed_cli.seed(migrated_db.url, 4000, days=30, embed_sample=100, use_model=False, batch=1000, progress=False)
    async with migrated_db.engine.connect() as conn:

        def run(sql: str):
            return conn.execute(text(sql))

        counts = {
            t: (await run(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("events", "anomaly_verdicts", "claude_calls", "enhancements", "experiments", "experiment_events")
        }
        blocked = (await run("SELECT count(*) FROM exchanges WHERE flags -> 'policy' -> 'block' IS NOT NULL")).scalar_one()
        statuses = {r[0] for r in await run("SELECT status FROM experiments")}
    assert counts["events"] == result["events"] > 0 and counts["anomaly_verdicts"] == result["verdicts"] > 0
    assert counts["claude_calls"] == result["claude_calls"] == 100  # one per 40 exchanges
    assert counts["enhancements"] == 7 and counts["experiments"] == 5 and counts["experiment_events"] == 7
    assert statuses == {"running", "paused", "promoted", "rolled_back"} and blocked > 0
    kept, live = await _counts(migrated_db)  # the seed's flag UPDATE went through the triggers too
    assert kept == live and sum(live.values()) > 0


_MIGRATION_0012 = _MIGRATION.with_name("0012_policy_action_index.py")


async def test_every_policy_action_filter_is_served_by_the_partial_index(migrated_db: MigratedDb) -> None:
    from intelligence.analytics import POLICY_ACTIONS, policy_action_where

    spec = importlib.util.spec_from_file_location("rev0012", _MIGRATION_0012)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    # the index predicate is the OR of every action's condition: each one (and any OR of them) implies it
    assert module.ANY_POLICY_ACTION == " OR ".join(POLICY_ACTIONS.values()).replace("x.flags", "flags")
    async with migrated_db.engine.begin() as conn:
        await ExchangeRepository(conn).insert_batch(
            [make_record() for _ in range(50)] + [make_record(flags={"policy": {"block": {}}})]
        )
        await conn.execute(text("ANALYZE exchanges"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        for actions in [(a,) for a in POLICY_ACTIONS] + [tuple(POLICY_ACTIONS)[:3]]:
            plan = "\n".join(
                r[0]
                for r in await conn.execute(
                    text(
                        f"EXPLAIN SELECT x.request_id FROM exchanges x WHERE x.started_at >= now() - interval '30 days' "
                        f"AND {policy_action_where(actions)} ORDER BY x.started_at DESC LIMIT 200"
                    )
                )
            )
            assert "ix_exchanges_policy_action" in plan, (actions, plan)
        rows = await conn.execute(text(f"SELECT count(*) FROM exchanges x WHERE {policy_action_where(('blocked',))}"))
        assert rows.scalar_one() == 1
