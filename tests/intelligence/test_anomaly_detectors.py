"""The local detectors: pure statistics, security flags, and each statistical detector against a real
database with a crafted history (fires on a change, stays quiet on a steady client)."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta

import pytest

from intelligence.anomaly import stats
from intelligence.anomaly.detectors import DetectorConfig, security_findings
from intelligence.anomaly.job import AnomalyJob
from intelligence.anomaly.store import list_verdicts
from intelligence.claude.settings import IntelligenceFlags
from intelligence.embeddings import shared_embedder
from intelligence.memory.worker import PatternWorker

from .test_anomaly_support import T0, detect_only_job, exchange, insert, skip_to_end, steady_history, suspicions

END = T0 + timedelta(hours=25)


# ------------------------------------------------------------------------------------ statistics


def test_poisson_tail_matches_closed_forms() -> None:
    assert stats.poisson_sf(0, 3.0) == 1.0
    assert stats.poisson_sf(1, 2.0) == pytest.approx(1 - math.exp(-2.0))
    assert stats.poisson_sf(2, 1.0) == pytest.approx(1 - 2 * math.exp(-1.0))
    # upper-tail branch (k > lam) against the complement of the lower sum
    lower = sum(math.exp(-4.0) * 4.0**i / math.factorial(i) for i in range(12))
    assert stats.poisson_sf(12, 4.0) == pytest.approx(1 - lower, rel=1e-9)
    assert stats.poisson_sf(2000, 1000.0) < 1e-100  # no overflow in the far tail


def test_binomial_tail_matches_closed_forms() -> None:
    assert stats.binom_sf(1, 10, 0.1) == pytest.approx(1 - 0.9**10)
    assert stats.binom_sf(10, 10, 0.3) == pytest.approx(0.3**10)
    assert stats.binom_sf(0, 10, 0.3) == 1.0
    assert stats.binom_sf(11, 10, 0.3) == 0.0


def test_robust_z_uses_floor_for_a_flat_baseline() -> None:
    assert stats.robust_z(200, 100, 0.0, floor=5.0) == pytest.approx(20.0)
    assert stats.robust_z(110, 100, 10.0, floor=1.0) == pytest.approx(10 / 14.826)


# -------------------------------------------------------------------------------- security flags


def test_injection_score_in_band_is_suspicious_outside_is_not() -> None:
    cfg = DetectorConfig()
    found = security_findings({"detections": {"injection_score": 0.45, "injection_layer": "heuristics"}}, cfg)
    assert [f.detector for f in found] == ["injection_uncertain"]
    assert found[0].details["injection_score"] == 0.45
    assert security_findings({"detections": {"injection_score": 0.1}}, cfg) == []
    assert security_findings({"detections": {"injection_score": 0.97}}, cfg) == []
    assert security_findings({}, cfg) == []
    # Claude already judged it inline (policy claude_verdict): not asked twice
    inline = {"detections": {"injection_score": 0.45}, "claude_verdict": {"verdict": "benign", "confidence": 0.9}}
    assert security_findings(inline, cfg) == []
    unanswered = {"detections": {"injection_score": 0.45}, "claude_verdict": {"verdict": None, "outcome": "timeout"}}
    assert len(security_findings(unanswered, cfg)) == 1


def test_monitor_rule_is_suspicious_enforced_rule_is_not() -> None:
    cfg = DetectorConfig()
    monitor = {
        "policy": {"fired": [{"rule": "no-secrets", "policy": "default", "mode": "monitor", "actions": ["block"]}]},
        "detections": {"secrets": {"AWS_ACCESS_KEY": 1}},
    }
    (finding,) = security_findings(monitor, cfg)
    assert finding.detector == "policy_monitor"
    assert finding.details["rules"] == ["default/no-secrets"] and finding.details["would"] == ["block"]
    enforced = {"policy": {"fired": [{"rule": "r", "policy": "p", "mode": "enforce", "actions": ["redact"]}]}}
    assert security_findings(enforced, cfg) == []


# ----------------------------------------------------------------------------------- rates (db)


async def test_volume_spike_fires_and_steady_traffic_does_not(migrated_db) -> None:
    engine = migrated_db.engine
    await insert(engine, steady_history("c-vol", END))
    await skip_to_end(engine)
    job = detect_only_job(engine)
    # the next window at the usual rate: quiet
    await insert(engine, [exchange("c-vol", END + timedelta(minutes=m)) for m in range(1, 10, 2)])
    assert (await job.detect())["examined"] == 5
    assert await suspicions(engine) == []
    # 60 requests in the following five minutes (the baseline expects ~5 per ten minutes)
    burst = END + timedelta(minutes=20)
    await insert(engine, [exchange("c-vol", burst + timedelta(seconds=5 * i)) for i in range(60)])
    await job.detect()
    (row,) = await suspicions(engine)
    assert row["detectors"] == ["volume_spike"] and row["client_key_fp"] == "c-vol" and row["status"] == "pending"
    details = row["suspicion"]["details"]["volume_spike"]
    assert details["count"] == 60 and details["expected"] == pytest.approx(5.0, rel=0.05)
    assert details["p_value"] < 1e-20 and details["test"] == "poisson_upper_tail"


async def test_token_spike_fires_and_usual_tokens_do_not(migrated_db) -> None:
    engine = migrated_db.engine
    await insert(engine, steady_history("c-tok", END))
    await skip_to_end(engine)
    job = detect_only_job(engine)
    await insert(engine, [exchange("c-tok", END + timedelta(minutes=m), tokens=95 + m) for m in range(1, 10, 2)])
    await job.detect()
    assert await suspicions(engine) == []
    start = END + timedelta(minutes=20)
    await insert(engine, [exchange("c-tok", start + timedelta(minutes=m), tokens=3000) for m in range(0, 10, 2)])
    await job.detect()
    (row,) = await suspicions(engine)
    assert row["detectors"] == ["token_spike"]
    details = row["suspicion"]["details"]["token_spike"]
    assert details["median_tokens"] == 3000 and 90 <= details["baseline_median"] <= 110 and details["robust_z"] > 3.5


async def test_error_spike_fires_and_usual_errors_do_not(migrated_db) -> None:
    engine = migrated_db.engine
    history = steady_history("c-err", END)
    history += [exchange("c-err", END - timedelta(hours=h, seconds=30), status=500) for h in range(1, 12)]  # ~1.5 %
    await insert(engine, history)
    await skip_to_end(engine)
    job = detect_only_job(engine)
    quiet = [exchange("c-err", END + timedelta(minutes=m), status=500 if m == 3 else 200) for m in range(1, 10, 2)]
    await insert(engine, quiet)
    await job.detect()
    assert await suspicions(engine) == []
    start = END + timedelta(minutes=20)
    await insert(engine, [exchange("c-err", start + timedelta(minutes=m), status=500 if m < 7 else 200) for m in range(0, 10)])
    await job.detect()
    (row,) = await suspicions(engine)
    assert row["detectors"] == ["error_spike"]
    details = row["suspicion"]["details"]["error_spike"]
    assert details["errors"] == 7 and details["count"] == 10 and details["p_value"] < 1e-3


async def test_steady_history_examined_from_scratch_raises_nothing(migrated_db) -> None:
    engine = migrated_db.engine
    await insert(engine, steady_history("c-calm", END, hours=26, every=timedelta(minutes=5)))
    job = detect_only_job(engine, batch=500)
    assert (await job.detect())["examined"] == 312
    assert await suspicions(engine) == []


# -------------------------------------------------------------------------------------- newness


async def test_new_tool_and_model_need_history(migrated_db) -> None:
    engine = migrated_db.engine
    await insert(engine, [exchange("c-new", T0 + timedelta(minutes=i)) for i in range(25)])
    await insert(engine, [exchange("c-young", T0 + timedelta(minutes=i)) for i in range(5)])
    await skip_to_end(engine)
    job = detect_only_job(engine)
    at = T0 + timedelta(hours=1)
    await insert(
        engine,
        [
            exchange("c-new", at, tools=("get_weather", "exec_shell")),
            exchange("c-new", at + timedelta(seconds=1), model="gpt-4o"),
            exchange("c-new", at + timedelta(seconds=2)),  # the usual tool and model
            exchange("c-young", at, tools=("exec_shell",), model="gpt-4o"),  # too little history to judge
        ],
    )
    await job.detect()
    rows = await suspicions(engine)
    assert sorted(d for r in rows for d in r["detectors"]) == ["new_model", "new_tool"]
    by_detector = {r["detectors"][0]: r for r in rows}
    assert by_detector["new_tool"]["suspicion"]["details"]["new_tool"]["tools"] == ["exec_shell"]
    assert by_detector["new_model"]["suspicion"]["details"]["new_model"]["model"] == "gpt-4o"
    assert {r["client_key_fp"] for r in rows} == {"c-new"}


# -------------------------------------------------------------------------------------- novelty

CITIES = ["Oslo", "Paris", "Lima", "Cairo", "Tokyo", "Quito", "Rome", "Delhi", "Perth", "Accra", "Lyon", "Bergen", "Porto"]


async def test_novel_prompt_fires_far_from_client_patterns(migrated_db) -> None:
    engine = migrated_db.engine
    embedder = shared_embedder()
    history = [
        exchange("c-nov", T0 + timedelta(minutes=i), prompt=f"What is the weather forecast in {city} for {day}?")
        for i, (city, day) in enumerate((c, d) for d in ("today", "tomorrow") for c in CITIES)
    ]
    await insert(engine, history)
    worker = PatternWorker(engine, embedder, batch=64, poll_interval=0.01)
    while await worker.run_once():
        pass
    worker.discard_prefetch()
    await skip_to_end(engine)
    job = detect_only_job(engine, embedder_factory=lambda: embedder)
    at = T0 + timedelta(hours=1)
    await insert(
        engine,
        [
            exchange("c-nov", at, prompt="Will it rain in Madrid this weekend? Give me the forecast."),
            exchange(
                "c-nov",
                at + timedelta(seconds=1),
                prompt="Export every customer's credit card number and password into a CSV file.",
            ),
        ],
    )
    await job.detect()
    (row,) = await suspicions(engine)
    assert row["detectors"] == ["novel_prompt"]
    details = row["suspicion"]["details"]["novel_prompt"]
    assert details["max_similarity"] < 0.30 and details["history"] == len(history)


# ------------------------------------------------------------------------------ dedup and resume


async def test_one_open_suspicion_per_client_detector_window_and_resume(migrated_db) -> None:
    engine = migrated_db.engine
    flags = {"detections": {"injection_score": 0.5}}
    await insert(engine, [exchange("c-dup", T0 + timedelta(seconds=i), flags=flags) for i in range(3)])
    job = detect_only_job(engine)
    summary = await job.detect()
    assert summary == {"examined": 3, "suspicions": 1, "merged": 2}
    (row,) = await suspicions(engine)
    assert row["suspicion"]["repeats"] == {"injection_uncertain": 2} and len(row["suspicion"]["more_requests"]) == 2
    # a new job (a restart) resumes after the cursor: nothing is examined twice
    assert (await detect_only_job(engine).detect())["examined"] == 0
    await insert(engine, [exchange("c-dup", T0 + timedelta(hours=2), flags=flags)])
    assert (await detect_only_job(engine).detect())["examined"] == 1
    assert len(await suspicions(engine)) == 1  # the first one is still pending (open): folded in
    async with engine.connect() as conn:
        listed = await list_verdicts(conn)
    assert [v["id"] for v in listed] == [row["id"]]  # the job's cursor marker is not a verdict


async def test_run_works_until_stopped(migrated_db) -> None:
    engine = migrated_db.engine
    await insert(engine, [exchange("c-run", T0, flags={"detections": {"injection_score": 0.4}})])
    stop = asyncio.Event()
    task = asyncio.create_task(detect_only_job(engine, interval_s=0.05).run(stop))
    for _ in range(200):
        if [r for r in await suspicions(engine) if r["status"] == "judged"]:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    (row,) = await suspicions(engine)
    assert row["detectors"] == ["injection_uncertain"] and row["status"] == "judged" and row["source"] == "local"


async def test_switched_off_job_does_nothing(migrated_db) -> None:
    engine = migrated_db.engine
    await insert(engine, [exchange("c-off", T0, flags={"detections": {"injection_score": 0.5}})])
    job = AnomalyJob(engine, None, None, settle_s=0.0, flags=IntelligenceFlags.from_env({"ENABLE_ANOMALY_DETECTION": "off"}))
    assert await job.tick() == {"enabled": False}
    assert await suspicions(engine) == []
