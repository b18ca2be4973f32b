"""`python -m intelligence.enhance.bench`: how long effectiveness tracking takes on a big experiment.

Figures only (docs/experiments.md): seeds 30 days of 200k exchanges, 20k of them exposures of one
experiment plus 20k of an active enhancement, into a temporary embedded Postgres (or an empty
``--database-url``), then times ``enhancement_effectiveness`` by day and hour and
``experiment_outcomes`` for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from sqlalchemy import Table, insert, text

_SEED = """
INSERT INTO exchanges (request_id, started_at, finished_at, method, path, provider, model, api, status, latency_ms,
                       input_tokens, output_tokens, total_tokens, flags)
SELECT 'b' || g, now() - (g % 43200) * interval '1 minute', now() - (g % 43200) * interval '1 minute', 'POST', '/x',
       'openai', 'gpt-4o-mini', 'chat', 200, 100 + g % 900, 80, 20, 100,
       CASE WHEN g % 10 = 0 THEN jsonb_build_object('enhancement', jsonb_build_object(
                 'experiment', CAST(:exp AS bigint), 'enhancement', CAST(:enh AS bigint),
                 'arm', CASE WHEN g % 20 = 0 THEN 'control' ELSE 'variant' END))
            WHEN g % 10 = 1 THEN jsonb_build_object('enhancement', jsonb_build_object(
                 'experiment', null, 'enhancement', 999999, 'arm', 'active'))
            ELSE '{}'::jsonb END
FROM generate_series(1, :rows) g"""


async def run(url: str, rows: int) -> None:
    from intelligence.enhance import manage
    from intelligence.enhance.effectiveness import enhancement_effectiveness
    from intelligence.enhance.outcomes import experiment_outcomes
    from intelligence.memory.models import Pattern
    from intelligence.store.engine import make_engine
    from intelligence.store.migrate import upgrade_async

    await upgrade_async(url)
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            now = datetime.now(UTC)
            p = (
                await conn.execute(
                    insert(cast(Table, Pattern.__table__))
                    .values(label="bench", first_seen=now - timedelta(days=30), last_seen=now)
                    .returning(Pattern.__table__.c.id)
                )
            ).scalar_one()
            enh = await manage.create_enhancement(conn, p, "system_prompt", {"text": "Answer in JSON."}, "", "operator")
            exp = await manage.start_experiment(conn, enh, actor="bench")
            started = time.perf_counter()
            await conn.execute(text(_SEED), {"exp": exp, "enh": enh, "rows": rows})
            await conn.execute(
                text(
                    "INSERT INTO exchange_embeddings (request_id, canonical_hash, pattern_id, created_at, "
                    "model, client_key_fp) SELECT request_id, 'h', :p, started_at, model, 'fp' FROM exchanges "
                    "WHERE flags ? 'enhancement'"
                ),
                {"p": p},
            )
            await conn.execute(
                text(
                    "INSERT INTO outcome_signals (request_id, kind, ok) SELECT request_id, 'finish', "
                    "random() > 0.3 FROM exchanges WHERE flags ? 'enhancement'"
                )
            )
            await manage.promote_experiment(conn, exp, actor="bench")
        print(f"seeded {rows} exchanges in {time.perf_counter() - started:.1f} s")
        async with engine.connect() as conn:
            await conn.execute(text("ANALYZE"))
            await conn.commit()
            for bucket in ("day", "hour", "day"):
                started = time.perf_counter()
                eff = await enhancement_effectiveness(conn, enh, bucket=bucket)
                print(
                    f"enhancement_effectiveness by {bucket}: {(time.perf_counter() - started) * 1000:.0f} ms "
                    f"({len(eff['series'])} series rows; control n={eff['arms']['control']['n']}, "
                    f"variant n={eff['arms']['variant']['n']})"
                )
            started = time.perf_counter()
            await experiment_outcomes(conn, exp)
            print(f"experiment_outcomes, for comparison: {(time.perf_counter() - started) * 1000:.0f} ms")
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m intelligence.enhance.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default=None, help="an EMPTY database (default: a temporary embedded Postgres)")
    p.add_argument("--rows", type=int, default=200_000)
    args = p.parse_args(argv)
    if args.database_url:
        asyncio.run(run(args.database_url, args.rows))
        return
    from intelligence.embedded_pg import start_embedded

    with tempfile.TemporaryDirectory(prefix="llmproxy-bench-") as tmp:
        pg = start_embedded(Path(tmp))
        try:
            asyncio.run(run(pg.url, args.rows))
        finally:
            pg.stop()


if __name__ == "__main__":
    main()
