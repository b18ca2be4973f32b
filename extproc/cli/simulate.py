"""`llmproxy simulate enhancement`: the enhancement loop end to end, against simulated models.

A SIMULATION, not a benchmark of any real model: the upstream is a fake chat model whose success
rate is set by whether the request carries a given instruction (extproc.testing.instruction_fake)
and Claude is FakeClaude (intelligence.claude.fake) proposing that instruction. Everything between
them is real: Envoy, the sidecar (which applies enhancements inline), Postgres, the pattern worker,
the candidate job and the experiment evaluator.

Flow:
  0. baseline traffic of two prompt families (a failing "invoice" family, a healthy "translate" one)
     with distinct x-session-id values; the pattern worker groups them;
  1. CandidateJob.tick() finds the failing pattern and asks (fake) Claude, who proposes the helpful
     instruction; an experiment starts; traffic and ExperimentEvaluator.tick() alternate until the
     evaluator decides (promoted, we expect);
  2. a harmful instruction is proposed (by the candidate job if it picks the pattern again, else
     stored as a "simulation" candidate) and tested against the promoted one until it is rolled back.
Bounded by --requests-per-phase and --max-seconds; every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HELPFUL = "Finish every answer completely; keep it under 120 words so it is never cut off."
HARMFUL = "Before answering, restate the whole request verbatim and list every assumption in detail."
TARGET_MARKER = "invoice summary"
TARGET_SYSTEM = "You are the billing assistant of Acme Ltd."
OTHER_SYSTEM = "You are a careful translator."
ORDERS = (1042, 1187, 2203, 2290, 3311, 3475, 4120, 4466, 5031, 5208)
PHRASES = ("good morning", "see you tomorrow", "thank you very much", "where is the station", "the bill, please", "it is raining")
BATCH = 20
CONCURRENCY = 6


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulations of the intelligence loop against fake models")
    what = p.add_subparsers(dest="simulation", metavar="WHAT")
    e = what.add_parser(
        "enhancement",
        help="simulate: failing pattern -> Claude candidate -> A/B experiment -> promote; then a harmful candidate -> roll back",
    )
    e.add_argument(
        "--requests-per-phase",
        type=int,
        default=400,
        help="at most this many requests per phase (baseline, helpful, harmful); default 400",
    )
    e.add_argument("--seed", type=int, default=1, help="seed of the fake model's draws (default 1)")
    e.add_argument("--database-url", default=None, help="an EMPTY Postgres database (default: temporary embedded)")
    e.add_argument("--max-seconds", type=float, default=900.0, help="give up after this long (default 900)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=run)
    p.set_defaults(func=lambda _args: (p.print_help(), 2)[1])


# ------------------------------------------------------------------------------------ traffic
def target_request(i: int) -> dict[str, Any]:
    order = ORDERS[i % len(ORDERS)]
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": TARGET_SYSTEM},
            {"role": "user", "content": f"Write the {TARGET_MARKER} for order {order} with its line items and totals."},
        ],
    }


def other_request(i: int) -> dict[str, Any]:
    phrase = PHRASES[i % len(PHRASES)]
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": OTHER_SYSTEM},
            {"role": "user", "content": f"Translate '{phrase}' into French."},
        ],
    }


@dataclass
class Traffic:
    url: str
    sent: int = 0
    failed_http: int = 0
    _counter: int = 0

    async def send(self, client: Any, n: int, *, phase: str, target_share: float = 0.8) -> None:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(k: int) -> None:
            i = self._counter + k
            # a fixed interleave (not random): 4 of 5 requests are the target family at 0.8
            is_target = (i % 5) < round(target_share * 5)
            doc = target_request(i) if is_target else other_request(i)
            async with sem:
                try:
                    # one simulated user per session: pattern memory reads a client's near-identical
                    # prompt within minutes as a retry (a failure), which independent users are not
                    r = await client.post(
                        self.url,
                        json=doc,
                        headers={"x-session-id": f"sim-{phase}-{i}", "authorization": f"Bearer sk-sim-{phase}-{i}"},
                    )
                    if r.status_code != 200:
                        self.failed_http += 1
                except Exception:  # noqa: BLE001 - counted; the record (if any) says what happened
                    self.failed_http += 1

        await asyncio.gather(*(one(k) for k in range(n)))
        self._counter += n
        self.sent += n


# ------------------------------------------------------------------------------------ database views
async def _scalar(engine: Any, sql: str, **params: Any) -> Any:
    from sqlalchemy import text

    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def wait_settled(engine: Any, expected: int, timeout: float = 120.0) -> bool:
    """Until every sent request is logged and the pattern worker has embedded it (success needs both)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logged = await _scalar(engine, "SELECT count(*) FROM exchanges WHERE session_id LIKE 'sim-%'")
        pending = await _scalar(
            engine,
            "SELECT count(*) FROM exchanges x WHERE x.session_id LIKE 'sim-%' AND NOT EXISTS "
            "(SELECT 1 FROM exchange_embeddings e WHERE e.request_id = x.request_id)",
        )
        if logged >= expected and pending == 0:
            return True
        await asyncio.sleep(0.25)
    return False


