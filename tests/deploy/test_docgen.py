"""docs/configuration.md is generated from the code (extproc/cli/docgen.py) and must equal a fresh generation:
a new environment variable, flag or policy key fails this test until the reference is regenerated."""

from __future__ import annotations

import ast

import pytest

from extproc.cli import docgen

FIX = "docs/configuration.md is stale: run `python -m extproc.cli.docgen` and commit the result"


@pytest.fixture(scope="module")
def fresh() -> str:
    return docgen.generate()


def test_committed_reference_equals_a_fresh_generation(fresh: str) -> None:
    assert docgen.OUTPUT.is_file(), FIX
    assert docgen.OUTPUT.read_text() == fresh, FIX


def test_everything_in_the_reference_is_described() -> None:
    missing = docgen.undocumented()
    assert missing == [], (
        f"describe these in extproc/cli/docgen.py (ENV_DESCRIPTIONS / POLICY_KEY_DESCRIPTIONS) or docs/policy.md: {missing}"
    )
    stale = set(docgen.ENV_DESCRIPTIONS) - set(docgen.environment_variables())
    assert stale == set(), f"no code reads these any more; remove them from ENV_DESCRIPTIONS: {sorted(stale)}"


def test_reference_covers_the_command_line_envoy_and_policy(fresh: str) -> None:
    from extproc.cli import build_parser

    for name in docgen._subcommands(build_parser()):
        assert f"# `llmproxy {name[0]}`\n" in fresh, name[0]
    for text in (
        "`--older-than` `AGE` **required**",
        "#### `python -m extproc`",
        "#### `python -m intelligence.jobs`",
        "| `LLMPROXY_METRICS_PORT` |",
        "| `DATABASE_URL` |",
        "| `llmproxy_sidecar` |",
        "| `gateway` |",
        "| `quarantine_key` |",
        "| `injection_score` |",
    ):
        assert text in fresh, text


def test_generation_does_not_depend_on_the_callers_environment(monkeypatch, fresh: str) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone:secret@db.example/x")
    monkeypatch.setenv("LLMPROXY_CONTROL_PORT", "6000")
    monkeypatch.setenv("LLMPROXY_EMBEDDING_MODEL", "/models/mine")
    again = docgen.generate()
    assert again == fresh
    assert "secret@db.example" not in again


def test_environment_discovery() -> None:
    source = """
import os
A = os.environ.get("FROM_GET")
B = os.environ["FROM_SUBSCRIPT"]
C = os.getenv("FROM_GETENV", "x")
def f(env): return env.get("FROM_ENV_ARG")
NAME_ENV = "FROM_CONSTANT"
KEYS_ENV = {"a": "FROM_DICT_CONSTANT"}
D = "LLMPROXY_ANY_LITERAL"
E = "FROM_IN" in os.environ
F = {"NOT_AN_ENV": 1}.get("NOT_AN_ENV_EITHER")
G = "ENABLE_"  # a prefix, not a name
"""
    found = docgen._env_names_in(ast.parse(source))
    assert found == {
        "FROM_GET",
        "FROM_SUBSCRIPT",
        "FROM_GETENV",
        "FROM_ENV_ARG",
        "FROM_CONSTANT",
        "FROM_DICT_CONSTANT",
        "LLMPROXY_ANY_LITERAL",
        "FROM_IN",
    }
