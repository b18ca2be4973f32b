from __future__ import annotations

import pytest

from extproc.routing import ModelRouter, parse_route_specs, split_provider_prefix


@pytest.mark.parametrize(
    "model,provider",
    [
        ("gpt-4o", "openai"),
        ("gpt-4.1-mini", "openai"),
        ("o1-preview", "openai"),
        ("o3-mini", "openai"),
        ("o4-mini", "openai"),
        ("text-embedding-3-small", "openai"),
        ("claude-sonnet-4-5", "anthropic"),
        ("claude-3-haiku-20240307", "anthropic"),
        ("meta-llama/llama-3-8b", "openrouter"),
        ("anthropic/claude-3.5-sonnet", "openrouter"),
        ("llama3", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_default_rules(model, provider) -> None:
    assert ModelRouter().provider_for(model) == provider


def test_operator_rules_come_first() -> None:
    rules = parse_route_specs(["llama*=openai", "gpt-4o-special=openrouter"])
    router = ModelRouter(rules + ModelRouter().rules)
    assert router.provider_for("llama3") == "openai"
    assert router.provider_for("gpt-4o-special") == "openrouter"
    assert router.provider_for("gpt-4o") == "openai"


@pytest.mark.parametrize("spec", ["llama", "=openai", "x=azure"])
def test_bad_rules_are_rejected(spec) -> None:
    with pytest.raises(ValueError):
        parse_route_specs([spec])


@pytest.mark.parametrize(
    "path,expected",
    [
        ("/openai/v1/chat/completions", ("openai", "/v1/chat/completions")),
        ("/anthropic/v1/messages?beta=true", ("anthropic", "/v1/messages")),
        ("/openrouter/v1/chat/completions", ("openrouter", "/v1/chat/completions")),
        ("/openrouter/api/v1/chat/completions", ("openrouter", "/v1/chat/completions")),
        ("/v1/chat/completions", (None, "/v1/chat/completions")),
        ("/?target_url=x", (None, "/")),
    ],
)
def test_split_provider_prefix(path, expected) -> None:
    assert split_provider_prefix(path) == expected
