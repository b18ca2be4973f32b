"""The recorder: takes finished exchanges from the hot path and gets them into Postgres.

``submit`` only puts the record on an in-memory queue. A writer task batches the queue into
one transaction per batch. When the database is down or slow, batches go to a durable
on-disk spool instead (:mod:`intelligence.store.spool`), and while the spool holds anything
new batches follow them there, so records reach the database in the order they came. A
replay task retries the database every ``retry_interval`` and moves the spool back, oldest
segment first; inserts are idempotent on request_id, so a crash mid-replay duplicates nothing.

Order is kept except when the queue overflows: an overflowing record goes to the spool at
once, ahead of older records still queued in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from intelligence.records import ExchangeRecord
from intelligence.store import metrics
from intelligence.store.repositories import ExchangeRepository
from intelligence.store.spool import Spool

log = logging.getLogger(__name__)

# SQLSTATE classes that blame the data (22 data exception, 23 integrity violation): retrying
# such a record can never succeed, so it is set aside instead of blocking everything behind it.
_DATA_ERROR_CLASSES = ("22", "23")
_REPEAT_WARNING_SECONDS = 30.0


class DbRecorder:
    """A :class:`intelligence.records.Recorder` that writes to Postgres, spooling to disk when it cannot."""

    def __init__(
        self,
        engine: AsyncEngine,
        spool_dir: Path,
        *,
        queue_max: int = 10_000,
        batch_max: int = 200,
        flush_interval: float = 0.1,  # also the floor of "response end -> row visible" (docs/dashboard.md)
        retry_interval: float = 1.0,
        batch_timeout: float = 5.0,
        segment_max_records: int = 1000,
        segment_max_bytes: int = 16 * 2**20,
    ) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._spool = Spool(spool_dir, segment_max_records=segment_max_records, segment_max_bytes=segment_max_bytes)
        self._queue: asyncio.Queue[ExchangeRecord] = asyncio.Queue(maxsize=queue_max)
        self._batch_max = batch_max
        self._flush_interval = flush_interval
        self._retry_interval = retry_interval
        self._batch_timeout = batch_timeout
        self._stopping = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._in_flight: list[ExchangeRecord] = []  # taken off the queue, not yet durable anywhere
        self._closed = False
        self._written = self._spooled = self._replayed = self._rejected = self._dropped = 0
        self._db_ok = True
        self._last_warning = 0.0

    # -- stats ---------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def spool_depth(self) -> int:
        return self._spool.depth

    @property
    def written(self) -> int:
        """Records committed straight from memory."""
        return self._written

    @property
    def spooled(self) -> int:
        """Records written to the spool (a record spooled twice after a crash counts twice)."""
        return self._spooled

    @property
    def replayed(self) -> int:
        """Records committed from the spool."""
        return self._replayed

    @property
    def rejected(self) -> int:
        return self._rejected

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def db_ok(self) -> bool:
        return self._db_ok

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer and the replay task; spool segments left by a previous run replay first."""
        if self._writer is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # the gauges follow the most recently started recorder (there is one per process)
        metrics.QUEUE_DEPTH.set_function(lambda: self.queue_depth)
        metrics.SPOOL_DEPTH.set_function(lambda: self.spool_depth)
        metrics.DB_OK.set_function(lambda: 1.0 if self._db_ok else 0.0)
        self._writer = asyncio.create_task(self._write_loop(), name="recorder-writer")
        self._replayer = asyncio.create_task(self._replay_loop(), name="recorder-replay")

    async def stop(self, timeout: float = 10.0) -> None:
        """Drain: every record submitted so far ends up in the database or in the spool."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._stopping.set()
        if self._writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), timeout)
            except TimeoutError:
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
        remaining = deadline - loop.time()
        if self._spool.depth and remaining > 0:
            # one last attempt, so a clean shutdown with the database up leaves no spool behind
            try:
                await asyncio.wait_for(self._replay_all(), remaining)
            except Exception as exc:  # noqa: BLE001 - the spool keeps the records for the next start
                self._db_failed(exc, "final replay")
        leftovers = self._in_flight + self._drain_queue()
        self._in_flight = []
        self._spool_now(leftovers)
        self._closed = True
        self._spool.close()

    # -- hot path ------------------------------------------------------------------------

    def submit(self, record: ExchangeRecord) -> None:
        """Hand a record over. Never blocks on the database and never raises."""
        try:
            if self._closed:
                self._spool_now([record])
                return
            if self._loop is not None and threading.get_ident() != self._loop_thread:
                self._loop.call_soon_threadsafe(self.submit, record)
                return
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            # one short buffered write; the writer fsyncs it on its next tick
            self._spool_now([record], fsync=False)
        except Exception:
            log.exception("request log: could not accept record %s", getattr(record, "request_id", "?"))

    # -- writer --------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            try:
                batch = await self._next_batch()
                if not batch:
                    return
                await self._deliver(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("request log: writer error")

    async def _next_batch(self) -> list[ExchangeRecord]:
        """Up to batch_max records, waiting at most flush_interval after the first; [] once stopped and empty."""
        first: ExchangeRecord | None = None
        while first is None:
            try:
                first = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                if self._stopping.is_set():
                    return []
                if self._spool.dirty:  # overflow appends from submit() are made durable here
                    await asyncio.to_thread(self._spool.sync)
                with contextlib.suppress(TimeoutError):
                    first = await asyncio.wait_for(self._queue.get(), self._flush_interval)
        self._in_flight = [first]
        return await self._fill_batch()

    async def _fill_batch(self) -> list[ExchangeRecord]:
        batch = self._in_flight
        deadline = asyncio.get_running_loop().time() + self._flush_interval
        while len(batch) < self._batch_max:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or self._stopping.is_set():
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _deliver(self, batch: list[ExchangeRecord]) -> None:
        if self._spool.depth == 0:
            try:
                rejected = await self._store(batch)
            except Exception as exc:  # noqa: BLE001 - any failure: the spool takes the batch
                self._db_failed(exc, "write")
            else:
                self._count_written(len(batch) - rejected)
                self._in_flight = []
                return
        await self._spool_async(batch)
        self._in_flight = []

    # -- replay --------------------------------------------------------------------------

    async def _replay_loop(self) -> None:
        while True:
            if self._spool.depth:
                try:
                    if not self._db_ok:
                        # a cheap probe first: no reading and re-reading of segments while it is down
                        await asyncio.wait_for(self._ping(), self._batch_timeout)
                    await self._replay_all()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - retried after retry_interval
                    self._db_failed(exc, "replay")
            await asyncio.sleep(self._retry_interval)

    async def _replay_all(self) -> None:
        """Move every spooled record into the database, oldest segment first."""
        replayed_before = self._replayed
        while True:
            sealed = self._spool.sealed_segments()
            if not sealed:
                if self._spool.active_depth == 0:
                    break
                await asyncio.to_thread(self._spool.seal)
                continue
            await self._replay_segment(sealed[0])
        if self._replayed > replayed_before:
            log.info("request log: replayed %d spooled records", self._replayed - replayed_before)

    async def _replay_segment(self, path: Path) -> None:
        contents = await asyncio.to_thread(self._spool.read, path)
        for start in range(0, len(contents.records), self._batch_max):
            chunk = contents.records[start : start + self._batch_max]
            rejected = await self._store(chunk)
            self._replayed += len(chunk) - rejected
            metrics.REPLAYED.inc(len(chunk) - rejected)
        if contents.bad_lines:
            log.warning("request log: %d unreadable lines in spool segment %s set aside", len(contents.bad_lines), path.name)
            await asyncio.to_thread(self._spool.reject, contents.bad_lines, "unreadable spool line")
        await asyncio.to_thread(self._spool.remove, path)  # only now: its records are committed
        self._db_recovered()

    # -- database ------------------------------------------------------------------------

    async def _store(self, records: Sequence[ExchangeRecord]) -> int:
        """Commit records (one transaction); returns how many the database refused as invalid.

        Raises when the database is unreachable, slow (batch_timeout) or failing otherwise.
        """
        try:
            await asyncio.wait_for(self._insert(records), self._batch_timeout)
            return 0
        except Exception as exc:
            if not _is_data_error(exc):
                raise
        # one bad record must not hold back the rest of its batch
        rejected = 0
        for record in records:
            try:
                await asyncio.wait_for(self._insert([record]), self._batch_timeout)
            except Exception as exc:
                if not _is_data_error(exc):
                    raise
                rejected += 1
                await self._reject(record, exc)
        return rejected

    async def _ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def _insert(self, records: Sequence[ExchangeRecord]) -> None:
        async with self._sessions.begin() as session:
            repository = ExchangeRepository(session)
            for page in _statement_pages(records):
                await repository.insert_batch(page)

    async def _reject(self, record: ExchangeRecord, exc: BaseException) -> None:
        reason = _describe(exc)
        log.warning(
            "request log: database refused record %s (%s); kept in %s",
            record.request_id,
            reason,
            self._spool.directory / "rejected.jsonl",
        )
        self._rejected += 1
        metrics.REJECTED.inc()
        try:
            await asyncio.to_thread(self._spool.reject, [record.to_json()], reason)
        except OSError:
            log.exception("request log: could not keep rejected record %s", record.request_id)

    def _db_failed(self, exc: BaseException, during: str) -> None:
        now = time.monotonic()
        if self._db_ok or now - self._last_warning >= _REPEAT_WARNING_SECONDS:
            log.warning(
                "request log: database unavailable during %s (%s); records wait in the spool at %s",
                during,
                _describe(exc),
                self._spool.directory,
            )
            self._last_warning = now
        else:
            log.debug("request log: database still unavailable during %s (%s)", during, _describe(exc))
        self._db_ok = False

    def _db_recovered(self) -> None:
        if not self._db_ok:
            log.info("request log: database reachable again")
        self._db_ok = True

    def _count_written(self, n: int) -> None:
        self._written += n
        metrics.WRITTEN.inc(n)
        self._db_recovered()

    # -- spool ---------------------------------------------------------------------------

    def _spool_now(self, records: Sequence[ExchangeRecord], *, fsync: bool = True) -> None:
        if not records:
            return
        try:
            self._spool.append(records, fsync=fsync)
        except Exception:  # noqa: BLE001 - disk full or gone: nothing left to keep them in
            self._count_dropped(len(records))
        else:
            self._count_spooled(len(records))

    async def _spool_async(self, records: Sequence[ExchangeRecord]) -> None:
        """Like _spool_now, with the disk write and fsync off the event loop."""
        try:
            await asyncio.to_thread(self._spool.append, records)
        except Exception:  # noqa: BLE001
            self._count_dropped(len(records))
        else:
            self._count_spooled(len(records))

    def _count_spooled(self, n: int) -> None:
        self._spooled += n
        metrics.SPOOLED.inc(n)

    def _count_dropped(self, n: int) -> None:
        self._dropped += n
        metrics.DROPPED.inc(n)
        log.exception("request log: could not spool %d records; they are lost", n)

    def _drain_queue(self) -> list[ExchangeRecord]:
        drained: list[ExchangeRecord] = []
        while True:
            try:
                drained.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return drained


def _statement_pages(records: Sequence[ExchangeRecord]) -> list[Sequence[ExchangeRecord]]:
    """The batch cut into pages whose sizes are powers of two, largest first (200 -> 128 + 64 + 8).

    A multi-row INSERT's SQL text depends on its row count, and SQLAlchemy's asyncpg dialect keeps
    up to 100 prepared statements per pooled connection, each holding that text and its parameter
    descriptions (on average ~140 KiB of malloc'd memory per statement, measured). Batches of every
    size from 1 to batch_max filled those caches with hundreds of one-off statements, so the
    sidecar's RSS grew ~0.7 KiB per request for 100k requests and more (docs/performance.md).
    Power-of-two pages leave at most eight insert shapes, which stay cached and are reused. (The
    sessions upsert still varies with the number of distinct sessions in a page; its rows are small.)
    """
    pages: list[Sequence[ExchangeRecord]] = []
    start, remaining = 0, len(records)
    while remaining:
        size = 1 << (remaining.bit_length() - 1)
        pages.append(records[start : start + size])
        start, remaining = start + size, remaining - size
    return pages


def _is_data_error(exc: BaseException) -> bool:
    """The record, not the database, is the problem: the server refused its data, or the driver could
    not encode a value for the COPY (a number out of range for its column, say)."""
    if isinstance(exc, asyncpg.exceptions.DataError | OverflowError):
        return True
    orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else exc
    sqlstate = getattr(orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in _DATA_ERROR_CLASSES


def _describe(exc: BaseException) -> str:
    """A log-safe description: never the exception text of SQL errors, which quotes parameters (bodies)."""
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None)
        return f"{type(orig).__name__}" + (f" sqlstate={sqlstate}" if sqlstate else "")
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OverflowError):
        return "a value out of range for its column (sqlstate=22003, refused by the driver)"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return type(exc).__name__
