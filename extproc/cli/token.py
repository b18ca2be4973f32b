"""`llmproxy token create`: issue a signed access token for the dashboard and the control API.

Needs SECRET_KEY (the same one the servers verify with). The token is printed once and stored
nowhere; it stays valid until it expires (ACCESS_TOKEN_EXPIRE_MINUTES, or --minutes).
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="issue access tokens for the dashboard and control API")
    actions = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    c = actions.add_parser("create", help="issue a token (printed once; needs SECRET_KEY)")
    c.add_argument("--role", required=True, choices=["viewer", "admin"], help="viewer reads; admin may also change things")
    c.add_argument("--subject", required=True, help="who the token is for (recorded as the actor of changes)")
    c.add_argument(
        "--minutes", type=_positive_int, default=None, help="lifetime in minutes (default $ACCESS_TOKEN_EXPIRE_MINUTES or 60)"
    )
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=run_create)


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError("a token lives at least one minute")
    return n


def run_create(args: argparse.Namespace) -> int:
    from intelligence.access import AccessSettings, issue_token, verify_token

    try:
        settings = AccessSettings.from_env()
    except ValueError as exc:
        print(f"llmproxy token: {exc}", file=sys.stderr)
        return 2
    if not settings.enabled:
        print(
            "llmproxy token: SECRET_KEY is not set; tokens cannot be issued "
            "(set the same SECRET_KEY the dashboard and control API use)",
            file=sys.stderr,
        )
        return 2
    subject = args.subject.strip()
    if not subject:
        print("llmproxy token: --subject must not be empty", file=sys.stderr)
        return 2
    token = issue_token(settings, subject, args.role, minutes=args.minutes)
    principal = verify_token(settings, token)
    expires = principal.expires_at.isoformat() if principal.expires_at else None
    if args.json:
        print(json.dumps({"token": token, "subject": principal.subject, "role": principal.role, "expires_at": expires}))
    else:
        print(token)
        print(f"# {principal.role} token for {principal.subject}, expires {expires}; shown once, not stored", file=sys.stderr)
    return 0
