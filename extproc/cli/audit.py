"""`llmproxy audit verify|export`: check the audit log's hash chain; export it for compliance."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .export import parse_since
from .stack import database_url_for, run_in_transaction


def register(sub: argparse._SubParsersAction) -> None:
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--data-dir", type=Path, default=Path(".llmproxy"))
    db.add_argument("--database-url", default=None)

    p = sub.add_parser("audit", help="verify or export the tamper-evident audit log")
    actions = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    v = actions.add_parser("verify", parents=[db], help="check the hash chain; exit 1 at the first broken link")
    v.add_argument("--json", action="store_true", help="print the result as one JSON object")
    v.add_argument(
        "--file",
        type=Path,
        default=None,
        help="verify an export (JSONL or CSV) instead of the database; links only, the head is not known",
    )
    v.set_defaults(func=run_verify)

    e = actions.add_parser("export", parents=[db], help="write the audit log as JSONL or CSV")
    e.add_argument("--since", default=None, help="ISO time (2026-11-27T10:00) or a duration ago (15m, 2h, 7d)")
    e.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    e.add_argument("--output", "-o", type=Path, default=None, help="file to write (default stdout)")
    e.set_defaults(func=run_export)


def _db(url: str, work: Any) -> Any:
    # one snapshot for the whole walk: the head and the rows are read as of the same moment
    return run_in_transaction(url, work, tables="audit tables", isolation="REPEATABLE READ")


def run_verify(args: argparse.Namespace) -> int:
    from intelligence.audit import AuditLog, read_export, verify_export

    if args.file is not None:
        try:
            with open(args.file, newline="") as fh:
                entries = read_export(fh)
        except (OSError, ValueError, KeyError) as exc:
            raise SystemExit(f"llmproxy: cannot read {args.file}: {exc}") from None
        result = verify_export(entries)
        source = str(args.file)
    else:
        url = database_url_for(args.data_dir, args.database_url)
        result = _db(url, AuditLog().verify)
        source = "database"
    if args.json:
        print(json.dumps({**result.to_dict(), "source": source}))
    elif result.ok:
        head = f", head entry {result.head_id} {result.head_hash[:16]}…" if result.head_hash else ""
        print(f"audit log intact: {result.checked} entries checked ({source}{head})")
    else:
        print(
            f"audit log BROKEN at entry {result.first_broken_id}: {result.reason} ({result.detail}); "
            f"{result.checked} entries before it are intact"
        )
    return 0 if result.ok else 1


def run_export(args: argparse.Namespace) -> int:
    from intelligence.audit import AuditLog

    url = database_url_for(args.data_dir, args.database_url)
    since = parse_since(args.since)
    audit = AuditLog()

    async def work(conn: Any) -> int:
        if args.output:
            with open(args.output, "w", newline="") as fh:  # noqa: ASYNC230 - a one-shot command; nothing else runs on its loop
                return await audit.export(conn, fh, args.format, since)
        return await audit.export(conn, sys.stdout, args.format, since)

    n = _db(url, work)
    print(f"llmproxy: exported {n} audit entries", file=sys.stderr)
    return 0
