"""Train the injection classifier and seed the known-attack memory.

    python -m intelligence.detectors.train --eval-dir ../shared/eval

Trained on (see trainset.py for the split):
- attacks: the hand-written seeds (data/seeds.yaml) and the training half (by behaviour) of the
  JailbreakBench GCG and PAIR rows. DSN, random-search and JailbreakChat rows are *not* trained on
  (the heuristics have to carry them), nor is any CyberSecEval prompt-injection row;
- benign: the hand-written hard negatives, a fixed sample of CLINC150's own train split, and the
  training half (by text) of the three benign development files.

Writes data/classifier.yaml (weights + what it was trained on), data/memory.yaml (the attack
texts above with their vectors) and data/trainset.yaml (fingerprints of every development row that
was trained on or shares a behaviour with one: `llmproxy eval security` leaves those out).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from . import junk
from .classifier import CLASSIFIER_FILE, LinearClassifier
from .injection import WINDOW_CHARS, embed_input
from .manifest import MANIFEST_FILE, file_sha256, record_training
from .memory import DATA_DIR, SEED_MEMORY, KnownAttack, save_memory
from .normalize import normalize
from .static_embed import STATIC_MODEL, shared_static_embedder
from .trainset import CLINC_FILE, CLINC_SAMPLE, TRAIN_SOURCES, TRAINSET_FILE, in_train_half, save_trainset

log = logging.getLogger("llmproxy.security.train")
SEEDS_FILE = DATA_DIR / "seeds.yaml"
SEED = 20240601


# The project's own calibration sets (intelligence.detectors.evalsets): never the held-out ones.
FIXTURES_DIR = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "eval"
EMBED_ATTACK_MAX_CHARS = 1_000


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass
class TrainingData:
    texts: list[str]
    labels: list[int]
    origins: list[str]  # which source each row came from (for weighting and the manifest)
    memory: list[KnownAttack]
    excluded: list[str]  # development rows to leave out of evaluation
    counts: dict[str, int]


def collect(eval_dir: Path, clinc_sample: int = CLINC_SAMPLE, fixtures_dir: Path | None = None) -> TrainingData:
    seeds = yaml.safe_load(SEEDS_FILE.read_text(encoding="utf-8"))
    texts: list[str] = []
    labels: list[int] = []
    origins: list[str] = []
    memory: list[KnownAttack] = []
    excluded: list[str] = []
    counts: dict[str, int] = {}

    for item in seeds["attacks"]:
        texts.append(item["text"])
        labels.append(1)
        origins.append("seeds")
        memory.append(KnownAttack(item["text"], item["family"], "llmproxy seeds"))
    for text in seeds["benign"]:
        texts.append(text)
        labels.append(0)
        origins.append("seeds")
    counts["seeds.attacks"] = len(seeds["attacks"])
    counts["seeds.benign"] = len(seeds["benign"])

    for name in sorted(TRAIN_SOURCES):
        path = eval_dir / name
        if not path.exists():
            log.warning("missing %s: trained without it", path)
            continue
        n = 0
        for row in _read_jsonl(path):
            if in_train_half(name, row, trained_methods_only=False):
                excluded.append(row["text"])
            if not in_train_half(name, row):
                continue
            label = 1 if row["label"] == "attack" else 0
            texts.append(row["text"])
            labels.append(label)
            origins.append(name)
            n += 1
            if label:
                meta = row.get("meta") or {}
                memory.append(
                    KnownAttack(
                        row["text"],
                        f"{meta.get('family', 'attack')}:{meta.get('method', '')}".rstrip(":"),
                        f"{name} (train half)",
                    )
                )
        counts[name] = n

    for path in sorted(fixtures_dir.glob("calib_*.jsonl.gz")) if fixtures_dir is not None else []:
        n = 0
        for row in _read_jsonl(path):
            label = 1 if row["label"] == "attack" else 0
            if label and len(row["text"]) > EMBED_ATTACK_MAX_CHARS:
                continue  # the payload may sit outside what one embedding window sees
            texts.append(row["text"])
            labels.append(label)
            origins.append(path.name)
            n += 1
        counts[path.name] = n

    clinc = eval_dir / CLINC_FILE
    if clinc.exists():
        rows = [r for r in _read_jsonl(clinc) if (r.get("meta") or {}).get("split") == "train"]
        random.Random(SEED).shuffle(rows)
        for row in rows[:clinc_sample]:
            texts.append(row["text"])
            labels.append(0)
            origins.append(CLINC_FILE)
        counts[f"{CLINC_FILE} (train split sample)"] = min(clinc_sample, len(rows))
    return TrainingData(texts, labels, origins, memory, excluded, counts)


def featurize(texts: list[str], embed: Any, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    norm = [normalize(t[:WINDOW_CHARS]).text for t in texts]
    vecs = []
    for i in range(0, len(norm), batch):
        vecs.append(embed([embed_input(t) for t in norm[i : i + batch]]))
        log.info("embedded %d/%d", min(i + batch, len(norm)), len(norm))
    feats = np.stack([junk.features(t) for t in norm])
    return np.vstack(vecs).astype(np.float32), feats


# Short everyday requests are plentiful and easy; long role-play and security-themed prompts are
# the hard negatives, so they weigh more.
ORIGIN_WEIGHTS = {
    CLINC_FILE: 0.5,
    "benign_awesome_chatgpt_prompts.jsonl": 16.0,
    "benign_cyberseceval_frr.jsonl": 1.5,
    "benign_xstest_safe.jsonl": 2.0,
    "calib_benign_writing.jsonl.gz": 4.0,
    "calib_benign_technical.jsonl.gz": 2.0,
    "calib_benign_multilingual.jsonl.gz": 1.0,
    "calib_attack_hidden.jsonl.gz": 1.0,
}
# The classifier flags alone (calibrated score 0.5) at the out-of-fold probability that this share
# of the benign training rows stays under, and never below CLASSIFIER_FLOOR.
ALONE_AT_BENIGN_QUANTILE = 0.995
CLASSIFIER_FLOOR = 0.9


def fit(data: TrainingData, vecs: np.ndarray, feats: np.ndarray, c: float, model_name: str = STATIC_MODEL) -> LinearClassifier:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = np.hstack([vecs, feats])
    y = np.asarray(data.labels)
    w = np.asarray([ORIGIN_WEIGHTS.get(o, 1.0) for o in data.origins], dtype=np.float64)
    # balance classes after the origin weights
    w[y == 1] *= w[y == 0].sum() / max(w[y == 1].sum(), 1e-9)
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    xs = (x - mean) / scale
    model = LogisticRegression(C=c, max_iter=5000)
    folds = StratifiedKFold(5, shuffle=True, random_state=SEED)
    cv = cross_val_predict(model, xs, y, cv=folds, method="predict_proba", params={"sample_weight": w})[:, 1]
    model.fit(xs, y, sample_weight=w)
    benign_cv = cv[y == 0]
    alone_at = round(max(CLASSIFIER_FLOOR, float(np.quantile(benign_cv, ALONE_AT_BENIGN_QUANTILE))), 4)
    long_rows = np.asarray([len(t) > 1_000 for t in data.texts])
    long_benign = cv[(y == 0) & long_rows]
    alone_untrusted = (
        round(max(alone_at, float(np.quantile(long_benign, ALONE_AT_BENIGN_QUANTILE))), 4) if len(long_benign) else alone_at
    )
    return LinearClassifier(
        weights=model.coef_[0].astype(np.float32),
        bias=float(model.intercept_[0]),
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        feature_names=tuple(f"emb{i}" for i in range(vecs.shape[1])) + junk.FEATURE_NAMES,
        model=model_name,
        meta={
            "trained_by": "python -m intelligence.detectors.train",
            "algorithm": f"sklearn LogisticRegression(C={c}) on standardised features, sample weights per origin {ORIGIN_WEIGHTS}, classes balanced",
            "rows": {"attack": int(y.sum()), "benign": int((1 - y).sum())},
            "sources": data.counts,
            "split": "trainset.py: SHA-256 of the group key (JailbreakBench: behavior; others: text), even = train",
            "cv_recall_at_0.5": round(float((cv[y == 1] >= 0.5).mean()), 4),
            "cv_false_positive_rate_at_0.5": round(float((cv[y == 0] >= 0.5).mean()), 4),
            # per source class: probability that flags alone (injection.InjectionDetector.alone_at)
            "alone_at": {"user": alone_at, "untrusted": alone_untrusted},
            "cv_recall_at_alone_at_user": round(float((cv[y == 1] >= alone_at).mean()), 4),
        },
    )


def train(
    eval_dir: Path,
    c: float = 0.01,
    embed: Any = None,
    out_dir: Path = DATA_DIR,
    model_name: str = STATIC_MODEL,
    fixtures_dir: Path | None = FIXTURES_DIR,
) -> dict[str, Any]:
    """``embed`` defaults to the static distillation the inline detector uses (static_embed.py)."""
    data = collect(eval_dir, fixtures_dir=fixtures_dir)
    vecs, feats = featurize(data.texts, embed or shared_static_embedder().encode)
    clf = fit(data, vecs, feats, c, model_name)
    clf.save(out_dir / CLASSIFIER_FILE.name)
    # the memory holds standalone attacks only (seeds, JailbreakBench): a calibration attack is a
    # benign carrier with a payload, which would make the carrier itself a "known attack"
    attack_rows = [i for i, label in enumerate(data.labels) if label == 1 and not data.origins[i].startswith("calib_")]
    save_memory(out_dir / SEED_MEMORY.name, data.memory, vecs[attack_rows], model=model_name)
    save_trainset(
        data.texts + data.excluded,
        {
            "what": "development rows trained on, seeded into memory, or sharing a behaviour with those",
            "sources": data.counts,
            "split": clf.meta["split"],
        },
        out_dir / TRAINSET_FILE.name,
    )
    used = {name: eval_dir / name for name in [*TRAIN_SOURCES, CLINC_FILE]}
    if fixtures_dir is not None:
        used.update({p.name: p for p in sorted(fixtures_dir.glob("calib_*.jsonl.gz"))})
    record_training(
        {
            name: {
                "sha256": file_sha256(path),
                "rows": data.counts.get(name, data.counts.get(f"{name} (train split sample)")),
                "why": "fitted",
            }
            for name, path in used.items()
            if path.exists()
        },
        out_dir / MANIFEST_FILE.name,
    )
    log.info("classifier: %s", json.dumps(clf.meta))
    return clf.meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m intelligence.detectors.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval-dir", type=Path, default=Path("../shared/eval"), help="directory with the development corpora")
    parser.add_argument("--C", type=float, default=0.01, help="inverse regularisation strength")
    parser.add_argument(
        "--out-dir", type=Path, default=DATA_DIR, help="where to write classifier.yaml, memory.yaml, trainset.yaml"
    )
    parser.add_argument(
        "--fixtures-dir", type=Path, default=FIXTURES_DIR, help="the project's calibration sets (calib_*.jsonl.gz) to train on"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    meta = train(args.eval_dir, c=args.C, out_dir=args.out_dir, fixtures_dir=args.fixtures_dir)
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
