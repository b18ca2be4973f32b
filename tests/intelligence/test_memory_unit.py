"""Pattern memory pieces that need no database: canonical text, labels, signals, feedback input,
clustering helpers and the evaluation metrics."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from extproc.cli.eval_patterns import (
    EvalResult,
    adjusted_rand,
    format_report,
    in_scope_accuracy,
    load_rows,
    macro_f1,
    oos_recall,
    purity,
    split_kind,
)
from intelligence.memory.assign import keep_examples, unit
from intelligence.memory.canonical import SYSTEM_CHARS, USER_CHARS, canonical_prompt
from intelligence.memory.feedback import FeedbackInput
from intelligence.memory.labels import heuristic_label, keywords
from intelligence.memory.maintenance import near_duplicate_pairs, spread_of, two_means
from intelligence.memory.repository import PendingExchange, SignalCount, SuccessRate, as_vector, day_bucket, hour_bucket
from intelligence.memory.signals import exchange_signals

# ------------------------------------------------------------------------------------------ canonical


def test_canonical_template_puts_user_first_then_system_then_sorted_tools() -> None:
    c = canonical_prompt("  What is\n the  weather? ", "You are   a helpful bot.", ["search", "get_weather", "search", " "])
    assert c.text == "What is the weather?\nsystem: You are a helpful bot.\ntools: get_weather, search"
    assert c.hash == hashlib.sha256(c.text.encode()).hexdigest()
    assert not c.empty


def test_canonical_truncates_system_more_than_user_and_is_stable() -> None:
    c = canonical_prompt("u" * (USER_CHARS + 500), "s" * 1000, ())
    user, system = c.text.split("\n")
    assert len(user) == USER_CHARS
    assert system == "system: " + "s" * SYSTEM_CHARS
    assert canonical_prompt("u" * (USER_CHARS + 500), "s" * 1000).hash == c.hash
    assert canonical_prompt("hello").hash != canonical_prompt("hello", "sys").hash


def test_canonical_of_nothing_is_empty() -> None:
    c = canonical_prompt(None, "   ", [])
    assert c.empty and c.text == ""


# ------------------------------------------------------------------------------------------ labels


def test_keywords_drop_stopwords_short_tokens_and_numbers() -> None:
    assert keywords("Please tell me the weather in Paris for 2024, the weather!") == ["weather", "paris"]


def test_heuristic_label_ranks_by_document_frequency() -> None:
    texts = ["weather in paris", "weather forecast berlin", "rain forecast weather weather weather", None, ""]
    assert heuristic_label(texts) == "weather forecast paris"
    assert heuristic_label([]) == ""


# ------------------------------------------------------------------------------------------ signals


def _pending(**kw: object) -> PendingExchange:
    base = dict(
        request_id="r1",
        started_at=datetime(2025, 1, 1, tzinfo=UTC),
        client_key_fp=None,
        model=None,
        status=200,
        error=None,
        finish_reason="stop",
        tool_args_invalid=0,
        prompt_user="x",
        prompt_system=None,
        tool_names=(),
    )
    base.update(kw)
    return PendingExchange(**base)  # type: ignore[arg-type]


def test_a_clean_exchange_has_no_signals() -> None:
    assert exchange_signals(_pending()) == []


@pytest.mark.parametrize(
    "kw, kind, value",
    [
        ({"status": 500}, "status", "500"),
        ({"status": 429, "error": "rate limited"}, "status", "429"),
        ({"status": None, "error": "upstream reset"}, "status", None),
        ({"finish_reason": "length"}, "finish", "length"),
        ({"finish_reason": "MAX_TOKENS"}, "finish", "MAX_TOKENS"),
        ({"finish_reason": "content_filter"}, "finish", "content_filter"),
        ({"finish_reason": "refusal"}, "finish", "refusal"),
        ({"tool_args_invalid": 2}, "tool_args", "2"),
    ],
)
def test_failure_signals(kw: dict, kind: str, value: str | None) -> None:
    signals = exchange_signals(_pending(**kw))
    assert [(s.kind, s.ok, s.value) for s in signals] == [(kind, False, value)]


def test_several_failures_are_separate_signals() -> None:
    kinds = [s.kind for s in exchange_signals(_pending(status=500, finish_reason="length", tool_args_invalid=1))]
    assert kinds == ["status", "finish", "tool_args"]


def test_success_rate_property() -> None:
    assert SuccessRate(1, total=0, failed=0).rate is None
    assert SuccessRate(1, total=4, failed=1, by_kind={"status": SignalCount(failed=1)}).rate == 0.75


# ------------------------------------------------------------------------------------------ feedback


def test_feedback_parse_accepts_thumbs_and_scores() -> None:
    f = FeedbackInput.parse({"request_id": " r1 ", "thumbs": "Down", "comment": "wrong answer"})
    assert (f.request_id, f.thumbs, f.score, f.ok, f.comment) == ("r1", "down", None, False, "wrong answer")
    assert FeedbackInput.parse({"request_id": "r", "score": 0.9}).ok is True
    assert FeedbackInput.parse({"request_id": "r", "score": 0}).ok is False
    assert FeedbackInput.build("r", thumbs=True).thumbs == "up"
    # thumbs decide when both are given
    assert FeedbackInput.build("r", thumbs="up", score=0.1).ok is True
    assert len(FeedbackInput.build("r", score=1, comment="x" * 5000).comment or "") == 2000


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"score": 1},
        {"request_id": "", "score": 1},
        {"request_id": "r"},
        {"request_id": "r", "score": 2},
        {"request_id": "r", "score": float("nan")},
        {"request_id": "r", "score": True},
        {"request_id": "r", "thumbs": "meh"},
        {"request_id": "r", "score": 1, "comment": 5},
        {"request_id": "r" * 300, "score": 1},
    ],
)
def test_feedback_parse_rejects_bad_input(payload: object) -> None:
    with pytest.raises(ValueError):
        FeedbackInput.parse(payload)


# ------------------------------------------------------------------------------------------ helpers


def test_buckets_and_vectors() -> None:
    t = datetime(2025, 3, 1, 12, 34, 56, tzinfo=UTC)
    assert hour_bucket(t) == datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert day_bucket(t.replace(tzinfo=None)) == datetime(2025, 3, 1, tzinfo=UTC)
    assert as_vector("[1,2.5,-3]").tolist() == [1.0, 2.5, -3.0]
    assert as_vector([1, 2]).dtype == np.float32
    assert unit(np.zeros(3)).tolist() == [0, 0, 0]


def test_keep_examples_keeps_the_most_central() -> None:
    ex = [{"request_id": str(i), "text": "t", "similarity": s} for i, s in enumerate([0.9, 0.5, 0.7])]
    kept = keep_examples(ex, {"request_id": "new", "text": "t", "similarity": 0.8}, 3)
    assert [e["request_id"] for e in kept] == ["0", "new", "2"]


def test_two_means_separates_two_clusters() -> None:
    rng = np.random.default_rng(1)
    a, b = np.eye(8)[0], np.eye(8)[1]
    vecs = np.stack(
        [unit(a + 0.05 * rng.standard_normal(8)) for _ in range(6)] + [unit(b + 0.05 * rng.standard_normal(8)) for _ in range(4)]
    )
    labels = two_means(vecs)
    assert len(set(labels[:6])) == 1 and len(set(labels[6:])) == 1 and labels[0] != labels[6]
    assert two_means(np.stack([a, a, a])).tolist() == [0, 0, 0] or len(set(two_means(np.stack([a, a, a])))) == 1
    _, spread, radius, _ = spread_of(vecs)
    assert 0 < spread < radius


def test_near_duplicate_pairs_only_above_threshold_and_with_a_dirty_side() -> None:
    c = np.array([[1, 0, 0], [0.99, 0.1, 0], [0, 1, 0]], dtype=np.float32)
    assert [(i, j) for _, i, j in near_duplicate_pairs([10, 11, 12], c, {10, 11, 12}, 0.9)] == [(0, 1)]
    assert near_duplicate_pairs([10, 11, 12], c, {12}, 0.9) == []
    assert near_duplicate_pairs([10], c[:1], {10}, 0.9) == []


# ------------------------------------------------------------------------------------------ eval metrics


def test_metrics_on_a_hand_computed_case() -> None:
    truth = ["a", "a", "b", "oos", "oos"]
    pred = ["a", "b", "b", "oos", "a"]
    assert in_scope_accuracy(truth, pred) == pytest.approx(2 / 3)
    assert oos_recall(truth, pred) == 0.5
    # F1: a = 2*1/(2+1+1) = .5, b = 2/(2+1+0) = .667, oos = 2/(2+0+1) = .667
    assert macro_f1(truth, pred) == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert in_scope_accuracy(["oos"], ["oos"]) is None and oos_recall(["a"], ["a"]) is None
    assert macro_f1([], []) is None


def test_purity_and_adjusted_rand() -> None:
    truth = ["a", "a", "a", "b", "b", "b"]
    assert adjusted_rand(truth, [1, 1, 1, 2, 2, 2]) == 1.0
    assert purity(truth, [1, 1, 2, 2, 3, 3]) == pytest.approx(5 / 6)
    # known value: sklearn.metrics.adjusted_rand_score([0,0,0,1,1,1],[0,0,1,1,2,2]) = 0.24242...
    assert adjusted_rand(truth, [0, 0, 1, 1, 2, 2]) == pytest.approx(0.242424, abs=1e-5)
    assert adjusted_rand(["a"], [1]) == 1.0


def test_dataset_loading_and_split_names(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"text": "hi", "label": "greet", "meta": {"split": "oos_test"}}) + "\n\n")
    rows = load_rows(f)
    assert [(r.text, r.label, r.split) for r in rows] == [("hi", "greet", "test")]
    assert split_kind("train") == "train" and split_kind("oos_val") == "val"
    f.write_text(json.dumps({"label": "x"}) + "\n")
    with pytest.raises(ValueError):
        load_rows(f)


def test_text_report_lists_every_figure() -> None:
    r = EvalResult(
        0.91,
        0.9,
        None,
        100,
        10,
        12,
        extra={
            "embeddings_per_s": 200.0,
            "seed_seconds": 3.0,
            "unsupervised": {
                "n_patterns": 12,
                "n_labels": 10,
                "purity": 0.8,
                "adjusted_rand": 0.6,
                "n_patterns_before_maintenance": 13,
            },
            "lag": {"rate": 50, "seconds": 10, "p50_ms": 400, "p95_ms": 900, "max_ms": 1200, "n": 500},
        },
    )
    text = format_report(r)
    for needle in ("91.00%", "n/a", "12 patterns for 10 labels", "adjusted Rand 0.600", "p95 900 ms", "200 embeddings/s"):
        assert needle in text
