"""Layer 2 of injection detection: similarity to a memory of known attacks.

:class:`AttackMemory` is the interface the detector needs; :class:`NumpyAttackMemory` keeps the
vectors in process (a matrix product per query). It starts from the seed shipped in
``data/memory.yaml``; attacks learned afterwards (confirmed verdicts, operators' additions: the
``attack_memory`` table) are merged in by ``intelligence.attacks.sync.AttackMemorySync``, which swaps the whole
content at once with :meth:`NumpyAttackMemory.replace` so a scan never sees half an update.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml

from .static_embed import STATIC_MODEL

Embed = Callable[[Sequence[str]], np.ndarray]

DATA_DIR = Path(__file__).with_name("data")
SEED_MEMORY = DATA_DIR / "memory.yaml"
# The shipped seed is embedded with the static distillation the default detector uses.
EMBEDDING_MODEL = STATIC_MODEL


@dataclass(frozen=True, slots=True)
class KnownAttack:
    text: str
    family: str
    source: str  # where the example comes from (licence-clean: hand-written or a permitted corpus)


@dataclass(frozen=True, slots=True)
class Neighbor:
    similarity: float
    text: str
    family: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"similarity": round(self.similarity, 3), "text": _short(self.text), "family": self.family, "source": self.source}


class AttackMemory(Protocol):
    def nearest(self, vectors: np.ndarray, k: int = 3) -> list[list[Neighbor]]:
        """For each query vector (L2-normalised rows), the k most similar known attacks, best first."""
        ...

    def add(self, items: Sequence[KnownAttack], vectors: np.ndarray) -> None: ...

    def __len__(self) -> int: ...


class NumpyAttackMemory:
    """In-process memory: cosine similarity as a dot product of normalised vectors."""

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self._items: list[KnownAttack] = []
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def items(self) -> list[KnownAttack]:
        return list(self._items)

    @property
    def vectors(self) -> np.ndarray:
        """The stored (L2-normalised) vectors, one row per item, as a copy."""
        with self._lock:
            return self._matrix.copy()

    def add(self, items: Sequence[KnownAttack], vectors: np.ndarray) -> None:
        vectors = self._normalised(items, vectors)
        with self._lock:
            # new objects, not in-place growth: a concurrent ``nearest`` keeps the pair it read
            self._items = self._items + list(items)
            self._matrix = np.vstack([self._matrix, vectors])

    def replace(self, items: Sequence[KnownAttack], vectors: np.ndarray) -> None:
        """Swap the whole content at once (a reload): a scan sees either the old or the new memory."""
        vectors = self._normalised(items, vectors)
        with self._lock:
            self._items, self._matrix = list(items), vectors

    def _normalised(self, items: Sequence[KnownAttack], vectors: np.ndarray) -> np.ndarray:
        if not len(items):
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(items), -1)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors have dimension {vectors.shape[1]}, memory has {self.dim}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)

    def nearest(self, vectors: np.ndarray, k: int = 3) -> list[list[Neighbor]]:
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        with self._lock:
            matrix, items = self._matrix, self._items
        if not items:
            return [[] for _ in range(len(vectors))]
        sims = vectors @ matrix.T
        k = min(k, len(items))
        out: list[list[Neighbor]] = []
        for row in sims:
            idx = np.argpartition(-row, k - 1)[:k]
            idx = idx[np.argsort(-row[idx])]
            out.append([Neighbor(float(row[i]), items[i].text, items[i].family, items[i].source) for i in idx])
        return out


def save_memory(path: Path, items: Sequence[KnownAttack], vectors: np.ndarray, model: str = EMBEDDING_MODEL) -> None:
    """YAML with the texts and their vectors (float16, base64) so start-up needs no re-embedding."""
    doc = {
        "model": model,
        "dim": int(vectors.shape[1]),
        "items": [{"text": it.text, "family": it.family, "source": it.source} for it in items],
        "vectors_f16_b64": base64.b64encode(np.asarray(vectors, dtype=np.float16).tobytes()).decode("ascii"),
    }
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=120), encoding="utf-8")


def load_memory(path: Path = SEED_MEMORY, embed: Embed | None = None, model: str = EMBEDDING_MODEL) -> NumpyAttackMemory:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    items = [KnownAttack(d["text"], d["family"], d["source"]) for d in doc["items"]]
    dim = int(doc["dim"])
    if doc.get("model") == model and doc.get("vectors_f16_b64"):
        raw = base64.b64decode(doc["vectors_f16_b64"])
        vectors = np.frombuffer(raw, dtype=np.float16).astype(np.float32).reshape(len(items), dim)
    elif embed is not None:  # a different embedding model: the stored vectors do not apply
        vectors = embed([it.text for it in items])
        dim = vectors.shape[1]
    else:
        raise ValueError(f"{path} was embedded with {doc.get('model')!r}, not {model!r}, and no embedder was given")
    memory = NumpyAttackMemory(dim)
    memory.add(items, vectors)
    return memory


def _short(s: str, n: int = 160) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"