async def arm_outcomes(engine: Any, experiment_id: int) -> dict[str, dict[str, Any]]:
    """Per arm: exposures and the simulation's ground truth of success (finish_reason "stop")."""
    from sqlalchemy import text

    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT flags->'enhancement'->>'arm' AS arm, count(*) AS n, "
                    "count(*) FILTER (WHERE finish_reason = 'stop') AS ok FROM exchanges "
                    "WHERE flags ? 'enhancement' AND (flags->'enhancement'->>'experiment')::bigint = :x GROUP BY 1"
                ),
                {"x": experiment_id},
            )
        ).all()
    return {r.arm: {"n": int(r.n), "successes": int(r.ok), "rate": (r.ok / r.n) if r.n else None} for r in rows}


async def experiment_row(engine: Any, experiment_id: int) -> dict[str, Any]:
    from sqlalchemy import text

    async with engine.connect() as conn:
        row = (
            (
                await conn.execute(
                    text("SELECT id, enhancement_id, pattern_id, status, decision_reason, stats FROM experiments WHERE id = :x"),
                    {"x": experiment_id},
                )
            )
            .mappings()
            .one()
        )
    return dict(row)


async def open_experiment(engine: Any, *, exclude: set[int]) -> int | None:
    ids = await _all(engine, "SELECT id FROM experiments WHERE status IN ('running', 'paused') ORDER BY id")
    fresh = [i for i in ids if i not in exclude]
    return fresh[-1] if fresh else None


async def _all(engine: Any, sql: str, **params: Any) -> list[Any]:
    from sqlalchemy import text

    async with engine.connect() as conn:
        return [r[0] for r in (await conn.execute(text(sql), params)).all()]


def _construct(cls: Any, *args: Any, **options: Any) -> Any:
    """Pass only the options this version of the job accepts (its tuning knobs are keyword-only)."""
    accepted = inspect.signature(cls).parameters
    return cls(*args, **{k: v for k, v in options.items() if k in accepted})


# ------------------------------------------------------------------------------------ the run
@dataclass
class PhaseResult:
    experiment_id: int | None = None
    enhancement_id: int | None = None
    source: str = ""  # candidate_job | simulation
    status: str = "not started"
    decision_reason: str = ""
    requests_sent: int = 0
    exposures: int = 0
    arms: dict[str, Any] = field(default_factory=dict)
    evaluator_stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class Responder:
    """FakeClaude's answers: the helpful instruction first, the harmful one once asked to."""

    def __init__(self) -> None:
        self.phase = "helpful"
        self.calls = 0

    def __call__(self, request: dict) -> dict:
        self.calls += 1
        if self.phase == "helpful":
            candidate = {
                "kind": "system_prompt",
                "spec": {"text": HELPFUL, "position": "append"},
                "rationale": "Failing requests end with finish_reason=length: the answers are cut off. "
                "Asking for complete, bounded answers should stop the truncation.",
            }
        else:
            candidate = {
                "kind": "instruction_rewrite",
                "spec": {"text": HARMFUL},
                "rationale": "More context in every answer may help the user check it.",
            }
        return {"candidates": [candidate]}


