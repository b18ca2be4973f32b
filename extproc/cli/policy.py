"""`llmproxy policy validate|show|set|list|delete`: check, inspect and manage policies.

``validate`` and ``show`` need no running stack (``show`` adds the database policies when a database
is reachable). ``set``, ``list`` and ``delete`` manage the database policies; every change is
validated first and written to the audit log with its diff, the operating-system user as the actor.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .stack import database_url_for, run_in_transaction


def register(sub: argparse._SubParsersAction) -> None:
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--data-dir", type=Path, default=Path(".llmproxy"))
    db.add_argument("--database-url", default=None)

    p = sub.add_parser("policy", help="validate, show and manage policies")
    actions = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    v = actions.add_parser("validate", help="check policy files (exit 1 with errors naming line and field)")
    v.add_argument("files", nargs="+", type=Path, metavar="FILE")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(func=run_validate)

    s = actions.add_parser("show", parents=[db], help="the compiled snapshot: sources, aliases, rules in evaluation order")
    s.add_argument(
        "--file", type=Path, default=None, help="policy file (default: $LLMPROXY_POLICY_FILE, else the shipped default policy)"
    )
    s.add_argument("--no-db", action="store_true", help="leave out the database policies")
    s.add_argument("--json", action="store_true", help="print the snapshot summary as JSON")
    s.set_defaults(func=run_show)

    st = actions.add_parser("set", parents=[db], help="store a policy in the database (validated, audited)")
    st.add_argument("file", type=Path, metavar="FILE")
    st.add_argument("--name", default=None, help="policy name (default: the file's `name:`, else its stem)")
    st.add_argument("--disable", action="store_true", help="store it switched off")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=run_set)

    ls = actions.add_parser("list", parents=[db], help="list the database policies")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)

    d = actions.add_parser("delete", parents=[db], help="remove a database policy (audited)")
    d.add_argument("name", metavar="NAME")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=run_delete)


def _print_issues(issues: Any) -> None:
    for issue in issues:
        print(f"error: {issue}", file=sys.stderr)


# ---------------------------------------------------------------------------------------- validate


def _db(url: str, work: Any) -> Any:
    return run_in_transaction(url, work, tables="policy table")


def run_validate(args: argparse.Namespace) -> int:
    from intelligence.policy import PolicyError, PolicySnapshot, load_file

    results = []
    ok = True
    for path in args.files:
        try:
            doc = load_file(path)
        except PolicyError as exc:
            ok = False
            results.append({"file": str(path), "valid": False, "issues": [i.to_dict() for i in exc.issues]})
            if not args.json:
                _print_issues(exc.issues)
            continue
        snap = PolicySnapshot.build([doc])
        results.append(
            {
                "file": str(path),
                "valid": True,
                "name": doc.name,
                "rules": len(doc.rules),
                "aliases": len(doc.aliases),
                "detectors": sorted(snap.detectors),
            }
        )
        if not args.json:
            modes: dict[str, int] = {}
            for rule in doc.rules:
                modes[rule.mode.value] = modes.get(rule.mode.value, 0) + 1
            counts = ", ".join(f"{n} {m}" for m, n in sorted(modes.items())) or "no rules"
            print(f"{path}: valid: policy {doc.name!r}, {len(doc.rules)} rules ({counts}), {len(doc.aliases)} aliases")
    if args.json:
        print(json.dumps({"valid": ok, "files": results}))
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------- show
def run_show(args: argparse.Namespace) -> int:
    from intelligence.policy import PolicyError, compose_snapshot, load_file, resolve_policy_path

    path = resolve_policy_path(args.file)
    try:
        file_doc = load_file(path)
    except PolicyError as exc:
        _print_issues(exc.issues)
        return 1
    stored: list[Any] = []
    db_note = "database policies: not included (--no-db)"
    if not args.no_db:
        stored, db_note = _stored_policies(args)
    snapshot, rejected = compose_snapshot(file_doc, stored)
    summary = snapshot.summary()
    summary["rejected"] = {name: [i.to_dict() for i in issues] for name, issues in rejected.items()}
    summary["database"] = db_note
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    _print_summary(summary, snapshot)
    return 0


def _stored_policies(args: argparse.Namespace) -> tuple[list[Any], str]:
    from intelligence.policy.store import list_policies

    try:
        url = database_url_for(args.data_dir, args.database_url)
    except SystemExit:
        return [], "database policies: not included (no database: set DATABASE_URL or start the stack)"
    try:
        stored = _db(url, list_policies)
    except (SystemExit, Exception) as exc:  # noqa: BLE001 - show what we can without the database
        return [], f"database policies: not included ({str(exc)[:200]})"
    return stored, f"database policies: {len(stored)} stored, {sum(1 for s in stored if s.enabled)} enabled"


def _print_summary(summary: dict[str, Any], snapshot: Any) -> None:
    print(f"policy snapshot {summary['version']}")
    for src in summary["sources"]:
        print(f"  source {src['name']}: {src['origin']} ({src['rules']} rules)")
    print(f"  {summary['database']}")
    for name, issues in summary["rejected"].items():
        print(f"  REJECTED database policy {name}: {issues[0]['field']}: {issues[0]['message']}")
    if summary["aliases"]:
        print("aliases: " + ", ".join(f"{a} -> {m}" for a, m in summary["aliases"].items()))
    print("detectors needed: " + (", ".join(summary["detectors"]) or "none"))
    for title, rules in (
        ("request rules", snapshot.request_rules),
        ("response rules", snapshot.response_rules),
        ("off (not evaluated)", snapshot.disabled),
    ):
        print(f"{title}, in evaluation order:")
        if not rules:
            print("  (none)")
            continue
        rows = [("PRIO", "MODE", "RULE", "MATCH", "ACTIONS")]
        for r in rules:
            match = " ".join(f"{k}={_short(v)}" for k, v in r.match.summary.items()) or "always"
            if r.unless is not None:
                match += " unless " + " ".join(f"{k}={_short(v)}" for k, v in r.unless.summary.items())
            rows.append((str(r.priority), r.mode.value, r.qualified, match, ", ".join(r.actions.names)))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4])


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= 40 else text[:39] + "…"


# ---------------------------------------------------------------------------------------- db policies
def run_set(args: argparse.Namespace) -> int:
    from extproc.cli.keys import cli_actor
    from intelligence.policy import PolicyError, parse_policy
    from intelligence.policy.store import set_policy

    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"llmproxy: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    try:
        doc = parse_policy(text, origin=str(args.file), default_name=args.file.stem)
    except PolicyError as exc:
        _print_issues(exc.issues)
        return 1
    name = args.name or doc.name
    url = database_url_for(args.data_dir, args.database_url)
    try:
        change = _db(url, lambda conn: set_policy(conn, name, text, actor=cli_actor(), enabled=not args.disable))
    except PolicyError as exc:
        _print_issues(exc.issues)
        return 1
    stored = change.policy
    if args.json:
        print(
            json.dumps(
                {
                    **stored.to_public_dict(),
                    "changed": change.changed,
                    "diff": change.diff,
                    "audit_id": change.audit.id if change.audit else None,
                }
            )
        )
        return 0
    if not change.changed:
        print(f"policy {name!r} unchanged (version {stored.version})")
        return 0
    state = "enabled" if stored.enabled else "disabled"
    print(
        f"policy {name!r} stored: version {stored.version}, {state}, {len(doc.rules)} rules "
        f"(audit entry {change.audit.id if change.audit else '-'})"
    )
    if change.diff:
        print(change.diff, end="")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from intelligence.policy.store import list_policies

    url = database_url_for(args.data_dir, args.database_url)
    stored = _db(url, list_policies)
    docs = [s.to_public_dict() for s in stored]
    if args.json:
        print(json.dumps(docs))
        return 0
    if not docs:
        print("no database policies (store one with `llmproxy policy set FILE`)")
        return 0
    rows = [("NAME", "STATE", "VERSION", "UPDATED", "BY")]
    rows += [
        (d["name"], "enabled" if d["enabled"] else "disabled", str(d["version"]), d["updated_at"][:19], d["updated_by"])
        for d in docs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def run_delete(args: argparse.Namespace) -> int:
    from extproc.cli.keys import cli_actor
    from intelligence.policy.store import PolicyNotFound, delete_policy

    url = database_url_for(args.data_dir, args.database_url)
    try:
        change = _db(url, lambda conn: delete_policy(conn, args.name, actor=cli_actor()))
    except PolicyNotFound as exc:
        print(f"llmproxy: {exc.args[0]}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"name": args.name, "deleted": True, "audit_id": change.audit.id if change.audit else None}))
    else:
        print(f"policy {args.name!r} deleted")
    return 0
