"""Building a Guard for tests without a database: a fixed policy, detectors that find nothing unless
given, and one chat request checked the way the guard stage checks it.

    guard = guard_for(POLICY_YAML, pii=shared_pii_detector())
    out, doc = check_chat(guard, "mail jane.doe@example.com")   # doc: the request as the guard left it
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from intelligence.policy.testing import snapshot_from_yaml

from ..screening import Guard, GuardOutcome


class NoFindings:
    """A secret, PII or injection detector that finds nothing (an injection verdict that read everything)."""

    def find(self, text: str) -> list[Any]:
        return []

    def scan(self, segments: Any, budget_ms: float | None = None) -> Any:
        return SimpleNamespace(score=0.0, layers=(), flags=(), incomplete=False)


def fixed_policy(policy_yaml: str) -> Any:
    """What the guard reads of a live policy: its snapshot, and a throttler that never throttles."""
    return SimpleNamespace(
        snapshot=snapshot_from_yaml(policy_yaml),
        throttler=SimpleNamespace(check=lambda decision, facts: SimpleNamespace(block=None)),
    )


def guard_for(policy_yaml: str, *, secrets: Any = None, pii: Any = None, injection: Any = None, **options: Any) -> Guard:
    """A Guard over ``policy_yaml``; a detector not given finds nothing. ``options`` go to Guard as they are."""
    return Guard(
        fixed_policy(policy_yaml),
        secrets=secrets if secrets is not None else NoFindings(),
        pii=pii if pii is not None else NoFindings(),
        injection=injection if injection is not None else NoFindings(),
        **options,
    )


def check_chat(
    guard: Guard, content: str, *, key: Any = None, headers: dict[str, str] | None = None
) -> tuple[GuardOutcome, dict[str, Any]]:
    """One OpenAI chat request with a single user turn through ``guard.check_request``; returns the
    outcome and the request document, which the guard rewrites in place when it redacts."""
    doc: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": content}]}
    out = guard.check_request(
        request_id="r1",
        api="chat",
        doc=doc,
        provider="openai",
        path="/v1/chat/completions",
        method="POST",
        key=key,
        client=None,
        client_addr=None,
        size=len(content),
        headers=headers or {},
        now=datetime.now(UTC),
    )
    return out, doc


__all__ = ["NoFindings", "check_chat", "fixed_policy", "guard_for"]
