"""`llmproxy attacks list|add|disable`: the learned part of the injection detector's attack memory.

Rows also arrive by themselves when a verdict is confirmed as an attack (intelligence/attacks/growth.py);
running sidecars pick every change up through NOTIFY within a second or two, with no restart. `add`
redacts the text first (secrets and PII, as the request log would store it). Every change is written
to the audit log, with the operating-system user as the actor.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .stack import database_url_for, run_in_transaction

DEFAULT_FAMILY = "operator"


def register(sub: argparse._SubParsersAction) -> None:
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--data-dir", type=Path, default=Path(".llmproxy"))
    db.add_argument("--database-url", default=None)

    p = sub.add_parser("attacks", help="learned prompt attacks the inline detector blocks (list, add, disable)")
    actions = p.add_subparsers(dest="attacks_command", metavar="ACTION", required=True)

    ls = actions.add_parser("list", parents=[db], help="list learned attacks, newest first")
    ls.add_argument("--active", action="store_true", help="only the ones in use (not disabled)")
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    ls.set_defaults(func=run_list)

    a = actions.add_parser("add", parents=[db], help="teach the detector an attack (redacted before it is stored)")
    a.add_argument("--text", required=True, help="the attack prompt")
    a.add_argument("--family", default=DEFAULT_FAMILY, help=f"what kind of attack (default: {DEFAULT_FAMILY})")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=run_add)

    d = actions.add_parser("disable", parents=[db], help="stop using a learned attack (kept for the record)")
    d.add_argument("id", type=int, metavar="ID")
    d.add_argument("--reason", default=None, help="why (kept in the audit log)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=run_disable)


def _db(url: str, work: Any) -> Any:
    return run_in_transaction(url, work, tables="attack-memory table")


def redact_for_log(text: str) -> str:
    """Secrets and PII replaced by placeholders, as the request log stores a redacted prompt."""
    from intelligence.detectors.pii import shared_pii_detector
    from intelligence.detectors.redact import Redaction, redact_text
    from intelligence.detectors.secrets import shared_secret_detector
    from intelligence.detectors.spans import combine

    finder = combine(shared_secret_detector().find, shared_pii_detector().find)
    return redact_text(text, finder, Redaction())[0]


def run_list(args: argparse.Namespace) -> int:
    from intelligence.attacks import list_attacks

    url = database_url_for(args.data_dir, args.database_url)
    records = _db(url, lambda conn: list_attacks(conn, include_disabled=not args.active))
    docs = [r.to_dict() for r in records]
    if args.json:
        print(json.dumps(docs))
        return 0
    if not docs:
        print("no learned attacks (confirm a verdict as an attack, or `llmproxy attacks add --text ...`)")
        return 0
    header = ("ID", "STATUS", "FAMILY", "SOURCE", "ADDED", "TEXT")
    rows = [
        (d["id"], "active" if d["active"] else "disabled", d["family"], d["source"], d["created_at"][:16], _short(d["text"]))
        for d in docs
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def run_add(args: argparse.Namespace) -> int:
    from intelligence.attacks import add_attack

    from .keys import cli_actor

    if not args.text.strip():
        raise SystemExit("llmproxy: --text must not be empty")
    if not args.family.strip():
        raise SystemExit("llmproxy: --family must not be empty")
    stored = redact_for_log(args.text)
    actor = cli_actor()
    url = database_url_for(args.data_dir, args.database_url)
    record, changed = _db(url, lambda conn: add_attack(conn, stored, args.family, source=f"operator:{actor}", added_by=actor))
    if args.json:
        print(json.dumps({**record.to_dict(), "changed": changed}))
    elif changed:
        print(f"learned attack {record.id} ({record.family}) added; running sidecars reload it on notification")
    else:
        print(f"already known as learned attack {record.id} ({record.family}); nothing changed")
    return 0


def run_disable(args: argparse.Namespace) -> int:
    from intelligence.attacks import disable_attack

    from .keys import cli_actor

    url = database_url_for(args.data_dir, args.database_url)
    try:
        record, changed = _db(url, lambda conn: disable_attack(conn, args.id, actor=cli_actor(), reason=args.reason))
    except LookupError as exc:
        print(f"llmproxy: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**record.to_dict(), "changed": changed}))
    elif changed:
        print(f"learned attack {record.id} disabled")
    else:
        print(f"learned attack {record.id} was already disabled")
    return 0


def _short(text: str, n: int = 70) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
