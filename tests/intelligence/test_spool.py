from __future__ import annotations

import json
from pathlib import Path

from intelligence.store.spool import REJECTED_FILE, Spool

from .factories import make_record


def test_append_persists_in_order_across_instances(tmp_path: Path) -> None:
    records = [make_record() for _ in range(5)]
    spool = Spool(tmp_path, segment_max_records=3)
    spool.append(records[:2])
    spool.append(records[2:])  # crosses the segment limit: the segment is closed after this append
    spool.append([make_record()], fsync=False)
    assert spool.dirty
    spool.sync()
    assert not spool.dirty
    assert spool.depth == 6
    spool.close()

    reopened = Spool(tmp_path)
    assert reopened.depth == 6
    segments = reopened.sealed_segments()
    assert [p.name for p in segments] == ["segment-000000000001.jsonl", "segment-000000000002.jsonl"]
    assert [r.request_id for r in reopened.read(segments[0]).records] == [r.request_id for r in records]
    # a new run never appends to an old segment
    reopened.append([make_record()])
    assert len(list(tmp_path.glob("segment-*.jsonl"))) == 3


def test_active_segment_is_sealed_only_on_request(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([make_record(), make_record()])
    assert spool.sealed_segments() == []
    assert spool.active_depth == 2
    spool.seal()
    assert spool.active_depth == 0
    [segment] = spool.sealed_segments()
    spool.append([make_record()])
    assert spool.sealed_segments() == [segment]
    spool.remove(segment)
    assert not segment.exists()
    assert spool.depth == 1


def test_torn_and_garbled_lines_are_reported_not_fatal(tmp_path: Path) -> None:
    good = make_record()
    (tmp_path / "segment-000000000007.jsonl").write_text(
        good.to_json() + "\n\n" + '{"not": "a record"}\n' + '{"request_id": "x", "sta'
    )
    (tmp_path / "unrelated.txt").write_text("ignored")
    spool = Spool(tmp_path)
    assert spool.depth == 3
    [segment] = spool.sealed_segments()
    contents = spool.read(segment)
    assert contents.records == [good]
    assert contents.bad_lines == ['{"not": "a record"}', '{"request_id": "x", "sta']
    spool.append([make_record()])  # numbering continues after the highest existing segment
    assert (tmp_path / "segment-000000000008.jsonl").exists()


def test_reject_keeps_lines_with_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.reject([], "nothing")
    assert not (tmp_path / REJECTED_FILE).exists()
    spool.reject(["line one", "line two"], "sqlstate=22003")
    rows = [json.loads(x) for x in (tmp_path / REJECTED_FILE).read_text().splitlines()]
    assert [r["line"] for r in rows] == ["line one", "line two"]
    assert {r["reason"] for r in rows} == {"sqlstate=22003"}


def test_empty_append_creates_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "nested" / "spool")
    spool.append([])
    assert spool.depth == 0
    assert list((tmp_path / "nested" / "spool").iterdir()) == []


def test_segments_rotate_on_size_too(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_max_records=1000, segment_max_bytes=1)
    spool.append([make_record()])
    spool.append([make_record()])
    assert len(spool.sealed_segments()) == 2
    assert spool.active_depth == 0


def test_spool_files_and_directory_are_private(tmp_path) -> None:
    import stat

    from intelligence.store.spool import Spool

    spool = Spool(tmp_path / "spool")
    spool.append([make_record()])
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    files = [p for p in (tmp_path / "spool").iterdir() if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
