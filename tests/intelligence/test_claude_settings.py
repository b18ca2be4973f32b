"""ClaudeSettings and IntelligenceFlags from the environment; the price table; `llmproxy status` output."""

from __future__ import annotations

import argparse
import json

import pytest

from extproc.cli import status
from intelligence.claude import ClaudeSettings, IntelligenceFlags, call_cost, openrouter_model
from intelligence.claude.prices import FALLBACK, price_for
from intelligence.claude.settings import DEFAULT_MODEL
from intelligence.ops.stack import StackState


def test_no_key_is_local_only() -> None:
    s = ClaudeSettings.from_env({})
    assert s.mode == "local-only" and s.local_only and s.api_key is None and s.base_url is None
    assert s.describe()["summary"].startswith("local-only: no ANTHROPIC_API_KEY or OPENROUTER_API_KEY")


def test_anthropic_key_wins_and_defaults_apply() -> None:
    s = ClaudeSettings.from_env({"ANTHROPIC_API_KEY": "sk-ant", "OPENROUTER_API_KEY": "or"})
    assert (s.mode, s.api_key, s.base_url, s.model) == ("anthropic", "sk-ant", "https://api.anthropic.com", DEFAULT_MODEL)
    assert (s.timeout_s, s.max_retries, s.concurrency, s.daily_budget_usd, s.daily_token_budget) == (30.0, 3, 4, 5.0, 2_000_000)
    assert "sk-ant" not in json.dumps(s.describe())


def test_anthropic_base_url_and_limits_from_env() -> None:
    s = ClaudeSettings.from_env(
        {
            "ANTHROPIC_API_KEY": "k",
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9999",
            "CLAUDE_MODEL": "claude-haiku-4-5",
            "CLAUDE_TIMEOUT_S": "12.5",
            "CLAUDE_MAX_RETRIES": "0",
            "CLAUDE_CONCURRENCY": "8",
            "CLAUDE_DAILY_BUDGET_USD": "0.5",
            "CLAUDE_DAILY_TOKEN_BUDGET": "100_000",
        }
    )
    assert s.base_url == "http://127.0.0.1:9999" and s.model == "claude-haiku-4-5"
    assert (s.timeout_s, s.max_retries, s.concurrency, s.daily_budget_usd, s.daily_token_budget) == (12.5, 0, 8, 0.5, 100_000)


def test_openrouter_base_url_and_model_names() -> None:
    s = ClaudeSettings.from_env({"OPENROUTER_API_KEY": "or-key"})
    assert (s.mode, s.base_url, s.model) == ("openrouter", "https://openrouter.ai/api", "anthropic/claude-sonnet-5.5")
    given = ClaudeSettings.from_env({"OPENROUTER_API_KEY": "k", "CLAUDE_MODEL": "anthropic/claude-opus-5"})
    assert given.model == "anthropic/claude-opus-5"  # already in OpenRouter's form: left alone
    assert openrouter_model("claude-3-5-haiku-20241022") == "anthropic/claude-3.5-haiku"
    assert openrouter_model("claude-opus-4") == "anthropic/claude-opus-4"
    assert "OpenRouter" in s.summary()


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="CLAUDE_TIMEOUT_S"):
        ClaudeSettings.from_env({"ANTHROPIC_API_KEY": "k", "CLAUDE_TIMEOUT_S": "soon"})
    with pytest.raises(ValueError, match="needs an api_key"):
        ClaudeSettings(mode="openrouter")
    with pytest.raises(ValueError, match="mode"):
        ClaudeSettings(api_key="k", mode="bedrock")


def test_flags_survive_a_bad_claude_variable() -> None:
    flags = IntelligenceFlags.from_env({"CLAUDE_MAX_RETRIES": "many", "ENABLE_ANOMALY_DETECTION": "off"})
    assert flags.intelligence and not flags.anomaly_detection and flags.settings is None


def test_explicit_settings_derive_mode_from_the_key() -> None:
    assert ClaudeSettings(api_key="k").mode == "anthropic"
    assert ClaudeSettings().mode == "local-only"


