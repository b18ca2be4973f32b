"""Control API access rules without a database: roles per method, bind safety, token CLI."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from intelligence.access import AccessSettings, InvalidToken, issue_token, verify_token
from intelligence.control.auth import authorize, required_role
from intelligence.control.server import ControlServer

SECRET = secrets.token_urlsafe(48)  # a placeholder-like key is refused (intelligence.access)
ACCESS = AccessSettings(secret_key=SECRET)
M = "/llmproxy.control.v1.Control/"


def meta(token: str) -> list[tuple[str, str]]:
    return [("user-agent", "x"), ("authorization", f"Bearer {token}")]


def test_roles_per_method() -> None:
    for name in (
        "ListExperiments",
        "ListEnhancements",
        "ListVerdicts",
        "ExperimentHistory",
        "WatchEvents",
        "WhoAmI",
        "SubmitFeedback",
    ):
        assert required_role(M + name) == "viewer", name
    for name in (
        "StartExperiment",
        "PauseExperiment",
        "ResumeExperiment",
        "PromoteExperiment",
        "RollbackExperiment",
        "ConfirmVerdict",
        "SomethingAddedLater",
    ):
        assert required_role(M + name) == "admin", name
    assert required_role("/other.Service/ListExperiments") == "admin"


def test_authorize() -> None:
    viewer = issue_token(ACCESS, "vera", "viewer")
    admin = issue_token(ACCESS, "adam", "admin")
    assert authorize(ACCESS, meta(viewer), M + "ListVerdicts").subject == "vera"
    with pytest.raises(PermissionError):
        authorize(ACCESS, meta(viewer), M + "ConfirmVerdict")
    assert authorize(ACCESS, meta(admin), M + "ConfirmVerdict").is_admin
    with pytest.raises(InvalidToken):
        authorize(ACCESS, [("user-agent", "x")], M + "WhoAmI")
    # without SECRET_KEY everyone is the local operator (the server is loopback-only then)
    assert authorize(AccessSettings(secret_key=None), [], M + "ConfirmVerdict").subject == "local"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "example.com"])
def test_non_loopback_bind_without_secret_is_refused(host: str) -> None:
    with pytest.raises(SystemExit) as exc:
        ControlServer(None, AccessSettings(secret_key=None), host, 0)  # type: ignore[arg-type]
    assert "SECRET_KEY" in str(exc.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_or_authenticated_binds_are_allowed(host: str) -> None:
    ControlServer(None, AccessSettings(secret_key=None), host, 0)  # type: ignore[arg-type]
    ControlServer(None, ACCESS, "0.0.0.0", 0)  # type: ignore[arg-type]


def test_standalone_entry_refuses_before_touching_the_database() -> None:
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "intelligence.control",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--database-url",
            "postgresql://nobody@127.0.0.1:1/none",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "refusing to start the control API on 0.0.0.0" in proc.stderr


def test_token_create_prints_a_verifiable_token(monkeypatch, capsys) -> None:
    from extproc.cli import main

    monkeypatch.setenv("SECRET_KEY", SECRET)
    with pytest.raises(SystemExit) as exc:
        main(["token", "create", "--role", "admin", "--subject", "ops-anna", "--minutes", "5", "--json"])
    assert exc.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    principal = verify_token(ACCESS, doc["token"])
    assert (principal.subject, principal.role, doc["role"]) == ("ops-anna", "admin", "admin")
    left = (principal.expires_at - datetime.now(UTC)).total_seconds()
    assert 200 < left <= 300

    with pytest.raises(SystemExit) as exc:
        main(["token", "create", "--role", "viewer", "--subject", "vera"])
    out = capsys.readouterr()
    assert exc.value.code == 0
    assert verify_token(ACCESS, out.out.strip()).role == "viewer"
    assert "shown once" in out.err


def test_token_create_needs_secret_key(monkeypatch, capsys) -> None:
    from extproc.cli import main

    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["token", "create", "--role", "viewer", "--subject", "x"])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "SECRET_KEY is not set" in captured.err
