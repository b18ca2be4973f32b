"""`python -m intelligence.jobs --database-url URL [--control-host H --control-port P]`. See the package docstring."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from intelligence.control.tls import ServerTLS

log = logging.getLogger("llmproxy.intelligence")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m intelligence.jobs", description="llmproxy intelligence jobs and control API")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    p.add_argument("--control-host", default=os.environ.get("LLMPROXY_CONTROL_HOST", "127.0.0.1"))
    p.add_argument(
        "--control-port",
        type=int,
        default=int(os.environ.get("LLMPROXY_CONTROL_PORT", "50052")),
        help="control API port; 0 disables it",
    )
    p.add_argument(
        "--control-tls-cert",
        default=None,
        help="PEM certificate chain: the control API serves TLS (default $LLMPROXY_CONTROL_TLS_CERT)",
    )
    p.add_argument("--control-tls-key", default=None, help="PEM key of the certificate (default $LLMPROXY_CONTROL_TLS_KEY)")
    p.add_argument(
        "--control-tls-client-ca",
        default=None,
        help="PEM CA bundle: require client certificates it signed (default $LLMPROXY_CONTROL_TLS_CLIENT_CA)",
    )
    return p.parse_args(argv)


def control_tls(args: argparse.Namespace) -> ServerTLS | None:
    """The control API's TLS settings (flags over environment), files checked; None for plaintext."""
    from intelligence.control.tls import ServerTLS

    tls = ServerTLS.from_env(
        cert=getattr(args, "control_tls_cert", None),
        key=getattr(args, "control_tls_key", None),
        client_ca=getattr(args, "control_tls_client_ca", None),
    )
    if tls is not None:
        tls.credentials()  # raises TLSConfigError for a missing or non-PEM file, before any job starts
    return tls


async def run(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from intelligence.access import AccessSettings, require_safe_bind
    from intelligence.claude import ClaudeClient, ClaudeSettings, IntelligenceFlags
    from intelligence.store.engine import make_engine

    access = AccessSettings.from_env()
    tls = None
    if args.control_port:
        require_safe_bind(args.control_host, access, what="control API")
        tls = control_tls(args)
    flags = IntelligenceFlags.from_env()
    settings = ClaudeSettings.from_env()
    engine = make_engine(args.database_url)
    client = ClaudeClient(settings, engine)
    log.info("intelligence: %s", flags.describe(settings)["summary"])
    from intelligence.events.spikes import SpikeMonitor, SpikeThresholds

    jobs: list = [SpikeMonitor(engine, SpikeThresholds.from_env())]  # operator alerts, with or without Claude
    if flags.intelligence:
        from intelligence.enhance.evaluator import ExperimentEvaluator

        jobs.append(ExperimentEvaluator(engine))
        if flags.pattern_learning and flags.real_time_enhancement:
            from intelligence.enhance.candidates import CandidateJob

            jobs.append(CandidateJob(engine, client))
        if flags.pattern_learning:
            from intelligence.memory.claude_labels import PatternLabelJob

            jobs.append(PatternLabelJob(engine, client, flags=flags))
        if flags.anomaly_detection:
            from intelligence.anomaly.job import AnomalyJob
            from intelligence.embeddings import shared_embedder

            jobs.append(AnomalyJob(engine, client, shared_embedder))
            # The embedding model (torch, transformers: ~15 s of CPU on 2 cores) loads before the control
            # port opens, and `llmproxy up` waits for that port: a lazy load after "ready" took the CPU
            # the first requests needed (docs/performance.md).
            try:
                await asyncio.to_thread(shared_embedder)
            except Exception:  # the job loads it again itself, under _supervise's restarts
                log.exception("intelligence: the embedding model did not load at start")
    server = None
    if args.control_port:
        from intelligence.control.server import ControlServer

        server = ControlServer(engine, access, host=args.control_host, port=args.control_port, tls=tls)
        await server.start()
        log.info("control API listening on %s (%s)", server.address, server.transport)
    tasks = [asyncio.create_task(_supervise(job, stop), name=type(job).__name__) for job in jobs]
    log.info("intelligence jobs running: %s", ", ".join(type(j).__name__ for j in jobs) or "none")
    try:
        await stop.wait()
    finally:
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.stop()
        await client.aclose()
        await engine.dispose()


async def _supervise(job, stop: asyncio.Event) -> None:
    """A job that crashes is logged and restarted after a pause: one bad job must not stop the others."""
    while not stop.is_set():
        try:
            await job.run(stop)
            return
        except Exception:
            log.exception("%s crashed; restarting in 10 s", type(job).__name__)
            try:
                await asyncio.wait_for(stop.wait(), timeout=10)
            except TimeoutError:
                pass


def _background_priority() -> None:
    """Off the hot path, and it should behave so: on a small machine the jobs (embedding model, statistics)
    must not take CPU from Envoy, the sidecar and Postgres while requests wait. A lower scheduling
    priority (nice, ``LLMPROXY_JOBS_NICE``, default 10) and one torch thread when the embedding model
    loads (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``, read when torch initialises)."""
    nice = int(os.environ.get("LLMPROXY_JOBS_NICE", "10") or 0)
    if nice > 0 and hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(nice)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.database_url:
        raise SystemExit("intelligence jobs: no database (set DATABASE_URL or --database-url)")
    if args.control_port:
        from intelligence.control.tls import TLSConfigError

        try:
            control_tls(args)  # a bad certificate setting stops start-up with one clear line
        except TLSConfigError as exc:
            raise SystemExit(f"intelligence jobs: {exc}") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _background_priority()

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(args, stop)

    asyncio.run(_main())


if __name__ == "__main__":
    main()
