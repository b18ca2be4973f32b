"""A durable, append-only spool of exchange records for when the database is away.

Records are JSONL (``ExchangeRecord.to_json()``) in numbered segment files
``segment-<n>.jsonl``; lower numbers are older. Only the newest segment is ever appended to;
:meth:`Spool.seal` closes it so it can be replayed. A segment is deleted only once its records
are committed elsewhere, so a crash at any point leaves every record on disk (replay is
idempotent, so re-sending after a crash duplicates nothing).

Methods are synchronous and thread-safe: the recorder calls them from worker threads so the
event loop never waits on disk, except for the rare single-record overflow append.

An append is all or nothing: when the disk refuses part of it (ENOSPC, EIO), the segment is cut back
to where the append began and the error is raised, so a full disk never leaves a torn line behind and
the caller knows exactly which records the spool did not take.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from intelligence.records import ExchangeRecord

log = logging.getLogger(__name__)

_SEGMENT_RE = re.compile(r"^segment-(\d+)\.jsonl$")
REJECTED_FILE = "rejected.jsonl"


@dataclass
class SegmentContents:
    records: list[ExchangeRecord] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)  # undecodable lines, e.g. a torn write


class Spool:
    def __init__(self, directory: Path, *, segment_max_records: int = 1000, segment_max_bytes: int = 16 * 2**20) -> None:
        self.directory = Path(directory)
        # The spool holds whole exchanges (masked, but prompts and answers): owner-only, like the database.
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        # a segment is replayed from memory in one piece: both limits bound what that costs
        self._segment_max = segment_max_records
        self._segment_max_bytes = segment_max_bytes
        self._lock = threading.Lock()
        self._counts: dict[Path, int] = {}  # records per segment on disk
        self._active: Path | None = None
        self._active_fd: int | None = None
        self._active_size = 0
        self._dirty = False
        self._next_seq = 1
        for path in self._scan():
            self._counts[path] = _count_lines(path)
            self._next_seq = max(self._next_seq, _seq(path) + 1)

    @property
    def depth(self) -> int:
        """Records waiting in the spool."""
        return sum(self._counts.values())

    @property
    def dirty(self) -> bool:
        """Appended without fsync and not yet synced."""
        return self._dirty

    def append(self, records: Sequence[ExchangeRecord], *, fsync: bool = True) -> None:
        """Append records in order; with ``fsync`` they are on stable storage when this returns.

        All or nothing: on an OSError (disk full) nothing of this call stays in the segment.
        """
        if records:
            self.append_lines([r.to_json() for r in records], fsync=fsync)

    def append_lines(self, lines: Sequence[str], *, fsync: bool = True) -> None:
        """:meth:`append` for records already rendered with ``ExchangeRecord.to_json()`` (one per line)."""
        if not lines:
            return
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        with self._lock:
            fd = self._open_active()
            start = self._active_size
            try:
                _write_all(fd, data)
                if fsync:
                    os.fsync(fd)
            except OSError:
                self._cut_back(fd, start)
                raise
            assert self._active is not None
            self._active_size = start + len(data)
            self._counts[self._active] = self._counts.get(self._active, 0) + len(lines)
            self._dirty = not fsync
            if self._counts[self._active] >= self._segment_max or self._active_size >= self._segment_max_bytes:
                self._close_active()

    def adopt(self, path: Path) -> int:
        """Take a JSONL file of records (a dead process's journal) in as the newest sealed segment.

        The file must be on the spool's file system (it is renamed, not copied). Returns its record count.
        """
        with self._lock:
            self._close_active()
            target = self.directory / f"segment-{self._next_seq:012d}.jsonl"
            self._next_seq += 1
            os.replace(path, target)
            os.chmod(target, 0o600)
            _fsync_dir(self.directory)
            count = _count_lines(target)
            if count:
                self._counts[target] = count
            else:
                target.unlink(missing_ok=True)
            return count

    def sync(self) -> None:
        """fsync what was appended with ``fsync=False``."""
        with self._lock:
            self._fsync_active()

    def seal(self) -> None:
        """Close the segment being appended to; the next append starts a new one."""
        with self._lock:
            self._close_active()

    def sealed_segments(self) -> list[Path]:
        """Segments that no append will touch again, oldest first."""
        with self._lock:
            return [p for p in sorted(self._counts, key=_seq) if p != self._active]

    @property
    def active_depth(self) -> int:
        with self._lock:
            return self._counts.get(self._active, 0) if self._active is not None else 0

    def read(self, path: Path) -> SegmentContents:
        contents = SegmentContents()
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                try:
                    contents.records.append(ExchangeRecord.from_json(line))
                except (ValueError, TypeError, KeyError):
                    contents.bad_lines.append(line)
        return contents

    def remove(self, path: Path) -> None:
        """Forget a replayed segment (only after its records are committed)."""
        with self._lock:
            if path == self._active:
                self._close_active()
            path.unlink(missing_ok=True)
            self._counts.pop(path, None)

    def reject(self, lines: Sequence[str], reason: str) -> None:
        """Keep lines that can never be stored, beside the spool, for a human to look at."""
        if not lines:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._lock, _private_append(self.directory / REJECTED_FILE) as f:
            for line in lines:
                f.write(json.dumps({"at": stamp, "reason": reason, "line": line}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        with self._lock:
            self._close_active()

    def _scan(self) -> list[Path]:
        return sorted((p for p in self.directory.iterdir() if _SEGMENT_RE.match(p.name)), key=_seq)

    def _open_active(self) -> int:
        if self._active_fd is None:
            path = self.directory / f"segment-{self._next_seq:012d}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._next_seq += 1
            self._active, self._active_fd = path, fd
            self._active_size = os.fstat(fd).st_size
            self._counts.setdefault(path, 0)
            try:
                _fsync_dir(self.directory)  # the new name must survive a crash too
            except OSError:
                self._close_active()
                raise
        return self._active_fd

    def _cut_back(self, fd: int, size: int) -> None:
        """Undo a partly written append (a full disk): the segment ends where the append began."""
        try:
            os.ftruncate(fd, size)
        except OSError:  # pragma: no cover - truncating never needs new blocks
            log.exception("spool: could not cut a partial append back in %s", self._active)
        if self._active is not None and self._counts.get(self._active, 0) == 0 and size == 0:
            # a segment created by this very append: nothing of it to keep
            path = self._active
            self._close_active()
            path.unlink(missing_ok=True)
            self._counts.pop(path, None)

    def _fsync_active(self) -> None:
        if self._active_fd is not None and self._dirty:
            os.fsync(self._active_fd)
            self._dirty = False

    def _close_active(self) -> None:
        if self._active_fd is not None:
            try:
                self._fsync_active()
            finally:
                os.close(self._active_fd)
        self._active_fd = None
        self._active = None
        self._active_size = 0
        self._dirty = False


def _seq(path: Path) -> int:
    m = _SEGMENT_RE.match(path.name)
    assert m is not None
    return int(m.group(1))


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _private_append(path: Path) -> IO[str]:
    """A text file opened for appending, created 0600 (never readable by other users)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8")
