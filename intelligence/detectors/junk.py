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

import re
import threading
from collections.abc import Callable, Sequence

import numpy as np

WINDOW = 10
MAX_TOKENS = 1_500  # bounded work: a longer text is judged on its head and tail tokens
WORD_CACHE_SIZE = 50_000
FEATURE_NAMES = ("junk_window", "unclean_window", "frag_window", "frag_mean", "symbol_density")

# Spans that fragment legitimately, masked before measuring. Every quantifier is bounded and the
# token-level forms are tested per whitespace token (``_MASK_TOKEN``), so masking is linear in the
# text: the old ``\S+\.(?:com|...)`` and ``\w+_\w+`` restarted at every position of a long token.
_MASK = re.compile(r"\$\{[^}\n]{0,80}\}|\{\{[^}\n]{0,80}\}\}|\{[\w\s:.-]{1,40}\}|`[^`\n]{1,80}`")
_MASK_TOKEN = re.compile(
    r"(?:https?://|www\.)|\.(?:com|org|net|io|dev|py|js|ts|md|json|yaml|html|txt|cfg|toml|sh|rs|go|c|h)\b|\w_\w|\w\(\)|^[/~.]\S*/|::|->|=>|\\\w"
)
MAX_WORD = 64  # a longer whitespace token is a blob (URL, hash, base64, minified code): not junk words

PieceCounter = Callable[[Sequence[str]], list[int]]
_counter: PieceCounter | None = None
_counter_lock = threading.Lock()


def _load_counter() -> PieceCounter:
    """WordPiece counts from the embedding model's tokenizer; a length estimate if it is absent."""
    try:
        from .wordpiece import shared_wordpiece

        pieces = shared_wordpiece()  # a new word made of known parts ("max_tokens=64") is cheap
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
                fresh = {w: len(pieces.ids(w)) for w in missing}
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
    return features_with_context(text)[0]


def features_with_context(text: str) -> tuple[np.ndarray, float]:
    """``features`` plus the unclean-token share *outside* the strongest window: a suffix is a local
    anomaly at the end of otherwise clean prose, while code, logs and markup are unclean throughout
    (1.0 when the window is not near the end, and for a text of one window or less: a suffix follows
    a request, and a few glued tokens alone, such as a markup fragment, are nothing to append to)."""
    return _features(text)


def _features(text: str) -> tuple[np.ndarray, float]:
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
    words = ["x" if len(w) > MAX_WORD or _MASK_TOKEN.search(w) or not w.isascii() else w for w in words]
    if not words:
        return np.zeros(len(FEATURE_NAMES), dtype=np.float32), 0.0
    # Words repeat (a long prompt has about half as many distinct words): classify each once.
    distinct = {w: (0.0 if _CLEAN.match(w) else 1.0, _EDGE.sub("", w) or w) for w in set(words)}
    if len(words) <= WINDOW:
        return _short_features(words, distinct, masked), 1.0
    return _window_features(words, distinct, masked)


def _window_features(words: list[str], distinct: dict[str, tuple[float, str]], masked: str) -> tuple[np.ndarray, float]:
    unclean = np.fromiter((distinct[w][0] for w in words), dtype=np.float32, count=len(words))
    pieces = np.minimum(np.array(piece_counter()([distinct[w][1] for w in words]), dtype=np.float32), 6.0)
    w = min(WINDOW, len(words))
    kernel = np.ones(w, dtype=np.float32) / w
    u = np.convolve(unclean, kernel, mode="valid")
    f = np.convolve(pieces, kernel, mode="valid")
    combined = np.minimum(u / 0.5, 1.0) * 0.5 + np.minimum(np.maximum(f - 1.2, 0.0), 1.0) * 0.5
    best = int(combined.argmax())
    symbols = len(_SYMBOL.findall(masked))
    outside = len(words) - w
    rest = float((unclean.sum() - unclean[best : best + w].sum()) / outside) if outside > 0 else 0.0
    # A suffix ends the text: a junk window far from the end is a table, a code sample, a list of names.
    # The distance is counted in tokens, not as a share of the text: a code sample a paragraph before
    # the end of a long page is still not a suffix (an optimised suffix is followed by a sentence at most).
    if best + w < len(words) - SUFFIX_TAIL_TOKENS:
        rest = 1.0
    return np.array(
        [
            float(combined[best]),
            float(u[best]),
            min(float(f.max()) / 6.0, 1.0),
            min(float(pieces.mean()) / 6.0, 1.0),
            min(symbols / max(len(masked), 1) * 5.0, 1.0),
        ],
        dtype=np.float32,
    ), rest


def _short_features(words: list[str], distinct: dict[str, tuple[float, str]], masked: str) -> np.ndarray:
    """The same features for a text no longer than one window (most prompts): its only window is the
    whole text, so the sliding means reduce to plain means (no array work, which dominates here)."""
    n = len(words)
    u = sum(distinct[w][0] for w in words) / n
    counts = piece_counter()([distinct[w][1] for w in words])
    f = sum(min(c, 6) for c in counts) / n
    combined = min(u / 0.5, 1.0) * 0.5 + min(max(f - 1.2, 0.0), 1.0) * 0.5
    symbols = len(_SYMBOL.findall(masked))
    frag = min(f / 6.0, 1.0)
    return np.array([combined, u, frag, frag, min(symbols / max(len(masked), 1) * 5.0, 1.0)], dtype=np.float32)


# Stand-alone junk needs clean prose around the window (share of unclean tokens outside it).
MAX_REST_UNCLEAN = 0.06
SUFFIX_TAIL_TOKENS = 16
MIN_WINDOW_UNCLEAN = 0.4


def junk_score(feats: np.ndarray, rest_unclean: float = 0.0) -> float:
    """A stand-alone heuristic reading of the features: one window of unclean, fragmented tokens in
    otherwise clean text (code, logs and markup are unclean throughout and never count here; the
    classifier still sees the features)."""
    # Technical names fragment too ("GLSL/HLSL", "MinGW-w64"): a suffix is also mostly unclean.
    if rest_unclean > MAX_REST_UNCLEAN or float(feats[1]) < MIN_WINDOW_UNCLEAN:
        return 0.0
    window = float(feats[0])
    if window >= 0.85:
        return 0.45  # tag band alone: the classifier (which reads these features) adds the rest
    if window >= 0.6:
        return 0.4
    return 0.0
