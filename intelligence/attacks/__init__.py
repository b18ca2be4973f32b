"""Attack memory: known prompt attacks learned after shipping, for the inline injection detector.

Rows come from verdicts confirmed as attacks (growth.py) and from operators (``llmproxy attacks``);
the sidecar keeps an in-process copy (intelligence/attacks/sync.py). See docs/security.md.
"""

from .growth import ATTACK_DETECTORS, LEARNED_FAMILY, learn_from_confirmation, learns_from
from .models import ATTACK_DIM, NOTIFY_CHANNEL, AttackMemoryRow
from .store import (
    AUDIT_KIND,
    AttackRecord,
    add_attack,
    disable_attack,
    get_attack,
    list_attacks,
    load_active,
    normalise_text,
    text_hash,
)

__all__ = [
    "ATTACK_DETECTORS",
    "ATTACK_DIM",
    "AUDIT_KIND",
    "LEARNED_FAMILY",
    "NOTIFY_CHANNEL",
    "AttackMemoryRow",
    "AttackRecord",
    "add_attack",
    "disable_attack",
    "get_attack",
    "learn_from_confirmation",
    "learns_from",
    "list_attacks",
    "load_active",
    "normalise_text",
    "text_hash",
]
