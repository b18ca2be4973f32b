"""Layer 3 of injection detection: a logistic regression on sentence embeddings + junk features.

Weights ship as ``data/classifier.yaml`` (trained by ``python -m intelligence.detectors.train``, which
also writes what it was trained on). Inference is a dot product: no scikit-learn at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .memory import DATA_DIR

CLASSIFIER_FILE = DATA_DIR / "classifier.yaml"


@dataclass
class LinearClassifier:
    weights: np.ndarray  # over standardised features
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    feature_names: tuple[str, ...]
    model: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=np.float32))
        z = ((x - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))

    def save(self, path: Path = CLASSIFIER_FILE) -> None:
        doc = {
            "model": self.model,
            "feature_names": list(self.feature_names),
            "bias": float(self.bias),
            "weights": [round(float(v), 6) for v in self.weights],
            "mean": [round(float(v), 6) for v in self.mean],
            "scale": [round(float(v), 6) for v in self.scale],
            "meta": self.meta,
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False, width=200), encoding="utf-8")

    @classmethod
    def load(cls, path: Path = CLASSIFIER_FILE) -> LinearClassifier:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        return cls(
            weights=np.asarray(doc["weights"], dtype=np.float32),
            bias=float(doc["bias"]),
            mean=np.asarray(doc["mean"], dtype=np.float32),
            scale=np.asarray(doc["scale"], dtype=np.float32),
            feature_names=tuple(doc["feature_names"]),
            model=str(doc["model"]),
            meta=dict(doc.get("meta") or {}),
        )
