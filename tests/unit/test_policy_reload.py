"""Hot reload of the policy file (no database) and the `llmproxy policy validate|show` commands."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

import extproc.cli as cli_main
from intelligence.policy import DEFAULT_POLICY_FILE, PolicyError, PolicyWatcher, resolve_policy_path
from intelligence.policy.testing import policy_yaml, request_facts

GOOD_V1 = policy_yaml({"id": "tagger", "actions": {"tag": "v1"}}, name="ops")
GOOD_V2 = policy_yaml({"id": "tagger", "actions": {"tag": "v2"}}, {"id": "cap", "actions": {"cap_max_tokens": 64}}, name="ops")
BAD = "rules:\n  - id: tagger\n    actions: {tag: v3, colour: red}\n"


def write(path: Path, text: str) -> None:
    """Replace the file the way editors and config-map updates do (new inode), with a new mtime."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def tags(watcher: PolicyWatcher) -> tuple[str, ...]:
    return watcher.snapshot.evaluate_request(request_facts()).tags


async def test_file_hot_reload_swaps_on_good_and_keeps_old_on_bad(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD_V1)
    swaps: list[str] = []
    watcher = PolicyWatcher(path, poll_interval=0.02, on_swap=lambda s: swaps.append(s.version))
    await watcher.start()
    try:
        assert tags(watcher) == ("v1",) and watcher.snapshot.documents[0].name == "ops"
        first = watcher.snapshot

        write(path, GOOD_V2)
        await wait_for(lambda: watcher.snapshot is not first)
        assert tags(watcher) == ("v2",) and watcher.snapshot.evaluate_request(request_facts()).cap_max_tokens == 64
        good = watcher.snapshot

        write(path, BAD)
        await wait_for(lambda: watcher.stats["rejected"] == 1)
        assert watcher.snapshot is good  # the bad version is rejected, the old one stays in force
        issues = watcher.errors[str(path)]
        assert issues[0].line == 3 and issues[0].field == "rules[0].actions.colour"

        os.utime(path, ns=(1, 1))  # touched, same content: nothing happens
        await asyncio.sleep(0.1)
        assert watcher.stats["rejected"] == 1 and watcher.snapshot is good

        write(path, GOOD_V1)
        await wait_for(lambda: tags(watcher) == ("v1",))
        assert str(path) not in watcher.errors
        assert len(swaps) == 3 and len(set(swaps)) == 2  # v1, v2, v1 again (same content, same version)
    finally:
        await watcher.stop()


async def test_missing_file_keeps_the_policy_and_reload_reports_changes(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD_V1)
    watcher = PolicyWatcher(path, poll_interval=3600)  # no background polling: drive it by hand
    await watcher.start()
    try:
        path.unlink()
        assert await watcher.reload() is False and tags(watcher) == ("v1",)
        path.write_text(GOOD_V2)
        assert await watcher.reload() is True and tags(watcher) == ("v2",)
        assert await watcher.reload() is False
    finally:
        await watcher.stop()


async def test_bad_file_at_start_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BAD)
    with pytest.raises(PolicyError) as info:
        await PolicyWatcher(path).start()
    assert info.value.issues[0].line == 3
    with pytest.raises(PolicyError, match="cannot read"):
        await PolicyWatcher(tmp_path / "absent.yaml").start()


async def test_swap_listener_errors_do_not_stop_reloads(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD_V1)

    def broken(_snapshot: object) -> None:
        raise RuntimeError("listener bug")

    watcher = PolicyWatcher(path, poll_interval=3600, on_swap=broken)
    await watcher.start()
    path.write_text(GOOD_V2)
    assert watcher.check_file() and tags(watcher) == ("v2",)
    await watcher.stop()


