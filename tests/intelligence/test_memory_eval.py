"""`llmproxy eval patterns` end to end on a tiny labelled dataset, against the test Postgres server
(the command creates and drops its own database there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extproc.cli import main

TRAIN = {
    "weather": [f"What is the weather forecast for {c} tomorrow?" for c in ("Paris", "London", "Tokyo", "Madrid", "Oslo")],
    "sql": [
        f"Write a SQL query that counts {a} per {b} in PostgreSQL"
        for a, b in (
            ("orders", "customer"),
            ("invoices", "month"),
            ("users", "country"),
            ("tickets", "agent"),
            ("sessions", "day"),
        )
    ],
    "translate": [f"Translate the word '{w}' from English into French" for w in ("apple", "house", "bicycle", "window", "river")],
}
TEST = {
    "weather": ["What is the weather forecast for Rome tomorrow?", "Weather forecast for Lisbon tomorrow"],
    "sql": [
        "Write a SQL query that counts payments per merchant in PostgreSQL",
        "SQL query counting orders per day in PostgreSQL",
    ],
    "translate": ["Translate the word 'friend' from English into French", "Translate 'cheese' from English into French"],
    "oos": ["Compose a haiku about autumn leaves", "Who won the football world cup in 1998?"],
}


def write_dataset(path: Path) -> Path:
    lines = [{"text": t, "label": label, "meta": {"split": "train"}} for label, ts in TRAIN.items() for t in ts]
    lines += [
        {"text": t, "label": label, "meta": {"split": "oos_test" if label == "oos" else "test"}}
        for label, ts in TEST.items()
        for t in ts
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def test_eval_patterns_json_contract(tmp_path: Path, pg_server_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = write_dataset(tmp_path / "tiny.jsonl")
    code = run_cli(
        [
            "eval",
            "patterns",
            "--dataset",
            str(dataset),
            "--json",
            "--database-url",
            pg_server_url,
            "--unsupervised-report",
            "--lookup-report",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert len(out.strip().splitlines()) == 1  # exactly one JSON object on stdout
    result = json.loads(out)
    assert {"accuracy", "macro_f1", "oos_recall", "n_train", "n_test", "n_patterns"} <= set(result)
    assert (result["n_train"], result["n_test"], result["n_patterns"]) == (15, 8, 3)
    assert result["accuracy"] == 1.0 and result["oos_recall"] == 1.0 and result["macro_f1"] == 1.0
    u = result["unsupervised"]
    assert (u["n_patterns"], u["n_labels"], u["purity"], u["adjusted_rand"]) == (3, 3, 1.0, 1.0)
    assert result["settings"]["join_threshold"] == 0.5 and result["embeddings_per_s"] > 0
    lookup = result["lookup"]
    assert lookup["exact_hash"]["n"] == 15 and lookup["cache_hit"]["n"] == 15 and lookup["embed_and_index"]["n"] == 8
    assert lookup["cache_hit"]["p50_ms"] < lookup["embed_and_index"]["p50_ms"]


def test_eval_patterns_text_report_threshold_and_errors(
    tmp_path: Path, pg_server_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = write_dataset(tmp_path / "tiny.jsonl")
    # a threshold above any similarity: every train prompt starts its own pattern
    code = run_cli(
        [
            "eval",
            "patterns",
            "--dataset",
            str(dataset),
            "--database-url",
            pg_server_url,
            "--threshold",
            "0.999",
            "--no-maintenance",
            "--k",
            "3",
            "--max-eval",
            "6",
            "--lag-rate",
            "10",
            "--lag-seconds",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "lag at 10 req/s for 1 s" in out and "(10 requests)" in out
    assert "patterns 15" in out and "top-1 accuracy (in-scope) 100.00%" in out and "out-of-scope recall       n/a" in out

    no_test = tmp_path / "train_only.jsonl"
    no_test.write_text(json.dumps({"text": "hi", "label": "greet", "meta": {"split": "train"}}) + "\n")
    assert run_cli(["eval", "patterns", "--dataset", str(no_test), "--database-url", pg_server_url]) == 2
    assert run_cli(["eval", "patterns", "--dataset", str(tmp_path / "missing.jsonl")]) == 2
