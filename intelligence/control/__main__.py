"""``python -m intelligence.control``: run the control API server on its own."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal

from intelligence.access import AccessSettings, require_safe_bind

from .server import DEFAULT_PORT, ControlServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m intelligence.control", description="llmproxy control API (gRPC)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="PostgreSQL URL (default $DATABASE_URL)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.database_url:
        parser.error("--database-url (or DATABASE_URL) is required")
    access = AccessSettings.from_env()
    require_safe_bind(args.host, access, what="control API")  # before touching the database
    asyncio.run(_serve(args.database_url, access, args.host, args.port))
    return 0


async def _serve(url: str, access: AccessSettings, host: str, port: int) -> None:
    from intelligence.store.engine import make_engine

    engine = make_engine(url)
    server = ControlServer(engine, access, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        print(f"control API listening on {server.address}", flush=True)
        await stop.wait()
    finally:
        await server.stop()
        await engine.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
