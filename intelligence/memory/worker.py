"""The background pattern worker: embeds recorded exchanges, assigns patterns, stores signals.

It runs in its own process (see :func:`configure_worker_process`), reading the ``exchanges``
table the recorder writes, so a burst of traffic only makes it fall behind; the gateway never
waits for it. It wakes on the recorder's ``NOTIFY llmproxy_exchanges`` and also polls.
Only one worker works at a time per database (an advisory lock): pattern updates are
read-modify-write and assume a single writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from intelligence.memory.assign import MemoryConfig, PatternAssigner
from intelligence.memory.canonical import CanonicalPrompt, canonical_prompt
from intelligence.memory.feedback import add_feedback
from intelligence.memory.maintenance import PatternMaintenance
from intelligence.memory.models import EMBEDDING_DIM
from intelligence.memory.repository import (
    EmbeddingRow,
    PatternRepository,
    PendingExchange,
    Signal,
    day_bucket,
    hour_bucket,
    utc,
)
from intelligence.memory.signals import exchange_signals
from intelligence.store.repositories import NOTIFY_CHANNEL

__all__ = ["PatternWorker", "WorkerStats", "add_feedback", "configure_worker_process"]

log = logging.getLogger(__name__)

WORKER_LOCK_KEY = "llmproxy.pattern_worker"


_Batch = tuple[list[PendingExchange], list[CanonicalPrompt], list[np.ndarray | None]]


class TextEncoder(Protocol):
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


@dataclass
class WorkerStats:
    processed: int = 0
    embedded: int = 0
    batches: int = 0
    embed_seconds: float = 0.0
    last_lag_s: float | None = None  # now - started_at of the newest exchange of the last batch
    poisoned: set[str] = field(default_factory=set)  # request ids that fail even alone (skipped)

    @property
    def embeddings_per_s(self) -> float | None:
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else None


def configure_worker_process(threads: int = 1, nice: int = 10) -> None:
    """Call first thing in the worker process: keep the model's CPU use from starving the gateway."""
    if nice and hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(nice)
    # Nice 10 still took a third of a core from the sidecar at saturation on 2 cores (llmproxy bench,
    # docs/performance.md). SCHED_IDLE runs the worker only on CPU nobody else wants: under sustained
    # overload the backlog waits in the exchanges table, which the worker reads in order anyway.
    if os.environ.get("LLMPROXY_WORKER_SCHED", "idle").strip().lower() == "idle" and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    import torch

    torch.set_num_threads(max(1, threads))


