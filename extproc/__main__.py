"""Sidecar entrypoint: `python -m extproc --port 50051 --database-url ... --data-dir ...`.

This is where the hot path is wired to persistence; extproc itself only knows the Recorder protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from .context import Context
from .routing import parse_route_specs
from .server import serve
from .settings import SidecarSettings

log = logging.getLogger("llmproxy.sidecar")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m extproc", description="llmproxy ext_proc sidecar")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50051)
    p.add_argument("--database-url", default=None, help="default: $DATABASE_URL")
    p.add_argument("--data-dir", type=Path, default=Path(".llmproxy"))
    p.add_argument("--allow-target", action="append", default=[], help="host[:port] allowed for legacy /?target_url=")
    p.add_argument("--model-route", action="append", default=[], help="GLOB=PROVIDER, tried before the defaults")
    p.add_argument("--log-body-max", type=int, default=None, help="bytes of each body kept in the log")
    p.add_argument("--policy-file", default=None, help="policy YAML (default: $LLMPROXY_POLICY_FILE or the shipped baseline)")
    p.add_argument(
        "--auth",
        choices=["passthrough", "required"],
        default=None,
        help="passthrough: client provider keys go upstream (default); required: gateway keys only",
    )
    p.add_argument("--worker-index", type=int, default=0, help="this process's number among the sidecar workers (0: the first)")
    p.add_argument("--workers", type=int, default=1, help="how many sidecar workers the stack runs (llmproxy up sets it)")
    args = p.parse_args(argv)
    if args.workers < 1 or not 0 <= args.worker_index < args.workers:
        p.error("--worker-index must be in 0 .. --workers - 1")
    return args


def _adopt_retired_spools(recorder, settings: SidecarSettings) -> None:
    """Records spooled by a worker that no longer runs (the stack now has fewer workers) are replayed by
    worker 0, so lowering --sidecar-workers loses nothing."""
    from .settings import worker_spool_index

    try:
        candidates = sorted(p for p in settings.data_dir.iterdir() if p.is_dir())
    except OSError:
        return
    for directory in candidates:
        index = worker_spool_index(directory)
        if index is None or index < settings.workers:
            continue
        taken = recorder.adopt_spool(directory)
        if taken:
            log.warning("request log: %d records of retired sidecar worker %d taken into this worker's spool", taken, index)


def build_settings(args: argparse.Namespace) -> SidecarSettings:
    base = SidecarSettings.from_env()
    return SidecarSettings.from_env(
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        data_dir=args.data_dir,
        model_routes=parse_route_specs(args.model_route) + base.model_routes,
        legacy_allowlist=tuple(h.lower() for h in args.allow_target) + base.legacy_allowlist,
        log_body_max=args.log_body_max,
        auth_mode=args.auth,
        policy_file=args.policy_file,
        worker_index=args.worker_index,
        workers=args.workers,
    )


async def run(settings: SidecarSettings, stop: asyncio.Event) -> None:
    from intelligence.ingest import DbRecorder
    from intelligence.store.engine import make_engine

    if not settings.database_url:
        raise SystemExit("llmproxy sidecar: no database (set DATABASE_URL or --database-url)")
    engine = make_engine(settings.database_url)
    recorder = DbRecorder(engine, settings.spool_dir)
    if settings.worker_index == 0:
        _adopt_retired_spools(recorder, settings)
    await recorder.start()
    from intelligence.keys.cache import KeyCache
    from intelligence.keys.meter import UsageMeter

    keys = KeyCache(engine)
    await keys.start()
    meter = UsageMeter(engine, keys.budgets)
    await meter.start()
    from intelligence.audit.writer import AuditWriter
    from intelligence.detectors.injection import default_injection_detector
    from intelligence.detectors.pii import shared_pii_detector
    from intelligence.detectors.secrets import shared_secret_detector
    from intelligence.policy import PolicyWatcher

    from .screening import Guard

    audit = AuditWriter(engine)
    await audit.start()
    from intelligence.events.webhook import WebhookDispatcher
    from intelligence.events.writer import EventWriter

    events = EventWriter(engine)  # alerts and blocks for the live feed, off the hot path
    await events.start()
    webhook = WebhookDispatcher.from_env(engine)  # LLMPROXY_ALERT_WEBHOOK_URL: None when unset
    webhook_stop = asyncio.Event()
    webhook_task = asyncio.create_task(webhook.run(webhook_stop), name="alert-webhook") if webhook is not None else None
    policy = PolicyWatcher(settings.policy_file, engine)
    await policy.start()
    from intelligence.throttle import SharedThrottleCounts

    throttle_counts = SharedThrottleCounts.from_engine(engine)  # policy throttles hold across replicas
    policy.throttler.shared = throttle_counts
    await throttle_counts.start()
    # The default detector (static embedding: inline-cheap); LLMPROXY_INJECTION_EMBEDDINGS=0 for heuristics only.
    embeddings = os.environ.get("LLMPROXY_INJECTION_EMBEDDINGS", "1") != "0"
    injection = await asyncio.to_thread(default_injection_detector, with_embeddings=embeddings, background=True)
    from intelligence.attacks.sync import AttackMemorySync

    attack_memory = AttackMemorySync(engine, injection) if embeddings else None  # learned attacks, reloaded on NOTIFY
    if attack_memory is not None:
        await attack_memory.start()
    guard = Guard(
        policy,
        secrets=shared_secret_detector(),
        pii=await asyncio.to_thread(shared_pii_detector),
        injection=injection,
        audit=audit,
        quarantine=_quarantiner(engine),
        events=events,
        verdicts=await _claude_gate(engine, policy, events, audit),
        scan_budget_ms=float(os.environ.get("LLMPROXY_DETECTION_BUDGET_MS", "50")),
        pii_budget_ms=float(os.environ.get("LLMPROXY_PII_BUDGET_MS", "250")),
    )
    await asyncio.to_thread(guard.warm)  # before the health check says SERVING: no lazy loads on a request
    enhancer, enhancements = await _enhancer(engine)
    from . import metrics
    from .overload import DEFAULT_SHED_WAIT_MS, Shedder

    # LLMPROXY_SHED_WAIT_MS=0 turns load shedding off (then only Envoy's breaker and timeouts bound a queue).
    load = Shedder(
        threshold_ms=float(os.environ.get("LLMPROXY_SHED_WAIT_MS", str(DEFAULT_SHED_WAIT_MS))), on_shed=metrics.observe_shed
    )
    ctx = Context(
        settings=settings,
        recorder=recorder,
        feedback=_feedback_sink(engine),
        keys=keys,
        meter=meter,
        guard=guard,
        enhancer=enhancer,
        load=load if load.enabled else None,
    )
    from . import tracing
    from .pipeline import Pipeline
    from .stages import default_stages

    pipeline = Pipeline(
        default_stages(ctx),
        on_stage_error=lambda stage, _phase, mode: metrics.observe_stage_error(stage, f"fail_{mode.value}"),
        on_phase=metrics.observe_phase,
    )
    metrics.track_queue("audit", lambda: float(audit.pending))
    metrics.track_load(load)
    load.start()
    metrics.track_queue("events", lambda: float(events.pending))
    address = metrics.metrics_address_from_env()
    if address is not None and address[1] and settings.worker_index:
        address = (address[0], address[1] + settings.worker_index)  # one /metrics port per worker
    metrics_server = metrics.start_metrics_server(*address)[0] if address is not None else None
    tracing.configure()
    server, health_servicer = await serve(
        settings, pipeline, host=settings.host, port=settings.port, max_message=settings.grpc_max_message
    )
    log.info(
        "sidecar listening on %s:%d (event loop: %s)", settings.host, settings.port, type(asyncio.get_running_loop()).__module__
    )
    try:
        await stop.wait()
    finally:
        # Graceful: stop taking new streams, let in-flight exchanges finish, then drain the recorder.
        await health_servicer.enter_graceful_shutdown()
        await server.stop(grace=5)
        if enhancements is not None:
            await enhancements.stop()
        await load.stop()
        await policy.stop()
        if attack_memory is not None:
            await attack_memory.stop()
        await guard.verdicts.aclose()  # background verdict records, then the Claude client (if one was built)
        webhook_stop.set()
        if webhook_task is not None:
            await webhook_task
        await events.stop()
        await audit.stop()
        await throttle_counts.stop()
        await meter.stop()
        await keys.stop()
        await recorder.stop()
        await engine.dispose()
        tracing.shutdown()
        if metrics_server is not None:
            metrics_server.shutdown()
        log.info("sidecar stopped: %s", pipeline.stats)


async def _enhancer(engine):
    """Enhancements applied inline, when ENABLE_REAL_TIME_ENHANCEMENT allows (default on).

    The embedding model loads only on the first lookup, which happens only once some enhancement
    applies: a gateway with no active enhancement or experiment never loads it.
    """
    from intelligence.claude.settings import IntelligenceFlags

    try:
        flags = IntelligenceFlags.from_env()
    except ValueError as exc:  # a malformed CLAUDE_* setting is the Claude jobs' problem, not the gateway's
        log.warning("intelligence settings: %s; reading only the ENABLE_* flags", exc)
        flags = IntelligenceFlags.from_env({k: v for k, v in os.environ.items() if k.startswith("ENABLE_")})
    if not flags.real_time_enhancement:
        log.info("real-time enhancement off (ENABLE_REAL_TIME_ENHANCEMENT / ENABLE_INTELLIGENCE)")
        return None, None
    from intelligence.embeddings import shared_embedder
    from intelligence.enhance.live import EnhancementCache, Enhancer
    from intelligence.memory.lookup import PatternLookup

    cache = EnhancementCache(engine)
    budget_ms = float(os.environ.get("LLMPROXY_ENHANCE_LOOKUP_MS", "5"))
    lookup = PatternLookup(
        engine, lambda: shared_embedder(os.environ.get("LLMPROXY_EMBEDDING_MODEL", "all-MiniLM-L6-v2")), budget_ms=budget_ms
    )
    await cache.start()
    return Enhancer(cache, lookup, flags), cache


async def _claude_gate(engine, policy, events, audit):
    """Claude for `claude_verdict` rules, from the same environment as the intelligence process.

    The client (and the SDK import) is built only when a policy asks: now, when the policy at start-up
    has such a rule; otherwise on the first request a reloaded policy holds (built off the event loop).
    """
    from intelligence.claude.settings import ClaudeSettings, IntelligenceFlags

    from .claude_gate import ClaudeGate

    try:
        settings = ClaudeSettings.from_env()
    except ValueError as exc:  # claude_verdict rules then apply their declared fail mode
        log.warning("claude_verdict: Claude settings invalid (%s); such rules apply their on_timeout choice", exc)
        settings = None
    flags = IntelligenceFlags.from_env({k: v for k, v in os.environ.items() if k.startswith("ENABLE_")})
    gate = ClaudeGate(
        settings,
        engine,
        events=events,
        audit=audit,
        enabled=flags.intelligence and flags.anomaly_detection,
        max_inflight=int(os.environ.get("LLMPROXY_CLAUDE_VERDICT_CONCURRENCY", "8")),
        per_client_rpm=float(os.environ.get("LLMPROXY_CLAUDE_VERDICT_PER_CLIENT_RPM", "20")),
    )
    if policy.snapshot.asks_claude:
        log.info("claude_verdict rules present; Claude: %s", gate.unavailable or settings.summary())
        await gate.warm()
    return gate


def _quarantiner(engine):
    """Carry out a policy's quarantine off the hot path; the key cache picks it up through NOTIFY."""
    from intelligence.events import publish
    from intelligence.keys import quarantine_key

    pending: set[asyncio.Task] = set()

    async def run(key_id: str, reason: str, rule: str) -> None:
        try:
            async with engine.begin() as conn:
                record, changed = await quarantine_key(conn, key_id, actor=f"policy:{rule}", reason=reason)
                if changed:  # announced in the same transaction: the feed never shows a quarantine that did not happen
                    await publish(
                        conn,
                        kind="quarantine",
                        title=f"gateway key {key_id} quarantined: {reason}",
                        severity="critical",
                        subject=key_id,
                        detail={"rule": rule, "reason": reason, "name": record.name, "prefix": record.prefix},
                        source="sidecar",
                    )
            log.warning("gateway key %s quarantined by policy rule %s: %s", key_id, rule, reason)
        except Exception:
            log.exception("quarantine of gateway key %s (rule %s) failed", key_id, rule)

    def schedule(key_id: str, reason: str, rule: str) -> None:
        task = asyncio.get_running_loop().create_task(run(key_id, reason, rule))
        pending.add(task)
        task.add_done_callback(pending.discard)

    return schedule


