"""`llmproxy up --sidecar-workers N`: the pieces (Envoy endpoints, worker arguments, spools) without a stack.

tests/reliability/test_sidecar_workers.py runs two workers behind a real Envoy."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.__main__ import _adopt_retired_spools, build_settings, parse_args
from extproc.cli import envoy_config
from extproc.settings import spool_dir, worker_spool_index
from intelligence.ingest import DbRecorder
from intelligence.store.engine import make_engine
from tests.intelligence.factories import make_record

ROOT = Path(__file__).resolve().parents[2]


def _sidecar_cluster(cfg: dict) -> dict:
    return next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "llmproxy_sidecar")


def _ports(cluster: dict) -> list[int]:
    return [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]


def test_one_endpoint_per_worker_round_robin() -> None:
    cfg = envoy_config.render(
        ROOT / "envoy.yaml", listen_host="127.0.0.1", port=1, admin_port=2, sidecar_port=[7000, 7001, 7002], upstreams={}
    )
    cluster = _sidecar_cluster(cfg)
    assert _ports(cluster) == [7000, 7001, 7002]
    assert cluster["lb_policy"] == "ROUND_ROBIN"
    addresses = {
        e["endpoint"]["address"]["socket_address"]["address"] for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    }
    assert addresses == {"127.0.0.1"}


def test_one_worker_renders_the_shipped_cluster_unchanged() -> None:
    cfg = envoy_config.render(ROOT / "envoy.yaml", listen_host="127.0.0.1", port=1, admin_port=2, sidecar_port=7000, upstreams={})
    cluster = _sidecar_cluster(cfg)
    assert _ports(cluster) == [7000] and "lb_policy" not in cluster


def test_worker_arguments_and_spools(tmp_path: Path) -> None:
    first = build_settings(parse_args(["--data-dir", str(tmp_path), "--workers", "3"]))
    third = build_settings(parse_args(["--data-dir", str(tmp_path), "--workers", "3", "--worker-index", "2"]))
    assert first.spool_dir == tmp_path / "spool" and third.spool_dir == tmp_path / "spool-2"
    assert worker_spool_index(spool_dir(tmp_path, 2)) == 2 and worker_spool_index(tmp_path / "spool") is None
    assert worker_spool_index(tmp_path / "spool-x") is None
    with pytest.raises(SystemExit):
        parse_args(["--workers", "2", "--worker-index", "2"])


def test_worker_zero_takes_in_the_spool_of_a_retired_worker(tmp_path: Path) -> None:
    """Fewer workers than last time: what worker 2 spooled (and journaled) is replayed by worker 0."""
    engine = make_engine("postgresql://nobody@127.0.0.1:1/none")  # never connected to here
    old = DbRecorder(engine, spool_dir(tmp_path, 2), journal=False)
    records = [make_record() for _ in range(3)]
    old._spool.append(records)
    old._spool.seal()
    journal = spool_dir(tmp_path, 2) / "journal"
    journal.mkdir(exist_ok=True)
    (journal / "journal-000000000001.jsonl").write_text(make_record().to_json() + "\n")
    kept = DbRecorder(engine, spool_dir(tmp_path, 1), journal=False)  # a worker still configured: left alone
    kept._spool.append([make_record()])
    kept._spool.seal()
    old._spool.close()
    kept._spool.close()
    if old._lock_fd is not None:  # the retired worker's process is gone: so is its lock
        import os

        os.close(old._lock_fd)
        old._lock_fd = None

    settings = build_settings(parse_args(["--data-dir", str(tmp_path), "--workers", "2"]))
    recorder = DbRecorder(engine, settings.spool_dir, journal=False)
    _adopt_retired_spools(recorder, settings)
    assert recorder.spool_depth == 4
    assert not list(spool_dir(tmp_path, 2).glob("segment-*.jsonl")) and not list(journal.glob("journal-*"))
    assert list(spool_dir(tmp_path, 1).glob("segment-*.jsonl"))  # worker 1 still runs in this configuration