class PatternWorker:
    def __init__(
        self,
        engine: AsyncEngine,
        embedder: TextEncoder,
        *,
        batch: int = 64,
        poll_interval: float = 0.5,
        config: MemoryConfig | None = None,
        maintenance_interval: float = 300.0,
        late_window: timedelta = timedelta(minutes=10),
        full_sweep_interval: float = 600.0,
    ) -> None:
        if embedder.dim != EMBEDDING_DIM:
            raise ValueError(
                f"embedding model gives {embedder.dim} dimensions, the database stores {EMBEDDING_DIM} "
                "(set LLMPROXY_EMBEDDING_DIM before migrating)"
            )
        self.engine = engine
        self.embedder = embedder
        self.batch = batch
        self.poll_interval = poll_interval
        self.config = config or MemoryConfig()
        self.assigner = PatternAssigner(self.config)
        self.maintenance = PatternMaintenance(engine, self.config)
        self.maintenance_interval = maintenance_interval
        self.late_window = late_window
        self.full_sweep_interval = full_sweep_interval
        self.stats = WorkerStats()
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # Exchanges arrive roughly in started_at order; scanning from a watermark keeps each poll
        # cheap however large the table grows. Late arrivals (a recorder replaying its spool) are
        # caught by the slack below the watermark and by the periodic full sweep.
        self._watermark: datetime | None = None
        self._last_full_sweep = float("-inf")
        self._wake = asyncio.Event()
        self._prefetch: asyncio.Future[_Batch | None] | None = None

    # ------------------------------------------------------------------------------- one batch

    async def run_once(self) -> int:
        """Process up to ``batch`` pending exchanges; returns how many were processed.

        While a batch is written to the database the next one is fetched and embedded in the
        background (the model runs in a thread), so throughput approaches the slower of the two
        stages instead of their sum.
        """
        current = await self._take_prefetched()
        if current is None:
            current = await self._fetch_and_embed(exclude=())
        if current is None:
            return 0
        pending, prompts, vectors = current
        self._prefetch = asyncio.ensure_future(self._fetch_and_embed(exclude=[x.request_id for x in pending]))
        try:
            await self._store(pending, prompts, vectors)
        except Exception:  # one bad row must not block the queue: retry one by one
            log.exception("pattern batch failed; retrying its %d exchanges one by one", len(pending))
            for i, x in enumerate(pending):
                try:
                    await self._store([x], [prompts[i]], [vectors[i]])
                except Exception:
                    log.exception("exchange %s cannot be processed; skipping it", x.request_id)
                    self.stats.poisoned.add(x.request_id)
        newest = max(x.started_at for x in pending)
        self._watermark = newest if self._watermark is None else max(self._watermark, newest)
        self.stats.processed += len(pending)
        self.stats.batches += 1
        self.stats.last_lag_s = (datetime.now(UTC) - utc(newest)).total_seconds()
        return len(pending)

    async def _take_prefetched(self) -> _Batch | None:
        task, self._prefetch = self._prefetch, None
        return None if task is None else await task

    def discard_prefetch(self) -> None:
        """Drop a batch fetched ahead (its exchanges stay pending and are fetched again later)."""
        task, self._prefetch = self._prefetch, None
        if task is None:
            return
        if task.done() and not task.cancelled():
            task.exception()  # mark a failure as seen: the exchanges are simply fetched again
        task.cancel()

    async def _fetch_and_embed(self, exclude: Sequence[str]) -> _Batch | None:
        now = time.monotonic()
        full = now - self._last_full_sweep >= self.full_sweep_interval
        since = None if full or self._watermark is None else self._watermark - self.late_window
        async with self._sessions() as session:
            pending = await PatternRepository(session).pending_exchanges(
                self.batch, since=since, exclude=[*self.stats.poisoned, *exclude]
            )
        if full and len(pending) < self.batch:
            self._last_full_sweep = now  # the full scan reached the end of the backlog
        if not pending:
            return None
        prompts = [canonical_prompt(x.prompt_user, x.prompt_system, x.tool_names) for x in pending]
        return pending, prompts, await self._embed(prompts)

    async def _embed(self, prompts: Sequence[CanonicalPrompt]) -> list[np.ndarray | None]:
        unique: dict[str, str] = {p.hash: p.text for p in prompts if not p.empty}
        if not unique:
            return [None] * len(prompts)
        hashes = list(unique)
        started = time.perf_counter()
        # the model holds the GIL for little of its time; a thread keeps LISTEN and stop events live
        matrix = await asyncio.to_thread(self.embedder.encode, [unique[h] for h in hashes], self.batch)
        self.stats.embed_seconds += time.perf_counter() - started
        self.stats.embedded += len(hashes)
        by_hash = {h: matrix[i] for i, h in enumerate(hashes)}
        return [None if p.empty else by_hash[p.hash] for p in prompts]

    async def _store(
        self, pending: Sequence[PendingExchange], prompts: Sequence[CanonicalPrompt], vectors: Sequence[np.ndarray | None]
    ) -> None:
        counts: dict[tuple[int, str, datetime], int] = {}
        usage: dict[tuple[int, str, str], tuple[int, datetime]] = {}
        signals: list[Signal] = []
        rows: list[EmbeddingRow] = []
        async with self._sessions() as session, session.begin():
            repo = PatternRepository(session)
            batch = self.assigner.batch(repo)
            for i, (x, prompt, vector) in enumerate(zip(pending, prompts, vectors)):
                pattern_id: int | None = None
                similarity: float | None = None
                if vector is not None:
                    assignment = await batch.assign(
                        vector, request_id=x.request_id, text=x.prompt_user or prompt.text, seen_at=x.started_at
                    )
                    pattern_id, similarity = assignment.pattern_id, assignment.similarity
                retry = await self._retry_signal(repo, pending[:i], prompts[:i], vectors[:i], x, prompt, vector)
                if retry is not None:
                    signals.append(retry)
                rows.append(
                    EmbeddingRow(
                        request_id=x.request_id,
                        embedding=vector,
                        canonical_hash=prompt.hash,
                        pattern_id=pattern_id,
                        similarity=similarity,
                        client_key_fp=x.client_key_fp,
                        model=x.model,
                        created_at=x.started_at,
                    )
                )
                signals.extend(exchange_signals(x))
                if pattern_id is not None:
                    for key in ((pattern_id, "hour", hour_bucket(x.started_at)), (pattern_id, "day", day_bucket(x.started_at))):
                        counts[key] = counts.get(key, 0) + 1
                    for dim, value in (("model", x.model), ("client", x.client_key_fp)):
                        if value:
                            n, seen = usage.get((pattern_id, dim, value), (0, x.started_at))
                            usage[(pattern_id, dim, value)] = (n + 1, max(seen, x.started_at))
            await batch.flush()
            await repo.insert_embeddings(rows)
            await repo.add_counts(counts)
            await repo.add_usage(usage)
            await repo.add_signals(signals)

    async def _retry_signal(
        self,
        repo: PatternRepository,
        earlier: Sequence[PendingExchange],
        earlier_prompts: Sequence[CanonicalPrompt],
        earlier_vectors: Sequence[np.ndarray | None],
        x: PendingExchange,
        prompt: CanonicalPrompt,
        vector: np.ndarray | None,
    ) -> Signal | None:
        """A 'retry' failure on the client's latest near-identical prompt within the window, if any.

        Earlier exchanges of the same batch are not stored yet, so they are compared here; older
        ones are asked of the database.
        """
        if prompt.empty or not x.client_key_fp:
            return None
        window = timedelta(seconds=self.config.retry_window_s)
        lo = x.started_at - window
        best: tuple[str, float, datetime] | None = None
        for e, p, v in zip(reversed(earlier), reversed(earlier_prompts), reversed(earlier_vectors)):
            if e.client_key_fp != x.client_key_fp or not lo <= e.started_at <= x.started_at or p.empty:
                continue
            sim = 1.0 if p.hash == prompt.hash else float(v @ vector) if v is not None and vector is not None else 0.0
            if sim >= self.config.retry_similarity:
                best = (e.request_id, sim, e.started_at)
                break
        if best is None:
            found = await repo.recent_from_client(
                x.client_key_fp, vector, prompt.hash, request_id=x.request_id, since=lo, until=x.started_at
            )
            if found is not None and found[1] >= self.config.retry_similarity:
                best = found
        if best is None:
            return None
        earlier_id, sim, earlier_at = best
        gap = (utc(x.started_at) - utc(earlier_at)).total_seconds()
        return Signal(
            earlier_id, "retry", False, value=x.request_id, detail=f"same client, similarity {sim:.3f}, {gap:.1f} s later"
        )

    # ------------------------------------------------------------------------------- the loop

    async def run(self, stop_event: asyncio.Event) -> None:
        """Work until ``stop_event`` is set; survives database outages (retries with back-off)."""
        backoff = 1.0
        while not stop_event.is_set():
            try:
                async with self.engine.connect() as conn:
                    if not await self._lead(conn):
                        log.info("another pattern worker holds the lock; waiting")
                        await _wait(stop_event, 10.0)
                        continue
                    listening = False
                    try:
                        listening = await self._listen(conn)
                        backoff = 1.0
                        await self._loop(stop_event)
                    finally:
                        self.discard_prefetch()
                        await self._resign(conn, listening=listening)
            except Exception:
                if stop_event.is_set():
                    break
                log.exception("pattern worker error; retrying in %.0f s", backoff)
                await _wait(stop_event, backoff)
                backoff = min(backoff * 2, 30.0)

    async def _loop(self, stop_event: asyncio.Event) -> None:
        last_maintenance = time.monotonic()
        while not stop_event.is_set():
            self._wake.clear()
            n = await self.run_once()
            if time.monotonic() - last_maintenance >= self.maintenance_interval:
                await self.maintenance.run()
                last_maintenance = time.monotonic()
            if n >= self.batch:
                continue  # backlog: go on without sleeping
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop_event.wait())
            await asyncio.wait({waiter, stopper}, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED)
            for task in (waiter, stopper):
                task.cancel()

    async def _lead(self, conn: AsyncConnection) -> bool:
        # session-level advisory lock: held while this connection lives, released if the process dies
        got = (await conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": WORKER_LOCK_KEY})).scalar_one()
        await conn.commit()
        return bool(got)

    async def _resign(self, conn: AsyncConnection, *, listening: bool) -> None:
        # the connection goes back to the pool: a lock left on it would lock out the next run()
        with contextlib.suppress(Exception):
            if listening:
                raw = await _driver_connection(conn)
                await raw.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": WORKER_LOCK_KEY})
            await conn.commit()

    async def _listen(self, conn: AsyncConnection) -> bool:
        raw = await _driver_connection(conn)
        if raw is None or not hasattr(raw, "add_listener"):
            return False
        await raw.add_listener(NOTIFY_CHANNEL, self._on_notify)
        return True

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()


async def _driver_connection(conn: AsyncConnection) -> Any:
    fairy = await conn.get_raw_connection()
    return getattr(fairy, "driver_connection", None)


async def _wait(stop_event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop_event.wait(), timeout=seconds)