def test_policy_path_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LLMPROXY_POLICY_FILE", raising=False)
    assert resolve_policy_path() == DEFAULT_POLICY_FILE
    monkeypatch.setenv("LLMPROXY_POLICY_FILE", str(tmp_path / "p.yaml"))
    assert resolve_policy_path() == tmp_path / "p.yaml"
    assert resolve_policy_path("x.yaml") == Path("x.yaml")


# ------------------------------------------------------------------------------------------ CLI (no database)
class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setattr(cli_main, "_COMMANDS", tuple(dict.fromkeys(cli_main._COMMANDS + ("policy",))))
        monkeypatch.delenv("DATABASE_URL", raising=False)
        monkeypatch.delenv("LLMPROXY_POLICY_FILE", raising=False)
        self.parser = cli_main.build_parser()
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            ns = self.parser.parse_args(args)
            code = ns.func(ns) or 0
        except SystemExit as exc:
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
                code = 1
            else:
                code = exc.code or 0
        out = self.capsys.readouterr()
        return code, out.out, out.err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(capsys, monkeypatch)


def test_cli_validate(cli: Cli, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD_V2)
    bad.write_text(BAD)
    code, out, err = cli("policy", "validate", str(good), str(DEFAULT_POLICY_FILE))
    assert code == 0 and "good.yaml: valid: policy 'ops', 2 rules (2 enforce), 0 aliases" in out
    assert "1 monitor" in out
    code, out, err = cli("policy", "validate", str(good), str(bad))
    assert code == 1 and f"error: {bad}:3: rules[0].actions.colour: unknown key" in err
    code, out, _ = cli("policy", "validate", "--json", str(bad))
    doc = json.loads(out)
    assert code == 1 and doc["valid"] is False
    issue = doc["files"][0]["issues"][0]
    assert (issue["source"], issue["line"], issue["field"]) == (str(bad), 3, "rules[0].actions.colour")
    assert issue["message"].startswith("unknown key")
    code, out, _ = cli("policy", "validate", "--json", str(good))
    assert code == 0 and json.loads(out)["files"][0]["rules"] == 2
    code, _, err = cli("policy", "validate", str(tmp_path / "nope.yaml"))
    assert code == 1 and "cannot read" in err


def test_cli_show_without_database(cli: Cli, tmp_path: Path) -> None:
    code, out, _ = cli("policy", "show", "--data-dir", str(tmp_path))
    assert code == 0 and "source default:" in out and "no database" in out
    lines = out.splitlines()
    order = [line.split()[2] for line in lines if line.strip().startswith(("10 ", "20 ", "30 ", "40 ", "50 "))]
    assert order == [
        "default/redact-secrets",
        "default/block-injection",
        "default/tag-suspected-injection",
        "default/tag-hidden-unicode",
        "default/redact-pii",
    ]
    assert "monitor" in next(line for line in lines if "default/redact-pii" in line)
    path = tmp_path / "p.yaml"
    path.write_text(
        policy_yaml(
            {"id": "r", "phase": "response", "actions": {"tag": "t"}},
            {"id": "z", "mode": "off", "match": {"models": ["x"]}, "unless": {"keys": ["k"]}, "actions": {"tag": "t"}},
            aliases={"fast": "gpt-4o-mini"},
        )
    )
    code, out, _ = cli("policy", "show", "--no-db", "--file", str(path))
    assert code == 0 and "aliases: fast -> gpt-4o-mini" in out and "not included (--no-db)" in out
    assert "unless keys=" in out and "test/r" in out
    code, out, _ = cli("policy", "show", "--no-db", "--json", "--file", str(path))
    summary = json.loads(out)
    assert [r["id"] for r in summary["response_rules"]] == ["r"] and summary["disabled_rules"][0]["id"] == "z"
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    code, _, err = cli("policy", "show", "--no-db", "--file", str(bad))
    assert code == 1 and "rules[0].actions.colour" in err


def test_cli_show_with_unreachable_database(cli: Cli, tmp_path: Path) -> None:
    code, out, _ = cli("policy", "show", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert code == 0 and "database policies: not included (" in out
