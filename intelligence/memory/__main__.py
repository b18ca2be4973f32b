"""Pattern worker process: `python -m intelligence.memory --database-url URL` (started by `llmproxy up`).

Embedding is CPU-heavy, so it runs in its own process at low priority: a burst of traffic is absorbed
by the backlog in the exchanges table, never by the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m intelligence.memory", description="llmproxy pattern-memory worker")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    p.add_argument(
        "--model",
        default=os.environ.get("LLMPROXY_EMBEDDING_MODEL", "all-MiniLM-L6-v2"),
        help="sentence-transformers model name or local path (default: the bundled all-MiniLM-L6-v2)",
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--poll-interval", type=float, default=0.5)
    args = p.parse_args(argv)
    if not args.database_url:
        raise SystemExit("pattern worker: no database (set DATABASE_URL or --database-url)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from intelligence.embeddings import shared_embedder
    from intelligence.memory.worker import PatternWorker, configure_worker_process
    from intelligence.store.engine import make_engine

    configure_worker_process()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # Vector arithmetic on a pgvector this CPU cannot run kills the backend: check once, never crash-loop it.
        from intelligence.store.vector_check import check_vector_support

        vectors = await check_vector_support(args.database_url, embedded=False)
        if vectors.crashed:
            logging.getLogger("llmproxy.worker").error("pattern worker idle: %s", vectors.message)
            await stop.wait()
            return
        engine = make_engine(args.database_url)
        try:
            embedder = await asyncio.to_thread(shared_embedder, args.model)
            worker = PatternWorker(engine, embedder, batch=args.batch, poll_interval=args.poll_interval)
            logging.getLogger("llmproxy.worker").info("pattern worker running (model %s)", args.model)
            await worker.run(stop)
        finally:
            await engine.dispose()

    asyncio.run(run())


if __name__ == "__main__":
    main()
