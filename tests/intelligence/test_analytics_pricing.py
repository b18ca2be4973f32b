"""Per-model pricing: cached and reasoning tokens per provider convention, dated prices, name matching."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from intelligence.pricing import Billable, billable, canonical_model, costs, load_prices, parse_table


def test_openai_cached_and_reasoning_tokens_are_subsets() -> None:
    assert billable("chat", 1000, 500, 200, 300) == Billable(uncached_input=800, cached_input=200, output=200, reasoning=300)
    # a provider that reports more cached than input tokens cannot make input negative
    assert billable("responses", 100, 10, 400, 50) == Billable(uncached_input=0, cached_input=100, output=0, reasoning=10)


def test_anthropic_cache_reads_come_on_top_of_input() -> None:
    assert billable("messages", 2000, 100, 1000, None) == Billable(uncached_input=2000, cached_input=1000, output=100)


def test_missing_or_negative_counts_price_as_nothing() -> None:
    assert billable(None, None, None, None, None) == Billable()
    assert billable("chat", -5, -1, -3, -2) == Billable()


def test_costs_use_each_rate() -> None:
    table = load_prices()
    # gpt-4o: 800 * 2.50 + 200 * 1.25 + 500 * 10 = 7250 per million
    assert table.cost(
        "gpt-4o", "chat", input_tokens=1000, output_tokens=500, cached_tokens=200, on=date(2025, 9, 1)
    ) == pytest.approx(0.00725)
    # claude-sonnet-4-5 via Messages: 2000 * 3 + 1000 * 0.30 + 100 * 15 = 7800 per million
    assert table.cost(
        "claude-sonnet-4-5", "messages", input_tokens=2000, output_tokens=100, cached_tokens=1000, on=date(2025, 11, 1)
    ) == pytest.approx(0.0078)
    # o4-mini: reasoning tokens are output tokens, billed at the output rate
    with_reasoning = table.cost("o4-mini", "chat", input_tokens=0, output_tokens=1000, reasoning_tokens=800)
    assert with_reasoning == pytest.approx(1000 * 4.40 / 1e6)


def test_reasoning_price_can_differ_from_output() -> None:
    table = parse_table({"as_of": "2025-01-01", "models": [{"model": "thinker", "input": 1, "output": 2, "reasoning": 10}]})
    assert table.cost("thinker", "chat", output_tokens=100, reasoning_tokens=60) == pytest.approx((40 * 2 + 60 * 10) / 1e6)


def test_dated_prices_apply_on_their_days() -> None:
    table = load_prices()
    assert table.lookup("o3", date(2025, 5, 1)).input == 10.0
    assert table.lookup("o3", date(2025, 6, 10)).input == 2.0
    assert table.lookup("o3", datetime(2025, 7, 1, tzinfo=UTC)).output == 8.0
    # traffic from before a model's first dated price gets its earliest price rather than nothing
    assert table.lookup("o3", date(2024, 1, 1)).input == 10.0


def test_model_names_as_clients_and_routers_spell_them() -> None:
    table = load_prices()
    assert canonical_model("openai/gpt-4o-2024-08-06") == "gpt-4o"
    assert canonical_model("claude-3-5-haiku-20241022") == "claude-3-5-haiku"
    assert canonical_model("claude-3-7-sonnet-latest") == "claude-3-7-sonnet"
    assert table.lookup("anthropic/claude-3.5-sonnet").model == "claude-3-5-sonnet"
    assert table.lookup("gpt-4o-mini").model == "gpt-4o-mini"  # never mistaken for gpt-4o
    assert table.lookup("meta-llama/llama-3.3-70b-instruct") is None
    assert table.lookup(None) is None


def test_price_table_file_is_dated_sourced_and_sane() -> None:
    table = load_prices()
    assert table.as_of >= date(2025, 1, 1)
    assert {"openai", "anthropic"} <= set(table.sources)
    for entry in table.models():
        assert entry.input >= 0 and entry.output >= 0 and entry.cached_input <= entry.input
        assert entry.provider in ("openai", "anthropic")


def test_bulk_costs_match_single_costs() -> None:
    table = load_prices()
    rows = [
        ("gpt-4o", "chat", date(2025, 9, 1), 1000, 500, 200, None),
        ("unknown-x", "chat", None, 5, 5, None, None),
        ("o3", "responses", date(2025, 5, 1), 100, 100, 0, 50),
    ]
    got = costs(table, rows)
    assert got[0] == pytest.approx(0.00725) and got[1] is None
    assert got[2] == pytest.approx(
        table.cost(
            "o3", "responses", input_tokens=100, output_tokens=100, cached_tokens=0, reasoning_tokens=50, on=date(2025, 5, 1)
        )
    )
