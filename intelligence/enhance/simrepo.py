"""The database views `llmproxy simulate enhancement` needs (all of its SQL lives here).

The simulation tags its traffic with ``x-session-id`` values that start with a prefix (``sim-``), so
these queries only ever look at the simulation's own exchanges. Ground truth of a simulated
request's success is the fake model's answer, ``finish_reason = 'stop'``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_COUNTS = text("""
SELECT count(*) AS logged,
       count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM exchange_embeddings m WHERE m.request_id = x.request_id)) AS unembedded
FROM exchanges x WHERE x.session_id LIKE :prefix
""")

_ARMS = text("""
SELECT flags -> 'enhancement' ->> 'arm' AS arm, count(*) AS n, count(DISTINCT session_id) AS sessions,
       count(*) FILTER (WHERE finish_reason = 'stop') AS ok
FROM exchanges
WHERE flags ? 'enhancement' AND (flags -> 'enhancement' ->> 'experiment')::bigint = :x
GROUP BY 1
""")

_FAMILY = text("""
SELECT count(*) AS n, count(*) FILTER (WHERE finish_reason = 'stop') AS ok
FROM exchanges WHERE session_id LIKE :prefix AND prompt_user LIKE :marker
""")

_TARGET_PATTERN = text("""
SELECT m.pattern_id FROM exchange_embeddings m JOIN exchanges x USING (request_id)
WHERE x.prompt_user LIKE :marker AND x.session_id LIKE :prefix AND m.pattern_id IS NOT NULL
GROUP BY 1 ORDER BY count(*) DESC LIMIT 1
""")

_PATTERNS_OF = text("""
SELECT m.pattern_id, count(*) AS n FROM exchange_embeddings m JOIN exchanges x USING (request_id)
WHERE x.prompt_user LIKE :marker AND x.session_id LIKE :prefix AND m.pattern_id IS NOT NULL
GROUP BY 1 ORDER BY 2 DESC
""")


class SimulationRepository:
    def __init__(self, engine: AsyncEngine, prefix: str = "sim-") -> None:
        self.engine = engine
        self.prefix = prefix

    async def counts(self) -> tuple[int, int]:
        """(exchanges logged, of which not yet embedded by the pattern worker)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(_COUNTS, {"prefix": f"{self.prefix}%"})).one()
        return int(row.logged), int(row.unembedded)

    async def wait_settled(self, expected: int, timeout: float = 120.0) -> bool:
        """Until ``expected`` requests are logged and embedded (an exposure's success needs both)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # bounded by the deadline
            logged, unembedded = await self.counts()
            if logged >= expected and unembedded == 0:
                return True
            await asyncio.sleep(0.25)
        return False

    async def arm_outcomes(self, experiment_id: int) -> dict[str, dict[str, Any]]:
        """Per arm: exposures, sessions and the ground truth of success (finish_reason "stop")."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_ARMS, {"x": experiment_id})).all()
        return {
            r.arm: {"n": int(r.n), "sessions": int(r.sessions), "successes": int(r.ok), "rate": (r.ok / r.n) if r.n else None}
            for r in rows
        }

    async def family_rate(self, marker: str) -> float | None:
        """Ground-truth success rate of the simulation's requests whose user turn contains ``marker``."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(_FAMILY, {"prefix": f"{self.prefix}%", "marker": f"%{marker}%"})).one()
        return row.ok / row.n if row.n else None

    async def target_pattern(self, marker: str) -> int | None:
        """The pattern most of the requests containing ``marker`` were assigned to."""
        async with self.engine.connect() as conn:
            found = (await conn.execute(_TARGET_PATTERN, {"prefix": f"{self.prefix}%", "marker": f"%{marker}%"})).scalar()
        return int(found) if found is not None else None

    async def patterns_of(self, marker: str) -> dict[int, int]:
        """Pattern id -> requests, for the requests containing ``marker`` (does the family stay one pattern?)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_PATTERNS_OF, {"prefix": f"{self.prefix}%", "marker": f"%{marker}%"})).all()
        return {int(r.pattern_id): int(r.n) for r in rows}


__all__ = ["SimulationRepository"]
