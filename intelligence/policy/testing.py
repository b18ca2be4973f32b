"""Factories for tests of the policy engine and of code that consumes its decisions."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import yaml

from .facts import Detections, RequestFacts, ResponseFacts
from .parse import parse_policy
from .snapshot import PolicySnapshot

# A Monday, noon UTC: time windows in tests are explicit about it.
FIXED_NOW = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)


def detections(
    pii: Iterable[str] | Mapping[str, int] = (),
    secrets: Iterable[str] | Mapping[str, int] = (),
    injection: float | None = None,
    layer: str | None = None,
    flags: Iterable[str] = (),
) -> Detections:
    def counts(kinds: Iterable[str] | Mapping[str, int]) -> dict[str, int]:
        if isinstance(kinds, Mapping):
            return dict(kinds)
        out: dict[str, int] = {}
        for k in kinds:
            out[k] = out.get(k, 0) + 1
        return out

    return Detections(
        pii=counts(pii),
        secrets=counts(secrets),
        injection_score=injection,
        injection_layer=layer if layer is not None else ("heuristic" if injection else None),
        flags=frozenset(flags),
    )


def request_facts(**overrides: Any) -> RequestFacts:
    """A chat request to OpenAI from gateway key ``gk_test`` (name ``team-a``) at :data:`FIXED_NOW`."""
    base: dict[str, Any] = {
        "api": "chat",
        "path": "/v1/chat/completions",
        "method": "POST",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "key_id": "gk_test",
        "key_name": "team-a",
        "client": "gk_test",
        "client_addr": "10.0.0.7",
        "request_bytes": 512,
        "headers": {"content-type": "application/json"},
        "now": FIXED_NOW,
    }
    base.update(overrides)
    return RequestFacts(**base)


def response_facts(request: RequestFacts | None = None, **overrides: Any) -> ResponseFacts:
    base: dict[str, Any] = {"request": request or request_facts(), "status": 200, "response_bytes": 256}
    base.update(overrides)
    return ResponseFacts(**base)


def policy_yaml(
    *rules: Mapping[str, Any],
    name: str = "test",
    aliases: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> str:
    doc: dict[str, Any] = {"version": 1, "name": name}
    if defaults:
        doc["defaults"] = dict(defaults)
    if aliases:
        doc["aliases"] = dict(aliases)
    doc["rules"] = [dict(r) for r in rules]
    return yaml.safe_dump(doc, sort_keys=False)


def snapshot(*rules: Mapping[str, Any], name: str = "test", aliases: Mapping[str, str] | None = None) -> PolicySnapshot:
    """A snapshot of one policy made of ``rules`` (dicts as they would be written in YAML)."""
    return PolicySnapshot.build([parse_policy(policy_yaml(*rules, name=name, aliases=aliases), name=name)])


def snapshot_from_yaml(*texts: str) -> PolicySnapshot:
    """A snapshot of YAML texts (dedented), in source order; each is named by its `name:` or policyN."""
    return PolicySnapshot.build(
        [parse_policy(textwrap.dedent(t), origin=f"<test {i}>", default_name=f"policy{i}") for i, t in enumerate(texts)]
    )
