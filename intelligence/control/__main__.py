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
from .tls import CERT_ENV, CLIENT_CA_ENV, KEY_ENV, ServerTLS, TLSConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m intelligence.control", description="llmproxy control API (gRPC)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="PostgreSQL URL (default $DATABASE_URL)")
    parser.add_argument("--tls-cert", default=None, help=f"PEM certificate chain: serve TLS (default ${CERT_ENV})")
    parser.add_argument("--tls-key", default=None, help=f"PEM private key of --tls-cert (default ${KEY_ENV})")
    parser.add_argument(
        "--tls-client-ca",
        default=None,
        help=f"PEM CA bundle: require client certificates it signed, mTLS (default ${CLIENT_CA_ENV})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.database_url:
        parser.error("--database-url (or DATABASE_URL) is required")
    access = AccessSettings.from_env()
    require_safe_bind(args.host, access, what="control API")  # before touching the database
    try:
        tls = ServerTLS.from_env(cert=args.tls_cert, key=args.tls_key, client_ca=args.tls_client_ca)
        if tls is not None:
            tls.credentials()  # unreadable files: a usage error now, not a traceback later
    except TLSConfigError as exc:
        parser.error(str(exc))
    asyncio.run(_serve(args.database_url, access, args.host, args.port, tls))
    return 0


async def _serve(url: str, access: AccessSettings, host: str, port: int, tls: ServerTLS | None = None) -> None:
    from intelligence.store.engine import make_engine

    engine = make_engine(url)
    server = ControlServer(engine, access, host, port, tls=tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        print(f"control API listening on {server.address} ({server.transport})", flush=True)
        await stop.wait()
    finally:
        await server.stop()
        await engine.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
