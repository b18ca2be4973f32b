"""`llmproxy keys create|list|revoke|release`: manage gateway keys (virtual keys).

The key is printed once, by `create`; the database only ever holds its SHA-256 and a display prefix.
Every change is written to the audit log, with the operating-system user as the actor.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .stack import database_url_for, run_in_transaction


def register(sub: argparse._SubParsersAction) -> None:
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--data-dir", type=Path, default=Path(".llmproxy"))
    db.add_argument("--database-url", default=None)

    p = sub.add_parser("keys", help="manage gateway keys (create, list, revoke, release)")
    actions = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    c = actions.add_parser("create", parents=[db], help="issue a key (printed once)")
    c.add_argument("--name", required=True, help="who or what the key is for")
    c.add_argument("--models", default=None, help="comma-separated model globs it may use, e.g. 'gpt-*,claude-*' (default: any)")
    c.add_argument("--providers", default=None, help="comma-separated providers it may use, e.g. openai,anthropic (default: any)")
    c.add_argument("--expires", default=None, help="30d, 12h, 2w or an ISO time (default: never)")
    for flag, what in (
        ("--rpm", "requests per minute"),
        ("--rpd", "requests per day"),
        ("--tpm", "tokens per minute"),
        ("--tpd", "tokens per day"),
    ):
        c.add_argument(flag, type=_positive_int, default=None, help=f"budget: {what} (default: unlimited)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=run_create)

    ls = actions.add_parser("list", parents=[db], help="list keys (never the keys themselves)")
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    ls.set_defaults(func=run_list)

    r = actions.add_parser("revoke", parents=[db], help="revoke a key for good")
    r.add_argument("key", metavar="KEY_ID_OR_PREFIX", help="key id (gk_...), display prefix (llmp_...) or the key itself")
    r.add_argument("--reason", default=None)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=run_revoke)

    rel = actions.add_parser("release", parents=[db], help="lift a quarantine (an automated threat response) from a key")
    rel.add_argument("key", metavar="KEY_ID_OR_PREFIX", help="key id (gk_...), display prefix (llmp_...) or the key itself")
    rel.add_argument("--reason", default=None, help="why it is safe again (kept in the audit log)")
    rel.add_argument("--json", action="store_true")
    rel.set_defaults(func=run_release)


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError("budgets are positive (leave the flag out for unlimited)")
    return n


def cli_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def _db(url: str, work: Any) -> Any:
    return run_in_transaction(url, work, tables="gateway-key tables")


def run_create(args: argparse.Namespace) -> int:
    from intelligence.keys import Budgets, NewKey, create_key, parse_expiry, split_list

    try:
        spec = NewKey(
            name=args.name,
            models=split_list(args.models),
            providers=split_list(args.providers),
            expires_at=parse_expiry(args.expires) if args.expires else None,
            budgets=Budgets(rpm=args.rpm, rpd=args.rpd, tpm=args.tpm, tpd=args.tpd),
        )
    except ValueError as exc:
        raise SystemExit(f"llmproxy: {exc}") from None
    if not spec.name.strip():
        raise SystemExit("llmproxy: --name must not be empty")
    url = database_url_for(args.data_dir, args.database_url)
    created = _db(url, lambda conn: create_key(conn, spec, actor=cli_actor()))
    record = created.record
    if args.json:
        print(json.dumps({**record.to_public_dict(datetime.now(UTC)), "key": created.key}))
        return 0
    print(f"created gateway key {record.id} ({record.name})")
    print(f"  key:       {created.key}")
    print("             shown once: store it now, it cannot be recovered")
    print(f"  models:    {', '.join(record.models) or 'any'}")
    print(f"  providers: {', '.join(record.providers) or 'any'}")
    print(f"  expires:   {record.expires_at.isoformat() if record.expires_at else 'never'}")
    print(f"  budgets:   {_budgets_text(record.budgets.to_dict())}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from intelligence.keys import list_keys

    url = database_url_for(args.data_dir, args.database_url)
    records = _db(url, list_keys)
    now = datetime.now(UTC)
    docs = [r.to_public_dict(now) for r in records]
    if args.json:
        print(json.dumps(docs))
        return 0
    if not docs:
        print("no gateway keys (create one with `llmproxy keys create --name NAME`)")
        return 0
    header = ("ID", "NAME", "PREFIX", "STATUS", "MODELS", "PROVIDERS", "EXPIRES", "BUDGETS")
    rows = [
        (
            d["id"],
            d["name"],
            d["prefix"] + "…",
            d["status"],
            ",".join(d["models"]) or "any",
            ",".join(d["providers"]) or "any",
            (d["expires_at"] or "never")[:16],
            _budgets_text(d["budgets"]),
        )
        for d in docs
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from intelligence.keys import revoke_key

    return _change_state(
        args,
        revoke_key,
        lambda r, now: f"revoked gateway key {_label(r)}",
        lambda r, now: f"gateway key {_label(r)} was already revoked at {r.revoked_at.isoformat()}",
    )


def run_release(args: argparse.Namespace) -> int:
    from intelligence.keys import release_key

    return _change_state(
        args,
        release_key,
        lambda r, now: f"released gateway key {_label(r)}: it is {r.status(now)} again",
        lambda r, now: f"gateway key {_label(r)} is not quarantined; nothing to release",
    )


def _label(record: Any) -> str:
    return f"{record.id} ({record.prefix}…, {record.name})"


def _change_state(
    args: argparse.Namespace,
    change: Callable[..., Awaitable[tuple[Any, bool]]],
    changed_text: Callable[[Any, datetime], str],
    unchanged_text: Callable[[Any, datetime], str],
) -> int:
    """Revoke or release one key (by id or prefix) and report it; the store audits the change."""
    from intelligence.keys import AmbiguousKey, KeyNotFound

    url = database_url_for(args.data_dir, args.database_url)
    try:
        record, changed = _db(url, lambda conn: change(conn, args.key, actor=cli_actor(), reason=args.reason))
    except (KeyNotFound, AmbiguousKey) as exc:
        print(f"llmproxy: {exc.args[0] if isinstance(exc, KeyNotFound) else exc}", file=sys.stderr)
        return 1
    now = datetime.now(UTC)
    if args.json:
        print(json.dumps({**record.to_public_dict(now), "changed": changed}))
    else:
        print((changed_text if changed else unchanged_text)(record, now))
    return 0


def _budgets_text(budgets: dict[str, int | None]) -> str:
    parts = [f"{name}={value}" for name, value in budgets.items() if value is not None]
    return " ".join(parts) or "unlimited"