async def simulate(args: argparse.Namespace, db_url: str, gateway: str, log: Any) -> dict[str, Any]:
    import httpx

    from intelligence.claude import ClaudeClient, ClaudeSettings, FakeClaude
    from intelligence.enhance import manage
    from intelligence.enhance.candidates import CandidateJob
    from intelligence.enhance.evaluator import ExperimentEvaluator
    from intelligence.store.engine import make_engine

    t_start = time.monotonic()
    deadline = t_start + args.max_seconds
    n_phase = max(40, args.requests_per_phase)
    responder = Responder()
    claude = await FakeClaude(responder).start()
    engine = make_engine(db_url)
    client = ClaudeClient(
        ClaudeSettings(
            api_key="sk-simulation", base_url=claude.base_url, mode="anthropic", timeout_s=10, max_retries=1, backoff_base_s=0.05
        ),
        engine,
    )
    traffic = Traffic(url=f"{gateway}/openai/v1/chat/completions")
    out: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            # 0. baseline
            t0 = time.monotonic()
            await traffic.send(http, n_phase, phase="base")
            settled = await wait_settled(engine, traffic.sent)
            out["baseline"] = {
                "requests": n_phase,
                "settled": settled,
                "seconds": round(time.monotonic() - t0, 2),
                **await _family_rates(engine),
            }
            log(
                f"baseline: {n_phase} requests; target family success {out['baseline']['target_success_rate']:.2f}, "
                f"other {out['baseline']['other_success_rate']:.2f}"
            )
            candidates = _construct(
                CandidateJob, engine, client, min_volume=min(50, n_phase // 3), window_hours=24, max_per_tick=3, auto_start=True
            )
            evaluator = _construct(ExperimentEvaluator, engine, min_samples=30, interval_s=1)

            # 1. helpful candidate from (fake) Claude, tested until decided
            summary = await candidates.tick()
            log(f"candidate job: {summary}")
            helpful = await _start_phase(
                engine,
                manage,
                exclude=set(),
                source="candidate_job",
                fallback_spec=("system_prompt", {"text": HELPFUL, "position": "append"}),
            )
            if helpful.experiment_id is not None:
                await _run_experiment(helpful, engine, http, traffic, evaluator, n_phase, "help", deadline, log)
            out["helpful"] = helpful.__dict__

            # 2. harmful candidate, tested against the promoted one until rolled back
            responder.phase = "harmful"
            harmful = PhaseResult(status="skipped: the helpful experiment was not promoted")
            if helpful.status == "promoted":
                summary = await candidates.tick()
                log(f"candidate job (phase 2): {summary}")
                harmful = await _start_phase(
                    engine,
                    manage,
                    exclude={helpful.experiment_id},
                    source="candidate_job",
                    fallback_spec=("instruction_rewrite", {"text": HARMFUL}),
                )
                if harmful.experiment_id is not None:
                    await _run_experiment(harmful, engine, http, traffic, evaluator, n_phase, "harm", deadline, log)
            out["harmful"] = harmful.__dict__
    finally:
        await client.aclose()
        await claude.stop()
        await engine.dispose()
    control = helpful.arms.get("control", {})
    variant = helpful.arms.get("variant", {})
    return {
        "simulation": True,
        "promoted_helpful": helpful.status == "promoted",
        "rolled_back_harmful": harmful.status == "rolled_back",
        "requests_to_decide": helpful.exposures,
        "control_success_rate": control.get("rate"),
        "variant_success_rate": variant.get("rate"),
        "requests_sent": traffic.sent,
        "http_failures": traffic.failed_http,
        "claude_calls": responder.calls,
        "seed": args.seed,
        "requests_per_phase": n_phase,
        "elapsed_s": round(time.monotonic() - t_start, 2),
        **out,
    }


async def _family_rates(engine: Any) -> dict[str, Any]:
    async def rate(marker: str) -> float | None:
        n = await _scalar(
            engine, "SELECT count(*) FROM exchanges WHERE session_id LIKE 'sim-%' AND prompt_user LIKE :m", m=f"%{marker}%"
        )
        ok = await _scalar(
            engine,
            "SELECT count(*) FROM exchanges WHERE session_id LIKE 'sim-%' AND prompt_user LIKE :m AND finish_reason = 'stop'",
            m=f"%{marker}%",
        )
        return ok / n if n else None

    return {"target_success_rate": await rate(TARGET_MARKER), "other_success_rate": await rate("Translate")}


async def _start_phase(
    engine: Any, manage: Any, *, exclude: set[int], source: str, fallback_spec: tuple[str, dict[str, Any]]
) -> PhaseResult:
    """The experiment the candidate job started; else start one for its candidate; else store ours."""
    result = PhaseResult(source=source)
    exp_id = await open_experiment(engine, exclude=exclude)
    if exp_id is None:
        pattern_id = await _target_pattern(engine)
        if pattern_id is None:
            result.status = "no pattern found for the target family"
            return result
        pending = await _all(
            engine, "SELECT id FROM enhancements WHERE status = 'candidate' AND pattern_id = :p ORDER BY id DESC", p=pattern_id
        )
        async with engine.begin() as conn:
            if pending:
                enhancement_id = pending[0]
            else:
                result.source = "simulation"  # the candidate job did not pick the pattern (again)
                kind, spec = fallback_spec
                enhancement_id = await manage.create_enhancement(
                    conn, pattern_id, kind, spec, "simulation: a candidate tested on purpose", "simulation"
                )
            exp_id = await manage.start_experiment(conn, enhancement_id, actor="simulation")
    row = await experiment_row(engine, exp_id)
    result.experiment_id, result.enhancement_id, result.status = int(row["id"]), int(row["enhancement_id"]), row["status"]
    return result


async def _target_pattern(engine: Any) -> int | None:
    ids = await _all(
        engine,
        "SELECT e.pattern_id FROM exchange_embeddings e JOIN exchanges x USING (request_id) "
        "WHERE x.prompt_user LIKE :m GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
        m=f"%{TARGET_MARKER}%",
    )
    return int(ids[0]) if ids else None


async def _run_experiment(
    res: PhaseResult,
    engine: Any,
    http: Any,
    traffic: Traffic,
    evaluator: Any,
    n_phase: int,
    phase: str,
    deadline: float,
    log: Any,
) -> None:
    t0 = time.monotonic()
    await asyncio.sleep(0.5)  # the sidecar reloads on NOTIFY; give it a moment before the first batch
    while res.requests_sent < n_phase and time.monotonic() < deadline:
        n = min(BATCH, n_phase - res.requests_sent)
        await traffic.send(http, n, phase=phase)
        res.requests_sent += n
        await wait_settled(engine, traffic.sent)
        await evaluator.tick()
        row = await experiment_row(engine, res.experiment_id)
        res.status, res.decision_reason = row["status"], row["decision_reason"] or ""
        res.evaluator_stats = row["stats"] or {}
        if res.status not in ("running", "paused"):
            break
    res.arms = await arm_outcomes(engine, res.experiment_id)
    res.exposures = sum(a["n"] for a in res.arms.values())
    res.seconds = round(time.monotonic() - t0, 2)
    log(
        f"experiment {res.experiment_id} ({phase}): {res.status} after {res.exposures} exposures "
        f"({res.requests_sent} requests): {res.decision_reason}"
    )


# ------------------------------------------------------------------------------------ processes
def run(args: argparse.Namespace) -> int:
    import logging

    from intelligence.ops.health import envoy_ready, grpc_healthy

    from . import envoy_config
    from .bench import _free_port
    from .up import StartupError, Supervisor, _envoy_bin

    if not getattr(args, "verbose", False):  # progress lines only; the stack's own logs are in the logs dir
        logging.getLogger().setLevel(logging.WARNING)
    log = (lambda msg: print(f"simulate: {msg}", file=sys.stderr)) if args.json else (lambda msg: print(msg, flush=True))
    tmp = Path(tempfile.mkdtemp(prefix="llmproxy-simulate-"))
    (tmp / "logs").mkdir()
    sup = Supervisor(tmp)
    try:
        if args.database_url:
            db_url = args.database_url
        else:
            from intelligence.embedded_pg import start_embedded

            sup.pg = start_embedded(tmp)
            db_url = sup.pg.url
        sup.migrate(db_url)
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "ENABLE_INTELLIGENCE": "1",
            "ENABLE_REAL_TIME_ENHANCEMENT": "1",
        }
        result = asyncio.run(
            _with_stack(args, db_url, env, sup, tmp, log, envoy_config, _free_port, _envoy_bin, envoy_ready, grpc_healthy)
        )
    except StartupError as exc:
        print(f"llmproxy simulate: {exc}", file=sys.stderr)
        return 1
    finally:
        sup.stop_all()
        if sup.pg is not None:  # the embedded database was only for this run; the logs stay
            shutil.rmtree(tmp / "pgdata", ignore_errors=True)
    result["logs"] = str(tmp / "logs")
    if args.json:
        print(json.dumps(result, default=str))
    else:
        _human(result)
    return 0 if result["promoted_helpful"] and result["rolled_back_harmful"] else 1