def test_flags_default_on_and_switch_off() -> None:
    flags = IntelligenceFlags.from_env({})
    assert flags.as_dict() == {
        "intelligence": True,
        "real_time_enhancement": True,
        "anomaly_detection": True,
        "pattern_learning": True,
    }
    some = IntelligenceFlags.from_env(
        {"ENABLE_ANOMALY_DETECTION": "No", "ENABLE_PATTERN_LEARNING": "0", "ENABLE_REAL_TIME_ENHANCEMENT": "yes"}
    )
    assert (some.intelligence, some.real_time_enhancement, some.anomaly_detection, some.pattern_learning) == (
        True,
        True,
        False,
        False,
    )
    assert "switched off: anomaly_detection, pattern_learning" in some.describe()["summary"]


@pytest.mark.parametrize("value", ["0", "false", "no", "off", "OFF", " False "])
def test_intelligence_off_turns_everything_off(value: str) -> None:
    flags = IntelligenceFlags.from_env({"ENABLE_INTELLIGENCE": value, "ENABLE_ANOMALY_DETECTION": "1"})
    assert not any(flags.as_dict().values())
    assert flags.describe()["summary"].startswith("intelligence off")


def test_describe_has_mode_model_flags_and_sentence() -> None:
    info = IntelligenceFlags.from_env({"ANTHROPIC_API_KEY": "k", "CLAUDE_MODEL": "claude-opus-4-8"}).describe()
    assert info["mode"] == "anthropic" and info["model"] == "claude-opus-4-8"
    assert info["flags"]["anomaly_detection"] is True
    assert "claude-opus-4-8" in info["summary"] and "$5 and 2,000,000 tokens per UTC day" in info["summary"]
    local = IntelligenceFlags.from_env({}).describe()
    assert local["mode"] == "local-only" and local["model"] is None


def test_prices_cover_names_snapshots_and_unknown_models() -> None:
    assert price_for("claude-sonnet-4-5-20250929") == price_for("anthropic/claude-sonnet-4.5")
    assert price_for("claude-opus-4-5").input == 5.0 and price_for("claude-opus-4-1").input == 15.0
    assert price_for("claude-opus-4-0") == price_for("claude-opus-4")
    assert price_for("some-new-model") == FALLBACK and FALLBACK.output >= max(
        price_for(m).output for m in ("claude-opus-4-1", "claude-fable-5-1")
    )
    assert call_cost(
        "claude-haiku-4-5",
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_read_tokens=1_000_000,
        cache_write_tokens=1_000_000,
    ) == pytest.approx(1 + 5 + 0.1 + 1.25)


def test_status_json_and_lines_carry_the_intelligence(tmp_path, monkeypatch, capsys) -> None:
    for name in ("ANTHROPIC_API_KEY", "OPENROUTER_API_KEY", "ENABLE_INTELLIGENCE", "ENABLE_PATTERN_LEARNING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENABLE_PATTERN_LEARNING", "off")
    # A stack whose parts are all down: status still reports, and says how the intelligence runs.
    StackState(
        data_dir=str(tmp_path), database_url="postgresql://nobody@127.0.0.1:1/x", ports={"gateway": 1, "admin": 1, "sidecar": 1}
    ).save()
    monkeypatch.setattr("extproc.cli.status.envoy_ready", lambda port: False)
    monkeypatch.setattr("extproc.cli.status.grpc_healthy", lambda port: False)
    assert status.run(argparse.Namespace(data_dir=tmp_path, json=True)) == 1
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {"ok", "parts", "ports", "intelligence", "intelligence_detail"}
    assert "local-only" in doc["intelligence"]
    assert doc["intelligence_detail"]["mode"] == "local-only"
    assert doc["intelligence_detail"]["flags"]["pattern_learning"] is False

    assert status.run(argparse.Namespace(data_dir=tmp_path, json=False)) == 1
    out = capsys.readouterr().out
    assert "  intelligence local-only: no ANTHROPIC_API_KEY" in out
    assert "features on: real_time_enhancement, anomaly_detection; off: pattern_learning" in out
