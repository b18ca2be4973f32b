"""The two places where a PII scan's cost grew with the square of the text, replaced by linear ones.

**spaCy's tokenizer on long chunks.** spaCy strips prefixes and suffixes from each whitespace-separated chunk one at a time, and each
suffix search scans the whole remaining chunk: a chunk ending in k punctuation characters costs
O(k x length). Ten thousand characters of ``(((...+44 20 7946 0958)))...`` took 7.8 s in
``find_suffix`` alone (measured 2026-12-07), on the event loop of the sidecar.

Chunks up to ``MAX_CHUNK`` characters, which is every word, number, e-mail address and most URLs, go
through spaCy's own tokenizer unchanged, so ordinary texts get exactly the tokens they got before.
A longer chunk is split by one linear regular expression into word runs and punctuation runs. The
tokens only serve Presidio's context words (a lemma near a match raises its score) and the offsets of
matches; the recognisers read the text itself, so a long chunk split differently finds the same spans.

**Presidio's context enhancer** looks up the token of every match by walking the tokens from the
start, then walks away from it until it has met six context-word candidates: O(matches x tokens).
10 KB of ``.1.1.1...`` (1,250 IP-address matches) took 12 s there. The same token is found by
bisection over the token offsets, and the same words from one sorted list of keyword positions per text.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from typing import Any

MAX_CHUNK = 64  # characters; the worst such chunks (closing brackets) cost spaCy ~7 ms per 10 KB

_LONG_CHUNK = re.compile(r"\S{" + str(MAX_CHUNK + 1) + ",}")
_PIECES = re.compile(r"\w+|[^\w\s]+")


class BoundedTokenizer:
    """Calls spaCy's tokenizer on everything but the chunks longer than ``MAX_CHUNK``."""

    def __init__(self, nlp: Any) -> None:
        self.inner = nlp.tokenizer
        self.vocab = nlp.vocab

    def __call__(self, text: str) -> Any:
        long_chunks = list(_LONG_CHUNK.finditer(text))
        if not long_chunks:
            return self.inner(text)
        from spacy.tokens import Doc

        words: list[str] = []
        spaces: list[bool] = []
        pos = 0
        for chunk in long_chunks:
            self._ordinary(text[pos : chunk.start()], words, spaces)
            for piece in _PIECES.finditer(chunk.group()):
                words.append(piece.group())
                spaces.append(False)
            pos = chunk.end()
            if text.startswith(" ", pos):  # spaCy keeps one following space on the token itself
                spaces[-1] = True
                pos += 1
        self._ordinary(text[pos:], words, spaces)
        return Doc(self.vocab, words=words, spaces=spaces)

    def _ordinary(self, part: str, words: list[str], spaces: list[bool]) -> None:
        if not part:
            return
        for token in self.inner(part):
            words.append(token.text)
            spaces.append(bool(token.whitespace_))


def bound_tokenizer(nlp: Any) -> Any:
    """``nlp`` with its tokenizer wrapped (idempotent); returns ``nlp``."""
    if not isinstance(nlp.tokenizer, BoundedTokenizer):
        nlp.tokenizer = BoundedTokenizer(nlp)
    return nlp


def linear_context_enhancer() -> Any:
    """Presidio's ``LemmaContextAwareEnhancer`` (its defaults) with the match's token found by bisection."""
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    class LinearContextEnhancer(LemmaContextAwareEnhancer):
        @staticmethod
        def _find_index_of_match_token(word: str, start: int, tokens: Any, tokens_indices: list[int]) -> int:
            # Upstream: the first token that starts at ``start`` or ends after it. Tokens are ordered
            # and do not overlap, so that is the last token starting at or before ``start`` if it
            # reaches past it, else the next one.
            i = max(bisect_right(tokens_indices, start) - 1, 0)
            if i < len(tokens_indices) and tokens_indices[i] + len(tokens[i]) <= start and tokens_indices[i] != start:
                i += 1
            if i >= len(tokens_indices):
                raise ValueError(f"Did not find word {word!r} in the list of tokens although it is expected to be found")
            return i

        # Upstream: from ``index`` outwards, the first n_words + 1 lemmas (lower-cased) that are keywords.
        def _add_n_words_backward(self, index: int, n_words: int, lemmas: list[str], keywords: list[str]) -> list[str]:
            positions, lowered = self._keyword_positions(lemmas, keywords)
            end = bisect_right(positions, index)
            return [lowered[p] for p in positions[max(end - n_words - 1, 0) : end][::-1]]

        def _add_n_words_forward(self, index: int, n_words: int, lemmas: list[str], keywords: list[str]) -> list[str]:
            positions, lowered = self._keyword_positions(lemmas, keywords)
            begin = bisect_left(positions, index)
            return [lowered[p] for p in positions[begin : begin + n_words + 1]]

        def _keyword_positions(self, lemmas: list[str], keywords: list[str]) -> tuple[list[int], list[str]]:
            memo = getattr(self, "_memo", None)  # one text at a time (the detector holds a lock)
            if memo is None or memo[0] is not lemmas or memo[1] is not keywords:
                wanted = set(keywords)
                lowered = [lemma.lower() for lemma in lemmas]
                positions = [i for i, lemma in enumerate(lowered) if lemma in wanted]
                memo = self._memo = (lemmas, keywords, positions, lowered)
            return memo[2], memo[3]

    return LinearContextEnhancer()
