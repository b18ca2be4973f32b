"""`llmproxy audit verify|export|checkpoint`: check the audit log's MAC chain; export it; anchor its head.

``verify`` authenticates every entry with the audit key (LLMPROXY_AUDIT_KEY, LLMPROXY_AUDIT_KEY_FILE,
DATA_DIR/audit.key or SECRET_KEY, plus any ``--key-file``), compares the chain's end with the head
row and with the signed checkpoint under the data dir, and lists every finding. Exit status: 0 when
intact, 1 when something was found, 2 when entries carry MACs but no key is available to check them
(the links are checked, the content cannot be authenticated: the output says so, never "intact").
"""

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

    p = sub.add_parser("audit", help="verify, export or checkpoint the tamper-evident audit log")
    actions = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    v = actions.add_parser("verify", parents=[db], help="authenticate the chain; exit 1 when tampering is found")
    v.add_argument("--json", action="store_true", help="print the result as one JSON object")
    v.add_argument(
        "--file",
        type=Path,
        default=None,
        help="verify an export (JSONL or CSV) instead of the database; links and MACs, the head is not known",
    )
    v.add_argument(
        "--key-file",
        type=Path,
        action="append",
        default=[],
        help="another audit key to authenticate with (an earlier key after a rotation); repeatable",
    )
    v.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="the signed checkpoint to compare with (default $LLMPROXY_AUDIT_CHECKPOINT_FILE, else DATA_DIR/audit/checkpoint.json when DATA_DIR holds the stack using this database)",
    )
    v.add_argument("--no-checkpoint", action="store_true", help="do not compare with a checkpoint")
    v.set_defaults(func=run_verify)

    e = actions.add_parser("export", parents=[db], help="write the audit log as JSONL or CSV")
    e.add_argument("--since", default=None, help="ISO time (2026-11-27T10:00) or a duration ago (15m, 2h, 7d)")
    e.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    e.add_argument("--output", "-o", type=Path, default=None, help="file to write (default stdout)")
    e.set_defaults(func=run_export)

    c = actions.add_parser(
        "checkpoint", parents=[db], help="anchor the current head in the signed checkpoint file now (the gateway does it itself)"
    )
    c.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="the checkpoint file (default $LLMPROXY_AUDIT_CHECKPOINT_FILE, else the stack's DATA_DIR/audit/checkpoint.json)",
    )
    c.set_defaults(func=run_checkpoint)


def _db(url: str, work: Any) -> Any:
    # one snapshot for the whole walk: the head and the rows are read as of the same moment
    return run_in_transaction(url, work, tables="audit tables", isolation="REPEATABLE READ")


def _checkpoint_path(args: argparse.Namespace) -> Path | None:
    """--checkpoint, else LLMPROXY_AUDIT_CHECKPOINT_FILE, else the checkpoint of the stack whose database
    this is (LLMPROXY_DATA_DIR, set by database_url_for), else None: no checkpoint for this database."""
    import os

    from intelligence.audit.checkpoint import configured_path

    if args.checkpoint is not None:
        return Path(args.checkpoint)
    return configured_path(os.environ)


def _keys(args: argparse.Namespace) -> list[Any]:
    from intelligence.audit import AuditKey, AuditKeyError, audit_key_from_env

    try:
        key = audit_key_from_env(data_dir=args.data_dir)
        extra = [AuditKey.from_file(p) for p in getattr(args, "key_file", [])]
    except AuditKeyError as exc:
        raise SystemExit(f"llmproxy audit: {exc}") from None
    ring = [key] if key is not None else []
    return ring + [k for k in extra if all(k.kid != r.kid for r in ring)]


def run_verify(args: argparse.Namespace) -> int:
    from intelligence.audit import AuditLog, describe, read_checkpoint, read_export, verify_export
    from intelligence.audit.log import CANNOT_AUTHENTICATE

    keys = _keys(args)
    if args.file is not None:
        try:
            with open(args.file, newline="") as fh:
                entries = read_export(fh)
        except (OSError, ValueError, KeyError) as exc:
            raise SystemExit(f"llmproxy: cannot read {args.file}: {exc}") from None
        result = verify_export(entries, keys)
        source = str(args.file)
    else:
        url = database_url_for(args.data_dir, args.database_url)
        path = None if args.no_checkpoint else _checkpoint_path(args)
        state = read_checkpoint(path, keys) if path is not None else None

        async def work(conn: Any) -> Any:
            return await AuditLog(key=None).verify(conn, keys=keys, checkpoint=state)

        result = _db(url, work)
        source = "database"
    if args.json:
        doc = result.to_dict()
        doc["findings"] = [f.to_dict() for f in result.findings]
        doc["checkpoint"] = result.checkpoint if result.checkpoint is not None else {"status": "not checked"}
        print(json.dumps({**doc, "source": source}, default=str))
    else:
        print(describe(result) + f"\n  ({source})")
    if result.ok:
        return 0
    return 2 if result.reason == CANNOT_AUTHENTICATE and not result.findings else 1


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


def run_checkpoint(args: argparse.Namespace) -> int:
    import asyncio

    from intelligence.audit import AuditKeyError, Checkpointer, audit_key_from_env
    from intelligence.store.engine import make_engine

    try:
        key = audit_key_from_env(data_dir=args.data_dir)
    except AuditKeyError as exc:
        raise SystemExit(f"llmproxy audit: {exc}") from None
    if key is None:
        print("llmproxy audit: no audit key configured: a checkpoint cannot be signed", file=sys.stderr)
        return 2
    url = database_url_for(args.data_dir, args.database_url)
    path = _checkpoint_path(args)
    if path is None:
        print(
            "llmproxy audit: no checkpoint file for this database: pass --checkpoint FILE, set "
            "LLMPROXY_AUDIT_CHECKPOINT_FILE, or run it with the data dir of the stack that uses this database",
            file=sys.stderr,
        )
        return 2

    async def go() -> Any:
        engine = make_engine(url, pool_size=1, max_overflow=0)
        try:
            cp = Checkpointer(engine, key, path)
            return await cp.checkpoint(), cp.stats
        finally:
            await engine.dispose()

    cp, stats = asyncio.run(go())
    if cp is None:
        if stats["refused"]:
            print("llmproxy audit: checkpoint REFUSED: the chain does not match it (see the log above)", file=sys.stderr)
            return 1
        print(f"llmproxy audit: nothing new to checkpoint ({path})")
        return 0
    print(f"llmproxy audit: checkpointed entry {cp.last_id} in {path}")
    return 0
