"""A database of its own for the Security, Experiments and System pages, seeded row by row with
numbers the tests know: events, blocked/redacted exchanges, verdicts, quarantined keys, experiments
with statistics, Claude calls and a database policy."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy import text

from intelligence.records import ExchangeRecord, Usage
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.migrate import upgrade_async
from intelligence.store.repositories import ExchangeRepository
from tests.conftest import database_url

POLICY_V1 = """rules:
  - id: no-big-models
    match:
      models: ["gpt-4.5*"]
    actions:
      block: true
"""


@dataclass
class IntelDb:
    url: str
    marker: str
    events: dict[str, int]  # name -> id
    request_ids: dict[str, str]
    verdicts: dict[str, int]
    keys: dict[str, str]  # name -> key id
    enhancements: dict[str, int]
    experiments: dict[str, int]
    claude_today_usd: float
    claude_week_usd: float
    arms: dict[str, tuple[int, int]]  # experiment "pausable" arms: name -> (n, successes)


def _detections(pii: dict | None = None, secrets: dict | None = None, score: float = 0.01) -> dict:
    return {"pii": pii or {}, "secrets": secrets or {}, "injection_score": score, "injection_layer": "heuristic", "flags": []}


async def create_intel_db(server_url: str) -> IntelDb:
    """A new database at schema head with :func:`seed_intel_rows` in it."""
    name = f"uiintel_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url(server_url, name)
    await upgrade_async(url)
    return await seed_intel_rows(url)


async def seed_intel_rows(url: str, *, named_policy: bool = False) -> IntelDb:
    """Add the rows to a migrated database (the browser check adds them to its seeded traffic too)."""
    from intelligence.enhance.stats import ArmOutcome, decide
    from intelligence.keys.store import NewKey, create_key, quarantine_key

    marker = f"sec{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    engine = make_engine(url)

    def rec(key: str, minutes_ago: float, flags: dict, status: int = 200, client: str = "alpha") -> ExchangeRecord:
        started = now - timedelta(minutes=minutes_ago)
        return ExchangeRecord(
            request_id=f"{marker}-{key}",
            started_at=started,
            finished_at=started + timedelta(milliseconds=50),
            method="POST",
            path="/openai/v1/chat/completions",
            provider="openai",
            api="chat",
            model="gpt-4o-mini",
            status=status,
            latency_ms=50.0,
            client_key_fp=f"fp-{marker}-{client}",
            usage=Usage(input_tokens=10, output_tokens=5),
            flags=flags,
            prompt_user=f"{marker} {key}",
        )

    blocked_policy = {
        "version": "v1",
        "fired": [{"rule": "block-injection", "policy": "default", "mode": "enforce", "actions": ["block", "alert"]}],
        "block": {
            "status": 400,
            "code": "prompt_injection_detected",
            "message": "prompt injection detected",
            "rule": "default/block-injection",
        },
    }
    redact_policy = {
        "version": "v1",
        "fired": [{"rule": "redact-pii", "policy": "default", "mode": "enforce", "actions": ["redact"]}],
        "redact": {"kinds": ["EMAIL_ADDRESS"]},
    }
    records = [
        rec("blocked", 30, {"policy": blocked_policy, "detections": _detections(score=0.97)}, status=400, client="mallory"),
        rec(
            "redacted", 20, {"policy": redact_policy, "detections": _detections(pii={"EMAIL_ADDRESS": 2}), "redacted_strings": 2}
        ),
        rec(
            "secret",
            15,
            {
                "policy": {
                    "version": "v1",
                    "fired": [{"rule": "redact-secrets", "policy": "default", "mode": "enforce", "actions": ["redact"]}],
                    "redact": {"kinds": ["AWS_ACCESS_KEY"]},
                },
                "detections": _detections(secrets={"AWS_ACCESS_KEY": 1}),
                "redacted_strings": 1,
            },
        ),
        rec("clean", 10, {"detections": _detections()}),
    ]
    control, variant = ArmOutcome(n=120, successes=60), ArmOutcome(n=118, successes=80)
    stats = decide(control, variant).to_dict()
    try:
        async with engine.begin() as conn:
            await ExchangeRepository(conn).insert_batch(records)

        async def insert(conn, sql: str, **params) -> int:
            return int((await conn.execute(text(sql + " RETURNING id"), params)).scalar_one())

        async with engine.begin() as conn:
            ev = {}
            for key, minutes, severity, title, acked in (
                ("info", 50, "info", f"{marker} experiment started", False),
                ("acked", 40, "warning", f"{marker} throttled a noisy client", True),
                ("warning", 30, "warning", f"{marker} prompt injection blocked", False),
                ("critical", 5, "critical", f"{marker} key quarantined after exfiltration attempt", False),
            ):
                ev[key] = await insert(
                    conn,
                    "INSERT INTO events (at, kind, severity, title, subject, source, acknowledged_at, acknowledged_by) "
                    "VALUES (:at, 'alert', :sev, :title, 'client:x', 'sidecar', :ack_at, :ack_by)",
                    at=now - timedelta(minutes=minutes),
                    sev=severity,
                    title=title,
                    ack_at=now if acked else None,
                    ack_by="dashboard:earlier" if acked else None,
                )
            verdicts = {}
            for key, verdict, conf, reasoning in (
                ("attack", "malicious", 0.92, f"{marker}: the client fired 40 injection variants in a minute"),
                ("benign", "benign", 0.7, f"{marker}: a load test from the CI runner, expected volume"),
            ):
                verdicts[key] = await insert(
                    conn,
                    "INSERT INTO anomaly_verdicts (at, client_key_fp, detectors, suspicion, status, verdict, confidence, "
                    "reasoning, source, action) VALUES (now(), :client, ARRAY['volume'], '{}'::jsonb, 'judged', :verdict, "
                    ":conf, :reasoning, 'claude', 'alert')",
                    client=f"fp-{marker}-mallory",
                    verdict=verdict,
                    conf=conf,
                    reasoning=reasoning,
                )
            calls = {}
            for key, purpose, cost, days_ago in (
                ("c1", "enhance", 0.0123, 0),
                ("c2", "anomaly", 0.002, 0),
                ("c3", "label", 0.5, 3),
            ):
                calls[key] = await insert(
                    conn,
                    "INSERT INTO claude_calls (at, purpose, subject, mode, model, input_tokens, output_tokens, cost_usd, "
                    "latency_ms, outcome) VALUES (:at, :purpose, 'pattern:1', 'anthropic', 'claude-sonnet-4-5', 1000, "
                    "200, :cost, 900, 'ok')",
                    at=now - timedelta(days=days_ago, minutes=1),
                    purpose=purpose,
                    cost=cost,
                )
            enh = {}
            for key, status, rationale in (
                ("candidate", "candidate", f"{marker}: failures come from missing JSON instructions; ask for JSON"),
                ("pausable", "testing", f"{marker}: shorter tool descriptions"),
                ("promotable", "testing", f"{marker}: lower temperature"),
            ):
                enh[key] = await insert(
                    conn,
                    "INSERT INTO enhancements (kind, spec, rationale, source, status, claude_call_id) "
                    "VALUES ('system_prompt', CAST(:spec AS jsonb), :rationale, 'claude', :status, :call)",
                    spec=json.dumps({"append_system": f"{marker} reply in JSON"}),
                    rationale=rationale,
                    status=status,
                    call=calls["c1"],
                )
            exps = {}
            for key in ("pausable", "promotable"):
                exps[key] = await insert(
                    conn,
                    "INSERT INTO experiments (enhancement_id, status, stats, created_by) "
                    "VALUES (:enh, 'running', CAST(:stats AS jsonb), 'evaluator')",
                    enh=enh[key],
                    stats=json.dumps(stats),
                )
                await conn.execute(
                    text(
                        "INSERT INTO experiment_events (experiment_id, action, actor, detail) "
                        "VALUES (:id, 'started', 'evaluator', '{}'::jsonb)"
                    ),
                    {"id": exps[key]},
                )
            keys = {}
            for key in ("release-me", "viewer-cannot", "active"):
                created = await create_key(conn, NewKey(name=f"{marker}-{key}"), actor="test")
                keys[key] = created.record.id
                if key != "active":
                    await quarantine_key(conn, created.record.id, actor="policy:default/exfil", reason="exfiltration attempt")
            from intelligence.policy.store import set_policy

            await set_policy(conn, f"team-rules-{marker}" if named_policy else "team-rules", POLICY_V1, actor="test")
    finally:
        await engine.dispose()
    return IntelDb(
        url=url,
        marker=marker,
        events=ev,
        request_ids={r.request_id.split("-", 1)[1]: r.request_id for r in records},
        verdicts=verdicts,
        keys=keys,
        enhancements=enh,
        experiments=exps,
        claude_today_usd=0.0143,
        claude_week_usd=0.5143,
        arms={"control": (120, 60), "variant": (118, 80)},
    )


async def drop_db(server_url: str, url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1].split("?")[0]}" WITH (FORCE)')
    finally:
        await conn.close()
