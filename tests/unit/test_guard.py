"""The guard's automated response: alerts are audited, quarantines scheduled for the gateway key."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from extproc.screening import Guard
from intelligence.policy.testing import snapshot_from_yaml

POLICY = """
version: 1
name: t
rules:
  - id: trip
    match: {headers: [x-trip]}
    actions:
      block: true
      alert: {severity: critical, message: tripped}
      quarantine_key: {reason: tripped}
"""


class Audit:
    def __init__(self) -> None:
        self.entries = []

    def submit(self, kind, subject, payload, actor) -> bool:
        self.entries.append((kind, subject, payload))
        return True


class Nothing:
    def find(self, text):
        return []

    def scan(self, segs, budget_ms=None):
        return SimpleNamespace(score=0.0, layers=(), flags=())


def guard(audit, calls):
    policy = SimpleNamespace(
        snapshot=snapshot_from_yaml(POLICY), throttler=SimpleNamespace(check=lambda d, f: SimpleNamespace(block=None))
    )
    return Guard(
        policy, secrets=Nothing(), pii=Nothing(), injection=Nothing(), audit=audit, quarantine=lambda *a: calls.append(a)
    )


def check(g, headers, key):
    return g.check_request(
        request_id="r1",
        api="chat",
        doc={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        provider="openai",
        path="/v1/chat/completions",
        method="POST",
        key=key,
        client=None,
        client_addr=None,
        size=10,
        headers=headers,
        now=datetime.now(UTC),
    )


def test_quarantine_and_alert_are_carried_out() -> None:
    audit, calls = Audit(), []
    out = check(guard(audit, calls), {"x-trip": "1"}, SimpleNamespace(id="gk_1", name="n"))
    assert out.immediate is not None and out.immediate.status == 403
    assert len(calls) == 1 and calls[0][:2] == ("gk_1", "tripped")
    kinds = [k for k, _, _ in audit.entries]
    assert "policy_decision" in kinds and "automated_action" in kinds


def test_no_key_no_quarantine_and_no_rule_no_response() -> None:
    audit, calls = Audit(), []
    g = guard(audit, calls)
    check(g, {"x-trip": "1"}, None)
    assert calls == []
    audit.entries.clear()
    out = check(g, {}, SimpleNamespace(id="gk_1", name="n"))
    assert out.immediate is None and audit.entries == [] and calls == []
