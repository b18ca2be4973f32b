"""`llmproxy token create|revoke`: issue and revoke signed access tokens for the dashboard and control API.

Needs SECRET_KEY (the same one the servers verify with). A token is printed once and stored nowhere;
it stays valid until it expires (ACCESS_TOKEN_EXPIRE_MINUTES or --minutes, at most
ACCESS_TOKEN_MAX_MINUTES) or is revoked by its id (``jti``, printed with it). Revocation is written
to the database (table ``access_token_revocations``, audited); the control API and the dashboard
pick it up within a few seconds (NOTIFY, or their next poll).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="issue or revoke access tokens for the dashboard and control API")
    actions = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    c = actions.add_parser("create", help="issue a token (printed once; needs SECRET_KEY)")
    c.add_argument("--role", required=True, choices=["viewer", "admin"], help="viewer reads; admin may also change things")
    c.add_argument("--subject", required=True, help="who the token is for (recorded as the actor of changes)")
    c.add_argument(
        "--minutes",
        type=_positive_int,
        default=None,
        help="lifetime in minutes (default $ACCESS_TOKEN_EXPIRE_MINUTES or 60; at most $ACCESS_TOKEN_MAX_MINUTES or 1440)",
    )
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=run_create)

    r = actions.add_parser("revoke", help="revoke a token by its id (jti) or the token itself")
    r.add_argument("token", metavar="JTI", help="the token's id (jti, printed by `token create`) or the whole token")
    r.add_argument("--reason", default=None, help="why (kept with the revocation and in the audit log)")
    r.add_argument("--data-dir", type=Path, default=Path(".llmproxy"))
    r.add_argument("--database-url", default=None)
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(func=run_revoke)


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError("a token lives at least one minute")
    return n


def _settings() -> Any:
    from intelligence.access import AccessSettings

    try:
        # no revocation list: this command checks nothing against it
        settings = AccessSettings.from_env(revocations=False)
    except ValueError as exc:
        print(f"llmproxy token: {exc}", file=sys.stderr)
        return None
    if not settings.enabled:
        print(
            "llmproxy token: SECRET_KEY is not set; tokens cannot be issued "
            "(set the same SECRET_KEY the dashboard and control API use)",
            file=sys.stderr,
        )
        return None
    return settings


def run_create(args: argparse.Namespace) -> int:
    from intelligence.access import issue_token, verify_token

    settings = _settings()
    if settings is None:
        return 2
    subject = args.subject.strip()
    if not subject:
        print("llmproxy token: --subject must not be empty", file=sys.stderr)
        return 2
    try:
        token = issue_token(settings, subject, args.role, minutes=args.minutes)
    except ValueError as exc:  # longer than ACCESS_TOKEN_MAX_MINUTES
        print(f"llmproxy token: {exc}", file=sys.stderr)
        return 2
    principal = verify_token(settings, token)
    expires = principal.expires_at.isoformat() if principal.expires_at else None
    if args.json:
        print(
            json.dumps(
                {
                    "token": token,
                    "jti": principal.jti,
                    "subject": principal.subject,
                    "role": principal.role,
                    "expires_at": expires,
                }
            )
        )
    else:
        print(token)
        print(
            f"# {principal.role} token for {principal.subject}, id {principal.jti}, expires {expires}; shown once, not stored "
            f"(revoke with: llmproxy token revoke {principal.jti})",
            file=sys.stderr,
        )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from intelligence.access import InvalidToken, revoke_token, token_claims

    from .keys import cli_actor
    from .stack import database_url_for, run_in_transaction

    settings = _settings()
    if settings is None:
        return 2
    ref = args.token.strip()
    expires_at = None
    jti = ref
    if ref.count(".") == 2:  # a whole token: its signature must be ours, then its id and expiry are known
        try:
            claims = token_claims(settings, ref, verify_exp=False)
        except InvalidToken as exc:
            print(f"llmproxy token: cannot revoke: {exc}", file=sys.stderr)
            return 2
        jti = str(claims["jti"])
        expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC)
    url = database_url_for(args.data_dir, args.database_url)
    actor = cli_actor()

    async def work(conn: Any) -> bool:
        return await revoke_token(
            conn, jti, actor=actor, reason=args.reason, expires_at=expires_at, max_minutes=settings.max_minutes
        )

    try:
        new = run_in_transaction(url, work, tables="token revocation table")
    except ValueError as exc:
        print(f"llmproxy token: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"jti": jti, "revoked": True, "already_revoked": not new}))
    else:
        print(f"token {jti} {'revoked' if new else 'was already revoked'}")
    return 0
