"""The audit key: authenticates audit entries (HMAC-SHA256) and checkpoints. Held outside the database.

Where it comes from, first match wins (:func:`audit_key_from_env`):

1. ``LLMPROXY_AUDIT_KEY``: the key itself (at least 32 bytes, random-looking: the same check as SECRET_KEY);
2. ``LLMPROXY_AUDIT_KEY_FILE``: a file holding it (what ``llmproxy up`` passes to its processes);
3. ``DATA_DIR/audit.key`` when it exists (``LLMPROXY_DATA_DIR``, or ``./.llmproxy`` for the CLI's default
   data dir): the file ``llmproxy up`` generates when no key is configured;
4. ``SECRET_KEY``, through HKDF with an audit-specific label, so the audit key is not the token-signing key.

Whatever the source, the secret is only input keying material: HKDF-SHA256 (RFC 5869) derives one
sub-key per use (entry MACs, checkpoint signatures, the checkpoint webhook's signature) and a public
key id (``kid``, 16 hex digits) stored in each MAC so a verifier can tell "made with another key" from
"forged". A key never leaves the process; the database only ever sees MACs.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from intelligence.access import WeakSecretKey, check_secret_key
from intelligence.errors import ConfigError

log = logging.getLogger("llmproxy.audit")

AUDIT_KEY_ENV = "LLMPROXY_AUDIT_KEY"
AUDIT_KEY_FILE_ENV = "LLMPROXY_AUDIT_KEY_FILE"
DATA_DIR_ENV = "LLMPROXY_DATA_DIR"
SECRET_KEY_ENV = "SECRET_KEY"
KEY_FILE_NAME = "audit.key"
DEFAULT_DATA_DIR = Path(".llmproxy")

_SALT = b"llmproxy audit v1"


class AuditKeyError(ConfigError):
    """A configured audit key is unreadable or too weak."""


def hkdf_sha256(ikm: bytes, info: bytes, *, salt: bytes = _SALT, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869): extract with ``salt``, expand to ``length`` bytes for ``info``."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


@dataclass(frozen=True)
class AuditKey:
    material: bytes = field(repr=False)
    source: str  # where it came from, for messages: "LLMPROXY_AUDIT_KEY", "file:/x/audit.key", "SECRET_KEY (derived)"
    entry_key: bytes = field(init=False, repr=False, compare=False)
    checkpoint_key: bytes = field(init=False, repr=False, compare=False)
    webhook_key: bytes = field(init=False, repr=False, compare=False)
    kid: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "entry_key", hkdf_sha256(self.material, b"entry mac"))
        object.__setattr__(self, "checkpoint_key", hkdf_sha256(self.material, b"checkpoint signature"))
        object.__setattr__(self, "webhook_key", hkdf_sha256(self.material, b"checkpoint webhook"))
        object.__setattr__(self, "kid", hkdf_sha256(self.material, b"key id", length=8).hex())

    @classmethod
    def from_secret(cls, value: str, source: str, *, check: bool = True) -> AuditKey:
        value = value.strip()
        if check:
            try:
                check_secret_key(value, name=source)
            except WeakSecretKey as exc:
                raise AuditKeyError(str(exc)) from None
        return cls(material=value.encode("utf-8"), source=source)

    @classmethod
    def from_file(cls, path: Path) -> AuditKey:
        try:
            info = path.stat()
            value = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditKeyError(f"cannot read the audit key file {path}: {exc}") from None
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("audit key file %s is readable by other users (mode %o); chmod 600 it", path, info.st_mode & 0o777)
        return cls.from_secret(value, f"file:{path}")

    def entry_mac(self, message: bytes) -> str:
        return hmac.new(self.entry_key, message, hashlib.sha256).hexdigest()

    def checkpoint_mac(self, message: bytes) -> str:
        return hmac.new(self.checkpoint_key, message, hashlib.sha256).hexdigest()


def data_dir_key_file(env: Mapping[str, str], data_dir: Path | None = None) -> Path:
    if data_dir is not None:
        return data_dir / KEY_FILE_NAME
    return Path(env.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR) / KEY_FILE_NAME


_cache: dict[tuple[object, ...], AuditKey | None] = {}


def _file_id(path: Path) -> tuple[object, ...] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path), st.st_mtime_ns, st.st_size, st.st_ino)


def audit_key_from_env(env: Mapping[str, str] | None = None, *, data_dir: Path | None = None) -> AuditKey | None:
    """This process's audit key (sources in the module docstring), or None when none is configured.

    Raises :class:`AuditKeyError` for a configured key that is weak or unreadable: entries must not
    silently go unauthenticated because of a typo. Cached per configuration (a file by its stat).
    """
    env = os.environ if env is None else env
    explicit = env.get(AUDIT_KEY_ENV) or None
    key_file = env.get(AUDIT_KEY_FILE_ENV) or None
    dir_file = data_dir_key_file(env, data_dir)
    secret = env.get(SECRET_KEY_ENV) or None
    cache_key = (
        explicit,
        key_file,
        _file_id(Path(key_file)) if key_file else None,
        _file_id(dir_file) if not (explicit or key_file) else None,
        secret if not (explicit or key_file) else None,
    )
    if cache_key in _cache:
        return _cache[cache_key]
    key: AuditKey | None
    if explicit:
        key = AuditKey.from_secret(explicit, AUDIT_KEY_ENV)
    elif key_file:
        key = AuditKey.from_file(Path(key_file))
    elif cache_key[3] is not None:
        key = AuditKey.from_file(dir_file)
    elif secret:
        try:
            check_secret_key(secret)
        except WeakSecretKey as exc:
            raise AuditKeyError(f"the audit key would be derived from SECRET_KEY, which is too weak: {exc}") from None
        key = AuditKey(material=b"SECRET_KEY\x00" + secret.encode("utf-8"), source="SECRET_KEY (derived)")
    else:
        key = None
    if len(_cache) > 32:  # configurations change rarely; never let this grow
        _cache.clear()
    _cache[cache_key] = key
    return key


def generate_key_file(path: Path) -> Path:
    """Create ``path`` with a new random key (mode 0600, never overwriting); returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (secrets.token_urlsafe(48) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return path
