"""`llmproxy export requests [--since T] [--format jsonl|csv]`: write the request log."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .stack import database_url_for


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the request log")
    p.add_argument("what", choices=["requests"])
    p.add_argument("--since", default=None, help="ISO time (2026-11-27T10:00) or a duration ago (15m, 2h, 7d)")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--output", "-o", type=Path, default=None, help="file to write (default stdout)")
    p.add_argument("--data-dir", type=Path, default=Path(".llmproxy"))
    p.add_argument("--database-url", default=None)
    p.set_defaults(func=run)


def parse_since(value: str | None) -> datetime | None:
    if not value:
        return None
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(**{units[value[-1]]: float(value[:-1])})
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise SystemExit(f"llmproxy: --since {value!r}: use an ISO time or a duration like 15m, 2h, 7d") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def run(args: argparse.Namespace) -> int:
    from intelligence.export import export_requests
    from intelligence.store.engine import make_engine

    url = database_url_for(args.data_dir, args.database_url)
    since = parse_since(args.since)

    async def _go() -> int:
        engine = make_engine(url)
        try:
            if args.output:
                with open(args.output, "w", newline="") as fh:  # noqa: ASYNC230 - a one-shot command; nothing else runs on its loop
                    return await export_requests(engine, fh, since=since, fmt=args.format)
            return await export_requests(engine, sys.stdout, since=since, fmt=args.format)
        finally:
            await engine.dispose()

    n = asyncio.run(_go())
    print(f"llmproxy: exported {n} exchanges", file=sys.stderr)
    return 0
