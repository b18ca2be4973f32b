"""`llmproxy retention --older-than 30d [--archive FILE.jsonl.gz] [--dry-run] [--json]`: trim the request log.

Deletes the exchanges that started before the cutoff (and their embeddings, outcome signals and
feedback; sessions left empty), in bounded batches, after writing them to the archive when one is given.
Aggregated analytics, patterns and the audit log stay. See intelligence/store/retention.py and
docs/operations.md ("Retention").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .stack import database_url_for

_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retention", help="archive and delete exchanges older than a cutoff")
    p.add_argument(
        "--older-than", required=True, metavar="AGE", help="delete exchanges that started longer ago than this: 36h, 30d, 12w"
    )
    p.add_argument(
        "--archive",
        type=Path,
        default=None,
        metavar="FILE.jsonl.gz",
        help="first write them here (export format, gzip; the file must not exist)",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted; change nothing")
    p.add_argument("--batch-size", type=int, default=2000, help="exchanges per transaction (default 2000)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--data-dir", type=Path, default=Path(".llmproxy"))
    p.add_argument("--database-url", default=None)
    p.set_defaults(func=run)


def parse_age(value: str) -> timedelta:
    """``36h``, ``30d``, ``12w`` -> a positive timedelta."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([hdw])\s*", value or "")
    if not m:
        raise SystemExit(f"llmproxy: --older-than {value!r}: use a duration like 36h, 30d or 12w")
    age = timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    if age <= timedelta(0):
        raise SystemExit("llmproxy: --older-than must be more than zero")
    return age


def run(args: argparse.Namespace) -> int:
    from intelligence.store.engine import make_engine
    from intelligence.store.retention import JsonlGzArchive, RetentionBusy, preview, purge

    cutoff = datetime.now(UTC) - parse_age(args.older_than)
    if args.batch_size < 1:
        raise SystemExit("llmproxy: --batch-size must be at least 1")
    if args.archive is not None and not args.dry_run and args.archive.exists():
        raise SystemExit(f"llmproxy: {args.archive} exists; archives are never overwritten, name a new file")
    url = database_url_for(args.data_dir, args.database_url)

    def progress(result) -> None:
        if not args.json:
            print(f"llmproxy: retention: {result.exchanges} exchanges deleted so far", file=sys.stderr)

    async def _go():
        engine = make_engine(url, pool_size=2, max_overflow=0)
        archive = None
        try:
            if args.dry_run:
                return await preview(engine, cutoff)
            archive = JsonlGzArchive(args.archive) if args.archive is not None else None
            return await purge(engine, cutoff, batch=args.batch_size, archive=archive, progress=progress)
        finally:
            if archive is not None:
                archive.close()
            await engine.dispose()

    try:
        result = asyncio.run(_go())
    except RetentionBusy as exc:
        print(f"llmproxy: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    related = ", ".join(f"{n} {t}" for t, n in result.related.items())
    verb = "would delete" if result.dry_run else "deleted"
    print(
        f"llmproxy: {verb} {result.exchanges} exchanges started before {result.cutoff.isoformat(timespec='seconds')}"
        f" ({related}; {result.sessions} empty sessions)"
    )
    if result.archive:
        print(f"llmproxy: archived {result.archived} exchanges to {result.archive}")
    return 0