def _feedback_sink(engine):
    """Feedback goes to pattern memory when it is installed (it owns the feedback table)."""
    try:
        from intelligence.memory.feedback import FeedbackInput, add_feedback
    except ImportError:  # pragma: no cover - pattern memory not installed
        return None

    class Sink:
        async def submit(self, payload, *, key_id=None, client_fp=None):
            item = FeedbackInput.parse(payload)
            return await add_feedback(
                engine, item.request_id, score=item.score, thumbs=item.thumbs, comment=item.comment,
                key_id=key_id, client_fp=client_fp,
            )  # fmt: skip

    return Sink()


LOOP_ENV = "LLMPROXY_SIDECAR_LOOP"
DEFAULT_LOOP = "asyncio"


def event_loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop the sidecar runs on: $LLMPROXY_SIDECAR_LOOP = asyncio | uvloop.

    None means asyncio's own loop (what asyncio.Runner builds by default).
    """
    choice = (choice if choice is not None else os.environ.get(LOOP_ENV, DEFAULT_LOOP)).strip().lower() or DEFAULT_LOOP
    if choice == "asyncio":
        return None
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise SystemExit(f"llmproxy sidecar: {LOOP_ENV}=uvloop but uvloop is not installed") from None
        return uvloop.new_event_loop
    raise SystemExit(f"llmproxy sidecar: {LOOP_ENV} must be asyncio or uvloop, not {choice!r}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from .logjson import configure_logging

    configure_logging(logging.INFO)  # LLMPROXY_LOG_FORMAT=json: one JSON object a line, secrets masked
    settings = build_settings(args)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, stop)

    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(_main())
    except OSError as exc:
        raise SystemExit(f"llmproxy sidecar: {exc}") from None


if __name__ == "__main__":
    main()
