"""Which evaluation rows were used for training, so evaluation can report on the held-out rest.

The split is fixed and documented: a row of a development corpus is a *training* row when the
SHA-256 of its group key is even, where the group key is

- jailbreak corpora (``meta.behavior`` present): the behaviour, so every attack method on one
  harmful behaviour lands on the same side and held-out rows ask for behaviours never trained on;
- everything else: the text itself.

Only the corpora and methods named in ``TRAIN_SOURCES`` contribute training rows; their
fingerprints ship in ``data/trainset.yaml`` and ``is_training_text`` reads them.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .memory import DATA_DIR

TRAINSET_FILE = DATA_DIR / "trainset.yaml"

# file name -> methods used (None: every row); rows outside these are never trained on.
TRAIN_SOURCES: dict[str, tuple[str, ...] | None] = {
    "attack_jailbreakbench_artifacts.jsonl": ("GCG", "PAIR"),
    "benign_awesome_chatgpt_prompts.jsonl": None,
    "benign_cyberseceval_frr.jsonl": None,
    "benign_xstest_safe.jsonl": None,
}
# CLINC150's own train split (benign everyday requests), a sample of it.
CLINC_FILE = "intent_clinc150.jsonl"
CLINC_SAMPLE = 3000


def fingerprint(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).encode("utf-8", "replace")).hexdigest()[:16]


def group_key(row: dict[str, Any]) -> str:
    meta = row.get("meta") or {}
    return str(meta.get("behavior") or meta.get("goal") or row.get("text", ""))


def in_train_half(file_name: str, row: dict[str, Any], *, trained_methods_only: bool = True) -> bool:
    """True for rows in the training half. With ``trained_methods_only=False`` also rows of other
    methods that share a trained group (same behaviour): those are excluded from evaluation too,
    because their harmful request was seen in training."""
    if file_name not in TRAIN_SOURCES:
        return False
    methods = TRAIN_SOURCES[file_name]
    if trained_methods_only and methods is not None and (row.get("meta") or {}).get("method") not in methods:
        return False
    digest = hashlib.sha256(f"{file_name}:{group_key(row)}".encode("utf-8", "replace")).digest()
    return digest[-1] % 2 == 0


@lru_cache(maxsize=1)
def _fingerprints(path: Path = TRAINSET_FILE) -> frozenset[str]:
    if not path.exists():
        return frozenset()
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return frozenset(doc.get("fingerprints") or ())


def is_training_text(text: str) -> bool:
    return fingerprint(text) in _fingerprints()


def save_trainset(texts: list[str], description: dict[str, Any], path: Path = TRAINSET_FILE) -> None:
    doc = {"description": description, "fingerprints": sorted({fingerprint(t) for t in texts})}
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=120), encoding="utf-8")
    _fingerprints.cache_clear()
