"""Gateway keys (virtual keys): hashed at rest, scoped, expiring, revocable, with shared budgets.

See docs/keys-and-audit.md. The hot-path side (snapshot, checks, usage meter) is extproc/auth.py.
"""

from .material import KEY_SCHEME, Budgets, generate_key, hash_key, key_prefix, parse_expiry, split_list
from .models import KEY_TABLES, NOTIFY_CHANNEL, GatewayKey, GatewayKeyUsage
from .store import (
    AmbiguousKey,
    CreatedKey,
    KeyNotFound,
    KeyRecord,
    NewKey,
    create_key,
    find_key,
    list_keys,
    quarantine_key,
    release_key,
    revoke_key,
)

__all__ = [
    "KEY_SCHEME",
    "KEY_TABLES",
    "NOTIFY_CHANNEL",
    "AmbiguousKey",
    "Budgets",
    "CreatedKey",
    "GatewayKey",
    "GatewayKeyUsage",
    "KeyNotFound",
    "KeyRecord",
    "NewKey",
    "create_key",
    "find_key",
    "generate_key",
    "hash_key",
    "key_prefix",
    "list_keys",
    "parse_expiry",
    "quarantine_key",
    "release_key",
    "revoke_key",
    "split_list",
]
