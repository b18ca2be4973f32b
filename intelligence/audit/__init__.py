"""Tamper-evident audit log (hash chain in PostgreSQL). See docs/keys-and-audit.md."""

from .chain import (
    GENESIS_HASH,
    HASH_MISMATCH,
    HEAD_MISMATCH,
    MISSING_ROW,
    PREV_HASH_MISMATCH,
    AuditEntry,
    ChainChecker,
    canonical_json,
    entry_hash,
)
from .log import (
    AUTOMATED_ACTION,
    CONFIG_CHANGE,
    EXPORT_FORMATS,
    KEY_EVENT,
    POLICY_CHANGE,
    POLICY_DECISION,
    AuditLog,
    PendingEntry,
    VerifyResult,
    read_export,
    verify_export,
)
from .models import AuditHeadRow, AuditLogRow
from .writer import AuditWriter

__all__ = [
    "AUTOMATED_ACTION",
    "CONFIG_CHANGE",
    "EXPORT_FORMATS",
    "GENESIS_HASH",
    "HASH_MISMATCH",
    "HEAD_MISMATCH",
    "KEY_EVENT",
    "MISSING_ROW",
    "POLICY_CHANGE",
    "POLICY_DECISION",
    "PREV_HASH_MISMATCH",
    "AuditEntry",
    "AuditHeadRow",
    "AuditLog",
    "AuditLogRow",
    "AuditWriter",
    "ChainChecker",
    "PendingEntry",
    "VerifyResult",
    "canonical_json",
    "entry_hash",
    "read_export",
    "verify_export",
]