async def _with_stack(args, db_url, env, sup, tmp, log, envoy_config, free_port, envoy_bin, envoy_ready, grpc_healthy):
    from extproc.testing.instruction_fake import InstructionFake, InstructionModel

    model = InstructionModel(helpful=HELPFUL, harmful=HARMFUL, target_marker=TARGET_MARKER, seed=args.seed)
    fake = await InstructionFake(model).start()
    try:
        sidecar_port, port, admin = free_port(), free_port(), free_port()
        sup.spawn(
            "sidecar",
            [sys.executable, "-m", "extproc", "--port", str(sidecar_port), "--database-url", db_url, "--data-dir", str(tmp)],
            env,
        )
        sup.spawn(
            "worker", [sys.executable, "-m", "intelligence.memory", "--database-url", db_url, "--poll-interval", "0.2"], env
        )
        await asyncio.to_thread(sup.wait_for, "sidecar", lambda: grpc_healthy(sidecar_port), 60)
        cfg = envoy_config.render(
            envoy_config.find_template(),
            listen_host="127.0.0.1",
            port=port,
            admin_port=admin,
            sidecar_port=sidecar_port,
            upstreams=envoy_config.parse_upstream_specs([f"openai={fake.base_url}"]),
        )
        path = envoy_config.write(cfg, tmp / "envoy.yaml")
        sup.spawn("envoy", [envoy_bin(), "-c", str(path), "--disable-hot-restart", "-l", "error"], env)
        await asyncio.to_thread(sup.wait_for, "envoy", lambda: envoy_ready(admin), 60)
        log(f"stack up (gateway 127.0.0.1:{port}, fake model {fake.base_url}, logs {tmp / 'logs'})")
        result = await simulate(args, db_url, f"http://127.0.0.1:{port}", log)
        result["fake_model"] = {c: {"requests": model.seen[c], "successes": model.succeeded[c]} for c in model.seen}
        return result
    finally:
        await fake.stop()


def _human(r: dict[str, Any]) -> None:
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    print("\nSIMULATION (fake model, fake Claude; real gateway, database, worker, jobs)")
    b = r.get("baseline", {})
    print(
        f"  baseline      target family success {fmt(b.get('target_success_rate'))}, "
        f"other family {fmt(b.get('other_success_rate'))}"
    )
    for name in ("helpful", "harmful"):
        p = r.get(name, {})
        arms = p.get("arms", {})
        print(
            f"  {name:<13} experiment {p.get('experiment_id')} ({p.get('source')}): {p.get('status')} after "
            f"{p.get('exposures')} exposures / {p.get('requests_sent')} requests; control "
            f"{fmt(arms.get('control', {}).get('rate'))}, variant {fmt(arms.get('variant', {}).get('rate'))}"
        )
        if p.get("decision_reason"):
            print(f"                {p['decision_reason']}")
    print(
        f"  promoted_helpful={r['promoted_helpful']} rolled_back_harmful={r['rolled_back_harmful']} "
        f"requests_to_decide={r['requests_to_decide']} elapsed {r['elapsed_s']}s"
    )
