"""What the shipped injection model and rules were built from: the role of an evaluation file.

``data/manifest.yaml`` lists every corpus that informed the shipped detector:

- ``train``: rows were fitted (classifier, attack memory) by ``python -m intelligence.detectors.train``,
  which writes these entries with the file's SHA-256;
- ``calibration``: not fitted, but used for a decision (a rule, a weight, a threshold, a cap) while
  the detector was built; maintained by hand in the same file (``train`` keeps them).

Any other file is ``heldout``: nothing in the shipped detector was decided on it.
``llmproxy eval security`` reports the role of each dataset from here (by content hash, then by
file name), never from a flag the user passes.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .memory import DATA_DIR

MANIFEST_FILE = DATA_DIR / "manifest.yaml"
ROLES = ("train", "calibration", "heldout")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=4)
def load(path: Path = MANIFEST_FILE) -> dict[str, Any]:
    if not path.exists():
        return {"datasets": {}}
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    doc.setdefault("datasets", {})
    return doc


def role_of(path: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"role": train|calibration|heldout, "why": ...} for an evaluation file."""
    doc = manifest if manifest is not None else load()
    entries: dict[str, dict[str, Any]] = doc.get("datasets") or {}
    digest = file_sha256(path) if path.exists() else None
    for name, entry in entries.items():
        if digest is not None and entry.get("sha256") == digest:
            return {"role": entry["role"], "why": entry.get("why", ""), "manifest_entry": name}
    named = entries.get(path.name)
    if named is not None:
        return {"role": named["role"], "why": named.get("why", ""), "manifest_entry": path.name}
    return {"role": "heldout", "why": "not in the manifest: never used to build the shipped detector"}


def record_training(files: dict[str, dict[str, Any]], path: Path = MANIFEST_FILE) -> None:
    """Write the ``train`` entries (name -> {sha256, rows, why}); keep the hand-kept calibration ones."""
    doc = dict(load(path)) if path.exists() else {}
    datasets = {k: v for k, v in (doc.get("datasets") or {}).items() if v.get("role") != "train"}
    for name, entry in files.items():
        datasets[name] = {"role": "train", **entry}
    doc["datasets"] = dict(sorted(datasets.items()))
    doc.setdefault(
        "about",
        "Corpora the shipped injection detector was built from (intelligence/detectors/manifest.py). "
        "train: fitted by python -m intelligence.detectors.train; calibration: used for a rule, weight or threshold. "
        "Every other file is held out.",
    )
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=120), encoding="utf-8")
    load.cache_clear()
