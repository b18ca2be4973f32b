"""AnomalyJob: runs the detectors over newly recorded exchanges, then judges pending suspicions.

It reads ``exchanges`` in (inserted_at, request_id) order from a cursor stored in the database, so a
restart resumes where it stopped; the suspicions of a batch and the cursor move commit together, so
no exchange is examined twice or skipped. Rows younger than ``settle_s`` wait for the next tick: a
recorder transaction that began earlier may still commit an older inserted_at. One job works at a
time per database (an advisory lock). See docs/anomalies.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from intelligence.anomaly import detectors as det
from intelligence.anomaly import store
from intelligence.anomaly.judge import Judge, JudgeConfig
from intelligence.anomaly.kinds import CURSOR_NAME
from intelligence.anomaly.response import ResponseConfig
from intelligence.claude.settings import IntelligenceFlags
from intelligence.jobs.cursors import read_position, write_position
from intelligence.memory.canonical import canonical_prompt
from intelligence.memory.worker import TextEncoder

if TYPE_CHECKING:
    from intelligence.claude import ClaudeClient

log = logging.getLogger(__name__)

LOCK_KEY = "llmproxy.anomaly_job"
_MAX_REPEAT_IDS = 20


@dataclass
class Suspicion:
    request_id: str
    client: str | None
    started_at: datetime
    model: str | None
    window: str
    findings: list[det.Finding] = field(default_factory=list)

    def document(self, detectors: list[str], window_s: float) -> dict[str, Any]:
        chosen = [f for f in self.findings if f.detector in detectors]
        return {
            "window": self.window,
            "window_s": window_s,
            "started_at": self.started_at.isoformat(),
            "model": self.model,
            "details": {f.detector: f.details for f in chosen},
            "strength": {f.detector: round(f.strength, 6) for f in chosen},
            "repeats": {},
            "more_requests": [],
        }


class AnomalyJob:
    def __init__(
        self,
        engine: AsyncEngine,
        client: ClaudeClient | None,
        embedder_factory: Callable[[], TextEncoder] | None,
        *,
        interval_s: float = 10.0,
        batch: int = 200,
        judge_batch: int = 20,
        settle_s: float = 5.0,
        detectors: det.DetectorConfig | None = None,
        judge: JudgeConfig | None = None,
        response: ResponseConfig | None = None,
        flags: IntelligenceFlags | None = None,
    ) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.batch = batch
        self.judge_batch = judge_batch
        self.settle_s = settle_s
        self.config = detectors or det.DetectorConfig()
        self.flags = flags or IntelligenceFlags.from_env()
        self._embedder_factory = embedder_factory
        self._embedder: TextEncoder | None = None
        self.judge = Judge(
            engine, client, self.embedder if embedder_factory is not None else None, config=judge, response=response
        )

    def embedder(self) -> TextEncoder:
        """Loaded on first need: a job that never meets a prompt suspicion never loads the model."""
        if self._embedder is None:
            assert self._embedder_factory is not None
            self._embedder = self._embedder_factory()
        return self._embedder

    # ---------------------------------------------------------------------------------- driving

    async def tick(self) -> dict[str, Any]:
        if not self.flags.anomaly_detection:
            return {"enabled": False}
        async with self.engine.connect() as lock_conn:
            got = (await lock_conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": LOCK_KEY})).scalar_one()
            await lock_conn.commit()
            if not got:
                return {"enabled": True, "skipped": "another anomaly job holds the lock"}
            try:
                detected = await self.detect()
                judged = await self.judge.judge_pending(self.judge_batch)
            finally:
                await lock_conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": LOCK_KEY})
                await lock_conn.commit()
        return {"enabled": True, **detected, "judged": judged}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            full = False
            try:
                summary = await self.tick()
                full = summary.get("examined", 0) >= self.batch
            except Exception:
                log.exception("anomaly job tick failed; retrying in %.0f s", self.interval_s)
            if full:  # a backlog: keep going, but let other tasks run
                await asyncio.sleep(0)
                continue
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass

    # ---------------------------------------------------------------------------------- detecting

    async def detect(self) -> dict[str, Any]:
        """Examine one batch of new exchanges; returns counts."""
        async with self.engine.begin() as conn:
            cursor = await read_cursor(conn)
            rows = await self._fetch(conn, cursor)
            if not rows:
                return {"examined": 0, "suspicions": 0, "merged": 0}
            suspicions = await self._suspicions(conn, rows)
            inserted = merged = 0
            for s in suspicions.values():
                new, repeats = await self._store(conn, s)
                inserted += new
                merged += repeats
            last = rows[-1]
            await write_cursor(conn, last.inserted_at, last.request_id)
        return {"examined": len(rows), "suspicions": inserted, "merged": merged}

    async def _fetch(self, conn: AsyncConnection, cursor: tuple[datetime, str] | None) -> list[det.ExchangeView]:
        where = "inserted_at < now() - make_interval(secs => :settle)"
        params: dict[str, Any] = {"settle": self.settle_s, "limit": self.batch}
        if cursor is not None:
            where += " AND (inserted_at, request_id) > (:ci, :cr)"
            params.update(ci=cursor[0], cr=cursor[1])
        result = await conn.execute(
            text(
                "SELECT request_id, client_key_fp, client_addr, started_at, inserted_at, model, tool_names, flags, "
                f"prompt_user, prompt_system FROM exchanges WHERE {where} ORDER BY inserted_at, request_id LIMIT :limit"
            ),
            params,
        )
        return [
            det.ExchangeView(
                request_id=r["request_id"],
                client=r["client_key_fp"] or r["client_addr"],
                client_key_fp=r["client_key_fp"],
                started_at=r["started_at"],
                inserted_at=r["inserted_at"],
                model=r["model"],
                tool_names=tuple(r["tool_names"] or ()),
                flags=r["flags"] or {},
                prompt_user=r["prompt_user"],
                prompt_system=r["prompt_system"],
            )
            for r in result.mappings().all()
        ]

    async def _suspicions(self, conn: AsyncConnection, rows: list[det.ExchangeView]) -> dict[str, Suspicion]:
        cfg = self.config
        out: dict[str, Suspicion] = {}

        def add(x: det.ExchangeView, findings: list[det.Finding]) -> None:
            if not findings:
                return
            s = out.setdefault(
                x.request_id, Suspicion(x.request_id, x.client, x.started_at, x.model, det.window_key(x.started_at, cfg.window))
            )
            s.findings.extend(findings)

        newest: dict[tuple[str, str], det.ExchangeView] = {}
        for x in rows:
            add(x, det.security_findings(x.flags, cfg))
            add(x, await det.newness_findings(conn, x, cfg))
            add(x, await self._novelty(conn, x))
            if x.client is not None:
                key = (x.client, det.window_key(x.started_at, cfg.window))
                if key not in newest or x.started_at > newest[key].started_at:
                    newest[key] = x
        # Rates are judged once per client and window, at the latest exchange of the batch in it.
        for (client, _), x in newest.items():
            sample = await det.rate_sample(conn, client, x.started_at, cfg)
            add(x, det.rate_findings(sample, cfg))
        return out

    async def _novelty(self, conn: AsyncConnection, x: det.ExchangeView) -> list[det.Finding]:
        if self._embedder_factory is None or x.client_key_fp is None:
            return []
        history = await det.novelty_history(conn, x, self.config)
        if history < self.config.novelty_min_history:
            return []
        prompt = canonical_prompt(x.prompt_user, x.prompt_system, x.tool_names)
        if prompt.empty:
            return []
        vector = await store.stored_embedding(conn, x.request_id, prompt)
        if vector is None:
            try:
                matrix = await asyncio.to_thread(self.embedder().encode, [prompt.text])
            except Exception:  # no model: skip novelty rather than wedge the batch
                log.exception("exchange %s: cannot embed the prompt; novelty not checked", x.request_id)
                return []
            vector = np.asarray(matrix[0], dtype=np.float32)
        finding = await det.novelty_finding(conn, x, vector, history, self.config)
        return [finding] if finding is not None else []

    async def _store(self, conn: AsyncConnection, s: Suspicion) -> tuple[int, int]:
        """Insert the suspicion, folding each detector into an open one of the same client and window."""
        remaining: list[str] = []
        repeats = 0
        for f in s.findings:
            if f.detector in remaining:
                continue
            open_row = None
            if s.client is not None:
                open_row = (
                    (
                        await conn.execute(
                            text(
                                "SELECT id, suspicion FROM anomaly_verdicts WHERE client_key_fp = :client AND :d = ANY(detectors) "
                                "AND (status = 'pending' OR suspicion->>'window' = :w) "
                                "ORDER BY id DESC LIMIT 1 FOR UPDATE"
                            ),
                            {"client": s.client, "d": f.detector, "w": s.window},
                        )
                    )
                    .mappings()
                    .first()
                )
            if open_row is None:
                remaining.append(f.detector)
                continue
            doc = dict(open_row["suspicion"] or {})
            counts = dict(doc.get("repeats") or {})
            counts[f.detector] = int(counts.get(f.detector, 0)) + 1
            more = list(doc.get("more_requests") or [])
            if s.request_id not in more and len(more) < _MAX_REPEAT_IDS:
                more.append(s.request_id)
            doc.update(repeats=counts, more_requests=more)
            await conn.execute(
                text("UPDATE anomaly_verdicts SET suspicion = CAST(:doc AS jsonb) WHERE id = :id"),
                {"doc": _json(doc), "id": open_row["id"]},
            )
            repeats += 1
        if not remaining:
            return 0, repeats
        await conn.execute(
            text(
                "INSERT INTO anomaly_verdicts (request_id, client_key_fp, detectors, suspicion) "
                "VALUES (:rid, :client, :detectors, CAST(:doc AS jsonb))"
            ),
            {
                "rid": s.request_id,
                "client": s.client,
                "detectors": remaining,
                "doc": _json(s.document(remaining, self.config.window.total_seconds())),
            },
        )
        return 1, repeats


def _json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, default=str)


async def read_cursor(conn: AsyncConnection) -> tuple[datetime, str] | None:
    doc = await read_position(conn, CURSOR_NAME)
    if not doc or "inserted_at" not in doc:
        return None
    return datetime.fromisoformat(doc["inserted_at"]), str(doc["request_id"])


async def write_cursor(conn: AsyncConnection, inserted_at: datetime, request_id: str) -> None:
    await write_position(conn, CURSOR_NAME, {"inserted_at": inserted_at.isoformat(), "request_id": request_id})
