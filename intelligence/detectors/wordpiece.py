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
CACHE_WORDS = 100_000  # bounded: cleared when full (words of ordinary text repeat)


class CachedWordPiece:
    """``ids(text)``: what ``tokenizer.encode(text, add_special_tokens=False).ids`` returns; thread-safe."""

    def __init__(self, tokenizer: Any, cache_words: int = CACHE_WORDS) -> None:
        self._tok = tokenizer
        self._cache: dict[str, list[int]] = {}
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
        if fresh:
            with self._lock:
                if len(cache) + len(fresh) > self._limit:
                    cache.clear()
                cache.update(fresh)
        out: list[int] = []
        for w in words:
            ids = fresh.get(w) or cache.get(w)
            if ids is None:  # another thread cleared the cache meanwhile
                ids = self._encode(w)
            out.extend(ids)
        return out

    def _encode(self, word: str) -> list[int]:
        return list(self._tok.encode(word, add_special_tokens=False).ids)

    def _encode_words(self, words: list[str]) -> dict[str, list[int]]:
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
        return out
