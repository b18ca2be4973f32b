"""The audit key: HKDF derivation, where the key comes from, key files, and what `llmproxy up` does."""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from extproc.cli.up import StartupError, _audit_env
from intelligence.audit import AuditKey, AuditKeyError, audit_key_from_env
from intelligence.audit.chain import GENESIS_HASH, check_entry, entry_hash, mac_key_id, seal
from intelligence.audit.keys import AUDIT_KEY_FILE_ENV, generate_key_file, hkdf_sha256

STRONG = secrets.token_urlsafe(48)
OTHER = secrets.token_urlsafe(48)


def test_hkdf_matches_rfc_5869_test_case_1() -> None:
    okm = hkdf_sha256(bytes([0x0B] * 22), bytes(range(0xF0, 0xFA)), salt=bytes(range(0x0D)), length=42)
    assert okm.hex() == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")


def test_sub_keys_are_separate_and_the_key_id_is_public_only() -> None:
    key = AuditKey.from_secret(STRONG, "test")
    assert len({key.entry_key, key.checkpoint_key, key.webhook_key, STRONG.encode()}) == 4
    assert len(key.kid) == 16 and key.kid not in STRONG and STRONG not in repr(key)
    assert AuditKey.from_secret(STRONG, "again").kid == key.kid
    assert AuditKey.from_secret(OTHER, "other").kid != key.kid


def test_resolution_order(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    key_file.write_text(OTHER + "\n")
    key_file.chmod(0o600)
    data = tmp_path / "data"
    generate_key_file(data / "audit.key")
    env_key = audit_key_from_env({"LLMPROXY_AUDIT_KEY": STRONG, AUDIT_KEY_FILE_ENV: str(key_file), "SECRET_KEY": OTHER})
    assert env_key is not None and env_key.kid == AuditKey.from_secret(STRONG, "x").kid and env_key.source == "LLMPROXY_AUDIT_KEY"
    from_file = audit_key_from_env({AUDIT_KEY_FILE_ENV: str(key_file), "SECRET_KEY": STRONG}, data_dir=data)
    assert (
        from_file is not None and from_file.source == f"file:{key_file}" and from_file.kid == AuditKey.from_secret(OTHER, "x").kid
    )
    from_dir = audit_key_from_env({"SECRET_KEY": STRONG}, data_dir=data)
    assert from_dir is not None and from_dir.source == f"file:{data / 'audit.key'}"
    assert audit_key_from_env({"LLMPROXY_DATA_DIR": str(data)}) == from_dir  # the data dir from the environment
    derived = audit_key_from_env({"SECRET_KEY": STRONG}, data_dir=tmp_path / "empty")
    assert derived is not None and derived.source == "SECRET_KEY (derived)"
    # derived with its own label: not the same key as SECRET_KEY used directly as an audit key
    assert derived.kid != AuditKey.from_secret(STRONG, "x").kid
    assert audit_key_from_env({}, data_dir=tmp_path / "empty") is None


@pytest.mark.parametrize(
    "env",
    [
        {"LLMPROXY_AUDIT_KEY": "CHANGE_ME_CHANGE_ME_CHANGE_ME_CHANGE_ME"},
        {"LLMPROXY_AUDIT_KEY": "short"},
        {"SECRET_KEY": "k" * 48},
        {AUDIT_KEY_FILE_ENV: "/nonexistent/audit.key"},
    ],
)
def test_weak_or_unreadable_keys_are_refused(env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(AuditKeyError):
        audit_key_from_env(env, data_dir=tmp_path)


def test_generated_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = generate_key_file(tmp_path / "d" / "audit.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    AuditKey.from_file(path)  # strong enough for its own check
    with pytest.raises(FileExistsError):
        generate_key_file(path)


def test_entries_carry_a_mac_only_a_key_holder_can_make() -> None:
    from datetime import UTC, datetime

    key = AuditKey.from_secret(STRONG, "k")
    e = seal((0, GENESIS_HASH), datetime.now(UTC), "a", "k", "s", {"x": 1}, key)
    assert e.hash.startswith(f"hmac-sha256:{key.kid}:") and mac_key_id(e.hash) == key.kid
    ring = {key.kid: key}
    assert check_entry(e, ring) == "ok"
    assert check_entry(e, {}) == "unverifiable"
    other = AuditKey.from_secret(OTHER, "o")
    assert check_entry(e, {other.kid: other}) == "unknown_key"
    # an attacker without the key who edits the entry can only make a MAC under another key, or a legacy hash
    forged = entry_hash(e.prev_hash, id=1, ts=e.ts, actor="a", kind="k", subject="s", payload={"x": 2}, key=other)
    assert check_entry(replace(e, payload={"x": 2}, hash=f"hmac-sha256:{key.kid}:{forged[-64:]}"), ring) == "bad"
    assert check_entry(replace(e, payload={"x": 2}), ring) == "bad"


def test_up_generates_a_key_file_once_and_passes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LLMPROXY_AUDIT_KEY", AUDIT_KEY_FILE_ENV, "SECRET_KEY", "LLMPROXY_AUDIT_CHECKPOINT_FILE"):
        monkeypatch.delenv(name, raising=False)
    env = _audit_env(tmp_path)
    key_file = tmp_path / "audit.key"
    assert env[AUDIT_KEY_FILE_ENV] == str(key_file) and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert env["LLMPROXY_AUDIT_CHECKPOINT_FILE"] == str(tmp_path / "audit" / "checkpoint.json")
    first = key_file.read_text()
    assert _audit_env(tmp_path)[AUDIT_KEY_FILE_ENV] == str(key_file) and key_file.read_text() == first  # kept
    # an existing key file wins over SECRET_KEY, so the key does not change between runs
    monkeypatch.setenv("SECRET_KEY", STRONG)
    assert _audit_env(tmp_path)[AUDIT_KEY_FILE_ENV] == str(key_file)
    # with SECRET_KEY and no file: nothing generated, the processes derive the key
    other = tmp_path / "other"
    other.mkdir()
    assert AUDIT_KEY_FILE_ENV not in _audit_env(other) and not (other / "audit.key").exists()
    # an explicit key is passed through as it is; a weak one stops start-up
    monkeypatch.setenv("LLMPROXY_AUDIT_KEY", OTHER)
    assert AUDIT_KEY_FILE_ENV not in _audit_env(other)
    monkeypatch.setenv("LLMPROXY_AUDIT_KEY", "changeme")
    with pytest.raises(StartupError, match="token_urlsafe"):
        _audit_env(other)
    assert os.environ["LLMPROXY_AUDIT_KEY"] == "changeme"
