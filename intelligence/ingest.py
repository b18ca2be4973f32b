"""The recorder: takes finished exchanges from the hot path and gets them into Postgres.

``submit`` puts the record on an in-memory queue and appends it to a write-ahead journal (one
``write()``, no fsync: it survives the process being killed, SIGKILL or the OOM killer, though not
the machine losing power). A writer task batches the queue into one transaction per batch. When the
database is down or slow, batches go to a durable on-disk spool instead
(:mod:`intelligence.store.spool`), and while the spool holds anything new batches follow them there,
so records reach the database in the order they came. A replay task retries the database every
``retry_interval`` and moves the spool back, oldest segment first; inserts are idempotent on
request_id, so a crash mid-replay duplicates nothing. A journal left by a killed process is taken
into the spool at the next start, so its records are replayed too (again idempotently).

Order is kept except when the queue overflows: an overflowing record goes to the spool at
once, ahead of older records still queued in memory.

Disk full (docs/reliability.md): when the spool's disk refuses a batch while the database is away,
the batch is held in memory, in order, up to ``memory_max`` records / ``memory_max_bytes``, and the
recorder keeps trying the disk and the database. Past that bound records are dropped: each drop is
counted (``llmproxy_recorder_dropped_total``, ``dropped``), logged at ERROR, shown by ``llmproxy
status`` (the state file below), and announced as a critical ``request_log_loss`` event once the
database is back. Nothing is lost silently.

The recorder's state (queue, spool, memory-held and dropped counts, database state, write lag) is
rewritten every ``state_interval`` seconds into ``<spool>/recorder.json`` (:data:`STATE_FILE`), a file
of fixed size allocated at start so that a full disk cannot stop it from being updated.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import errno
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from intelligence.records import ExchangeRecord
from intelligence.store import metrics
from intelligence.store.repositories import ExchangeRepository
from intelligence.store.spool import SegmentContents, Spool

log = logging.getLogger(__name__)

# SQLSTATE classes that blame the data (22 data exception, 23 integrity violation): retrying
# such a record can never succeed, so it is set aside instead of blocking everything behind it.
_DATA_ERROR_CLASSES = ("22", "23")
_REPEAT_WARNING_SECONDS = 30.0

STATE_FILE = "recorder.json"
STATE_FILE_SIZE = 8192
JOURNAL_DIR = "journal"
MEMORY_MAX_ENV = "LLMPROXY_RECORDER_MEMORY_MAX"  # records held in memory when the spool's disk is full
MEMORY_MAX_MB_ENV = "LLMPROXY_RECORDER_MEMORY_MAX_MB"
JOURNAL_ENV = "LLMPROXY_RECORDER_JOURNAL"  # "0": no write-ahead journal (a killed sidecar loses its queue)

# write lag histogram in the state file: bucket upper bounds in ms, geometric (x1.25) from 1 ms to ~10 min
LAG_BOUNDS_MS: tuple[float, ...] = tuple(round(1.25**i, 3) for i in range(0, 61))

_Item = tuple[int, ExchangeRecord, str | None]  # submission number, record, its JSON line (journaled ones)


class DbRecorder:
    """A :class:`intelligence.records.Recorder` that writes to Postgres, spooling to disk when it cannot."""

    def __init__(
        self,
        engine: AsyncEngine,
        spool_dir: Path,
        *,
        queue_max: int = 10_000,
        batch_max: int = 200,
        flush_interval: float = 0.02,  # the floor of "response end -> row visible" (docs/dashboard.md); 0.1 until 2026-12-06
        retry_interval: float = 1.0,
        batch_timeout: float = 5.0,
        segment_max_records: int = 1000,
        segment_max_bytes: int = 16 * 2**20,
        memory_max: int | None = None,
        memory_max_bytes: int | None = None,
        journal: bool | None = None,
        journal_max_records: int = 5000,
        state_interval: float = 1.0,
    ) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._spool = Spool(spool_dir, segment_max_records=segment_max_records, segment_max_bytes=segment_max_bytes)
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_max)
        self._batch_max = batch_max
        self._flush_interval = flush_interval
        self._retry_interval = retry_interval
        self._batch_timeout = batch_timeout
        self._state_interval = state_interval
        self._stopping = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._stater: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._in_flight: list[_Item] = []  # taken off the queue, not yet durable anywhere
        self._closed = False
        self._written = self._spooled = self._replayed = self._rejected = self._dropped = 0
        self._db_ok = True
        self._db_down_since: float | None = None
        self._last_db_error = ""
        self._last_warning = 0.0
        # disk full: records the spool refused, oldest first, as JSON lines (their exact size is known)
        self._held: collections.deque[str] = collections.deque()
        self._held_bytes = 0
        self._memory_max = memory_max if memory_max is not None else _env_int(MEMORY_MAX_ENV, 50_000)
        self._memory_max_bytes = memory_max_bytes if memory_max_bytes is not None else _env_int(MEMORY_MAX_MB_ENV, 256) * 2**20
        self._disk_full_since: float | None = None
        self._last_disk_error = ""
        self._last_disk_try = 0.0
        self._disk_retry = retry_interval  # doubles up to 30 s while the disk stays full
        self._last_drop_log = 0.0
        self._unannounced_drops = 0
        # write-ahead journal
        self._seq = 0
        self._delivered_seq = 0
        if journal is None:
            journal = os.environ.get(JOURNAL_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
        self._journal: _Journal | None = None
        self._adopted = 0
        self._lock_fd = _lock_directory(self._spool.directory)
        if journal and self._lock_fd is None:
            log.error(
                "request log: another process records into %s (one sidecar per data dir): its journal is left alone "
                "and this process keeps none",
                self._spool.directory,
            )
            journal = False
        if journal:
            self._journal = _Journal(self._spool.directory / JOURNAL_DIR, max_records=journal_max_records)
            self._adopted = self._adopt_leftovers()
        self._replay_cache: tuple[Path, SegmentContents, int] | None = None  # segment being replayed, records done
        self._lag_counts = [0] * (len(LAG_BOUNDS_MS) + 1)
        self._lag_window: list[float] = []
        self._state_path = self._spool.directory / STATE_FILE
        self._state_fd: int | None = None

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
        """Records committed from the spool (or, after a full disk, from memory behind it)."""
        return self._replayed

    @property
    def rejected(self) -> int:
        return self._rejected

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def held(self) -> int:
        """Records held in memory because the spool's disk refused them."""
        return len(self._held)

    @property
    def adopted(self) -> int:
        """Records taken into the spool at start from the journal of a process that was killed."""
        return self._adopted

    @property
    def db_ok(self) -> bool:
        return self._db_ok

    def state(self) -> dict:
        """What ``llmproxy status`` and ``llmproxy bench load`` read (also written to :data:`STATE_FILE`)."""
        lags = sorted(self._lag_window)
        return {
            "pid": os.getpid(),
            "updated_at": time.time(),
            "db_ok": self._db_ok,
            "db_down_since": self._db_down_since,
            "last_db_error": self._last_db_error,
            "queue": self.queue_depth,
            "spool": self.spool_depth,
            "held": self.held,
            "held_bytes": self._held_bytes,
            "memory_max": self._memory_max,
            "disk_full": self._disk_full_since is not None,
            "disk_full_since": self._disk_full_since,
            "last_disk_error": self._last_disk_error,
            "written": self._written,
            "spooled": self._spooled,
            "replayed": self._replayed,
            "rejected": self._rejected,
            "dropped": self._dropped,
            "adopted": self._adopted,
            "journal_errors": self._journal.errors if self._journal is not None else 0,
            "lag_ms_window": {
                "n": len(lags),
                "p50": _pick(lags, 0.50),
                "p99": _pick(lags, 0.99),
                "max": lags[-1] if lags else None,
            },
            "lag_ms_counts": list(self._lag_counts),
        }

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
        metrics.HELD.set_function(lambda: float(len(self._held)))
        if self._adopted:
            log.warning(
                "request log: %d records journaled by a previous process that did not stop cleanly were taken "
                "into the spool; replaying them (duplicates are skipped)",
                self._adopted,
            )
        self._open_state_file()
        self._writer = asyncio.create_task(self._write_loop(), name="recorder-writer")
        self._replayer = asyncio.create_task(self._replay_loop(), name="recorder-replay")
        self._stater = asyncio.create_task(self._state_loop(), name="recorder-state")

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
        if (self._spool.depth or self._held) and remaining > 0:
            # one last attempt, so a clean shutdown with the database up leaves no spool behind
            try:
                await asyncio.wait_for(self._replay_all(), remaining)
            except Exception as exc:  # noqa: BLE001 - the spool keeps the records for the next start
                self._db_failed(exc, "final replay")
        leftovers = self._in_flight + self._drain_queue()
        self._in_flight = []
        lines = list(self._held) + [_line(item) for item in leftovers]
        kept = True
        if lines:
            try:
                self._spool.append_lines(lines)
            except OSError as exc:
                kept = False
                self._count_dropped(len(lines), exc, stopping=True)
            else:
                self._count_spooled(len(lines))
            self._held.clear()
            self._held_bytes = 0
        self._closed = True
        self._spool.close()
        if self._journal is not None:
            if kept:
                self._journal.remove_all()  # everything it covered is in the database or the spool now
            else:
                self._journal.close()  # whatever it holds is taken in at the next start
        if self._stater is not None:
            self._stater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stater
        self._write_state()
        if self._state_fd is not None:
            os.close(self._state_fd)
            self._state_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the directory lock
            self._lock_fd = None

    # -- hot path ------------------------------------------------------------------------

    def submit(self, record: ExchangeRecord) -> None:
        """Hand a record over. Never blocks on the database and never raises."""
        line: str | None = None
        try:
            if self._closed:
                self._spool_now([record])
                return
            if self._loop is not None and threading.get_ident() != self._loop_thread:
                self._loop.call_soon_threadsafe(self.submit, record)
                return
            self._seq += 1
            if self._journal is not None:
                line = record.to_json()
                self._journal.append(self._seq, line)
            self._queue.put_nowait((self._seq, record, line))
        except asyncio.QueueFull:
            # one short buffered write; the writer fsyncs it on its next tick
            self._spool_now([record], line=line, fsync=False)
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

    async def _next_batch(self) -> list[_Item]:
        """Up to batch_max records, waiting at most flush_interval after the first; [] once stopped and empty."""
        first: _Item | None = None
        while first is None:
            try:
                first = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                if self._stopping.is_set():
                    return []
                if self._spool.dirty:  # overflow appends from submit() are made durable here
                    await asyncio.to_thread(self._spool.sync)
                self._journal_durable()
                with contextlib.suppress(TimeoutError):
                    first = await asyncio.wait_for(self._queue.get(), self._flush_interval)
        self._in_flight = [first]
        return await self._fill_batch()

    async def _fill_batch(self) -> list[_Item]:
        """Group commit: the first record waits ``flush_interval`` for the records arriving with it, then
        the batch takes whatever is queued. One timer per batch, not one ``wait_for`` task per record: at
        hundreds of records a second those tasks were CPU on the sidecar's event loop."""
        batch = self._in_flight
        self._drain_into(batch)
        if len(batch) < self._batch_max and not self._stopping.is_set():
            await asyncio.sleep(self._flush_interval)
            self._drain_into(batch)
        return batch

    def _drain_into(self, batch: list[_Item]) -> None:
        while len(batch) < self._batch_max:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return

    async def _deliver(self, batch: list[_Item]) -> None:
        if self._spool.depth == 0 and not self._held:
            records = [item[1] for item in batch]
            try:
                rejected = await self._store(records)
            except Exception as exc:  # noqa: BLE001 - any failure: the spool takes the batch
                self._db_failed(exc, "write")
            else:
                self._count_written(records, rejected)
                self._delivered(batch)
                return
        await self._park([_line(item) for item in batch])
        self._delivered(batch)

    def _delivered(self, batch: list[_Item]) -> None:
        self._in_flight = []
        self._delivered_seq = max(self._delivered_seq, batch[-1][0])
        self._journal_durable()

    def _journal_durable(self) -> None:
        """Tell the journal which records are safe elsewhere (never the ones only held in memory)."""
        if self._journal is not None and not self._held:
            self._journal.durable_through(self._delivered_seq, pending=self.queue_depth + len(self._in_flight))

    # -- replay --------------------------------------------------------------------------

    async def _replay_loop(self) -> None:
        while True:
            if self._spool.depth or self._held:
                try:
                    if not self._db_ok:
                        # a cheap probe first: no reading and re-reading of segments while it is down
                        await asyncio.wait_for(self._ping(), self._batch_timeout)
                    await self._replay_all()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - retried after retry_interval
                    self._db_failed(exc, "replay")
            if self._held and not self._db_ok and time.monotonic() - self._last_disk_try >= self._disk_retry:
                await self._retry_disk()
            await asyncio.sleep(self._retry_interval)

    async def _replay_all(self) -> None:
        """Move every spooled record into the database, oldest segment first, then what memory holds."""
        replayed_before = self._replayed
        while True:
            sealed = self._spool.sealed_segments()
            if not sealed:
                if self._spool.active_depth == 0:
                    break
                await asyncio.to_thread(self._spool.seal)
                continue
            await self._replay_segment(sealed[0])
        while self._held:
            chunk = [self._held[i] for i in range(min(self._batch_max, len(self._held)))]
            records = [ExchangeRecord.from_json(line) for line in chunk]
            rejected = await self._store(records)
            for _ in chunk:
                self._held_bytes -= len(self._held.popleft())
            self._replayed += len(records) - rejected
            metrics.REPLAYED.inc(len(records) - rejected)
            self._observe_lag(records)
            if not self._held:
                self._disk_recovered()
                self._journal_durable()
        if self._replayed > replayed_before:
            log.info("request log: replayed %d spooled records", self._replayed - replayed_before)
        self._db_recovered()

    async def _replay_segment(self, path: Path) -> None:
        # A segment is read (and its JSON parsed, which holds the GIL) once, not on every attempt while the
        # database stays slow; chunks already committed are not sent again.
        cached = self._replay_cache
        if cached is None or cached[0] != path:
            cached = self._replay_cache = (path, await asyncio.to_thread(self._spool.read, path), 0)
        contents = cached[1]
        for start in range(cached[2], len(contents.records), self._batch_max):
            chunk = contents.records[start : start + self._batch_max]
            rejected = await self._store(chunk)
            self._replay_cache = (path, contents, start + len(chunk))
            self._replayed += len(chunk) - rejected
            metrics.REPLAYED.inc(len(chunk) - rejected)
            self._observe_lag(chunk)
        self._replay_cache = None
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
        """Can the table be written? A lock held on it (a migration, a VACUUM FULL) blocks this too."""
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1 FROM exchanges LIMIT 0"))

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
        self._last_db_error = f"{during}: {_describe(exc)}"
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
        if self._db_ok:
            self._db_down_since = time.time()
        self._db_ok = False

    def _db_recovered(self) -> None:
        if not self._db_ok:
            log.info("request log: database reachable again")
        self._db_ok = True
        self._db_down_since = None
        if self._unannounced_drops and self._loop is not None:
            n, self._unannounced_drops = self._unannounced_drops, 0
            task = self._loop.create_task(self._announce_loss(n))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _announce_loss(self, n: int) -> None:
        """The critical event of the live feed (and the alert webhook) for records that were dropped."""
        from intelligence.events import publish

        try:
            async with self._engine.begin() as conn:
                await publish(
                    conn,
                    kind="request_log_loss",
                    severity="critical",
                    title=f"request log: {n} exchange records were lost (database unavailable and the spool's disk full)",
                    detail={"dropped": n, "dropped_total": self._dropped, "spool": str(self._spool.directory)},
                    source="recorder",
                )
        except Exception as exc:  # noqa: BLE001 - the loss stays in the log, the metric and the state file
            self._unannounced_drops += n
            log.error("request log: could not announce %d lost records (%s)", n, _describe(exc))

    def _count_written(self, records: Sequence[ExchangeRecord], rejected: int) -> None:
        n = len(records) - rejected
        self._written += n
        metrics.WRITTEN.inc(n)
        self._observe_lag(records)
        self._db_recovered()

    def _observe_lag(self, records: Iterable[ExchangeRecord]) -> None:
        now = time.time()
        for record in records:
            try:
                lag_ms = max(0.0, (now - record.finished_at.timestamp()) * 1000)
            except (AttributeError, OverflowError, ValueError):
                continue
            metrics.WRITE_LAG.observe(lag_ms / 1000)
            self._lag_counts[bisect.bisect_left(LAG_BOUNDS_MS, lag_ms)] += 1
            if len(self._lag_window) < 10_000:
                self._lag_window.append(lag_ms)

    # -- spool ---------------------------------------------------------------------------

    def _spool_now(self, records: Sequence[ExchangeRecord], *, line: str | None = None, fsync: bool = True) -> None:
        """The overflow and after-stop path (on the caller's thread): the spool, else the record is lost."""
        if not records:
            return
        try:
            if line is not None and len(records) == 1:
                self._spool.append_lines([line], fsync=fsync)
            else:
                self._spool.append(records, fsync=fsync)
        except Exception as exc:  # noqa: BLE001 - disk full or gone: nothing left to keep them in
            self._count_dropped(len(records), exc)
        else:
            self._count_spooled(len(records))

    async def _park(self, lines: list[str]) -> None:
        """The database did not take these records (or must not yet): the spool, else memory, else dropped."""
        if self._held:
            # the disk was full: nothing may pass the records waiting in memory
            if time.monotonic() - self._last_disk_try >= self._disk_retry:
                await self._retry_disk()
            if self._held:
                self._hold(lines)
                return
        try:
            await asyncio.to_thread(self._spool.append_lines, lines)
        except Exception as exc:  # noqa: BLE001 - disk full or failing: memory takes them
            self._disk_failed(exc)
            self._hold(lines)
        else:
            self._count_spooled(len(lines))

    async def _retry_disk(self) -> None:
        """Move what memory holds to the spool, all or nothing, when the disk takes it again."""
        self._last_disk_try = time.monotonic()
        lines = list(self._held)
        if not lines:
            return
        try:
            await asyncio.to_thread(self._spool.append_lines, lines)
        except Exception as exc:  # noqa: BLE001
            self._disk_failed(exc, repeated=True)
            self._disk_retry = min(self._disk_retry * 2, 30.0)
            return
        self._disk_retry = self._retry_interval
        for _ in lines:
            self._held.popleft()
        self._held_bytes = sum(len(x) for x in self._held)
        self._count_spooled(len(lines))
        self._disk_recovered()
        self._journal_durable()

    def _hold(self, lines: list[str]) -> None:
        lost = 0
        for line in lines:
            if len(self._held) >= self._memory_max or self._held_bytes + len(line) > self._memory_max_bytes:
                lost += 1
                continue
            self._held.append(line)
            self._held_bytes += len(line)
        if lost:
            self._count_dropped(lost, None)

    def _disk_failed(self, exc: BaseException, *, repeated: bool = False) -> None:
        self._last_disk_error = _describe(exc)
        if self._disk_full_since is None:
            self._disk_full_since = time.time()
            full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
            log.error(
                "request log: the spool at %s refused records (%s)%s; holding them in memory (up to %d records, %d MiB), "
                "beyond that they are dropped",
                self._spool.directory,
                self._last_disk_error,
                ": disk full" if full else "",
                self._memory_max,
                self._memory_max_bytes // 2**20,
            )

    def _disk_recovered(self) -> None:
        if self._disk_full_since is not None:
            log.warning("request log: the spool's disk takes records again (%s)", self._spool.directory)
        self._disk_full_since = None

    def _count_spooled(self, n: int) -> None:
        self._spooled += n
        metrics.SPOOLED.inc(n)

    def _count_dropped(self, n: int, exc: BaseException | None, *, stopping: bool = False) -> None:
        self._dropped += n
        self._unannounced_drops += n
        metrics.DROPPED.inc(n)
        now = time.monotonic()
        if now - self._last_drop_log >= 5.0 or stopping or exc is not None:
            self._last_drop_log = now
            why = _describe(exc) if exc is not None else f"memory bound reached ({self._memory_max} records)"
            log.error(
                "request log: %d exchange records DROPPED (%s; %d dropped in total): the database did not take them and "
                "the spool at %s could not",
                n,
                why,
                self._dropped,
                self._spool.directory,
            )

    def _drain_queue(self) -> list[_Item]:
        drained: list[_Item] = []
        while True:
            try:
                drained.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return drained

    # -- journal and state -----------------------------------------------------------------

    def adopt_spool(self, directory: Path) -> int:
        """Take another recorder's spool (segments and journal) into this one, when no process holds it.

        For a sidecar worker that no longer runs; records already stored are skipped at replay as usual.
        Call before :meth:`start`. Returns the records taken."""
        lock = _lock_directory(directory)
        if lock is None:
            return 0
        taken = 0
        try:
            files = sorted(directory.glob("segment-*.jsonl"), key=lambda p: p.name)
            files += sorted((directory / JOURNAL_DIR).glob("journal-*"), key=_journal_seq)
            for path in files:
                try:
                    taken += self._spool.adopt(path)
                except OSError:
                    log.exception("request log: could not take %s into the spool; left where it is", path)
        finally:
            os.close(lock)
        return taken

    def _adopt_leftovers(self) -> int:
        """A journal left by a killed process: its records go into the spool (replay skips those stored already)."""
        assert self._journal is not None
        adopted = 0
        for path in self._journal.leftovers():
            try:
                adopted += self._spool.adopt(path)
            except OSError:
                log.exception("request log: could not take the journal %s into the spool; left where it is", path)
        return adopted

    def _open_state_file(self) -> None:
        try:
            fd = os.open(self._state_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            log.exception("request log: cannot write the recorder state file %s", self._state_path)
            return
        try:
            if os.fstat(fd).st_size < STATE_FILE_SIZE:
                os.posix_fallocate(fd, 0, STATE_FILE_SIZE)
        except OSError as exc:
            log.warning("request log: cannot allocate the state file %s (%s)", self._state_path, _describe(exc))
        self._state_fd = fd
        self._write_state()

    def _write_state(self) -> None:
        if self._state_fd is None:
            return
        data = json.dumps(self.state(), separators=(",", ":")).encode()
        if len(data) >= STATE_FILE_SIZE:  # pragma: no cover - the state is a few hundred bytes
            return
        try:
            # rewritten in place within blocks allocated at start: works on a full disk
            os.pwrite(self._state_fd, data + b" " * (STATE_FILE_SIZE - len(data) - 1) + b"\n", 0)
        except OSError:
            pass
        self._lag_window = []

    async def _state_loop(self) -> None:
        while True:
            await asyncio.sleep(self._state_interval)
            self._write_state()


class _Journal:
    """Every submitted record, appended (no fsync) before it is queued: what a killed process leaves behind.

    Files ``journal-<n>.jsonl``; the newest takes appends. A file is deleted (or, the newest, emptied)
    once every record in it is in the database or the spool; a write error (a full disk) is counted and
    the record goes on without its journal copy.
    """

    def __init__(self, directory: Path, *, max_records: int = 5000) -> None:
        self.directory = directory
        self.max_records = max_records
        self.errors = 0
        self._last_error_log = 0.0
        self._leftovers: list[Path] = []
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._leftovers = sorted(p for p in directory.iterdir() if p.name.startswith("journal-"))
        except OSError:
            log.exception("request log: journal directory %s unusable", directory)
        self._files: list[list] = []  # [path, fd or None, first seq, last seq, count], oldest first
        self._next = 1 + max((_journal_seq(p) for p in self._leftovers), default=0)

    def leftovers(self) -> list[Path]:
        found, self._leftovers = self._leftovers, []
        return found

    def append(self, seq: int, line: str) -> None:
        try:
            current = self._current()
            _write_all_fd(current[1], (line + "\n").encode("utf-8"))
        except OSError as exc:
            self.errors += 1
            now = time.monotonic()
            if now - self._last_error_log >= 60:
                self._last_error_log = now
                log.warning(
                    "request log: journal write failed (%s); records are safe in memory but a killed sidecar would lose them",
                    _describe(exc),
                )
            return
        if current[4] == 0:
            current[2] = seq
        current[3] = seq
        current[4] += 1
        if current[4] >= self.max_records:
            os.close(current[1])
            current[1] = None

    def durable_through(self, seq: int, *, pending: int) -> None:
        """Records numbered up to ``seq`` are stored elsewhere; ``pending`` records are still queued."""
        while self._files:
            path, fd, _first, last, count = self._files[0]
            if count and last > seq:
                return
            if fd is not None:
                if pending or len(self._files) > 1:
                    return
                if count:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, 0)
                    self._files[0][4] = 0
                return
            with contextlib.suppress(OSError):
                path.unlink()
            self._files.pop(0)

    def close(self) -> None:
        for entry in self._files:
            if entry[1] is not None:
                with contextlib.suppress(OSError):
                    os.close(entry[1])
                entry[1] = None

    def remove_all(self) -> None:
        for entry in self._files:
            if entry[1] is not None:
                with contextlib.suppress(OSError):
                    os.close(entry[1])
            with contextlib.suppress(OSError):
                entry[0].unlink()
        self._files = []

    def _current(self) -> list:
        if self._files and self._files[-1][1] is not None:
            return self._files[-1]
        path = self.directory / f"journal-{self._next:012d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._next += 1
        entry: list = [path, fd, 0, 0, 0]
        self._files.append(entry)
        return entry


def _lock_directory(directory: Path) -> int | None:
    """An exclusive lock on ``directory/.lock`` held for the life of the process; None when another process has
    it. A POSIX record lock: it belongs to the process (a second recorder in the same process, as in tests, is
    not refused) and goes away with it, however it dies."""
    import fcntl

    try:
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _journal_seq(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _write_all_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _line(item: _Item) -> str:
    return item[2] if item[2] is not None else item[1].to_json()


def _pick(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        log.warning("%s must be an integer, got %r; using %d", name, raw, default)
        return default


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
