"""The guard's automated response: alerts are audited, quarantines scheduled for the gateway key."""

from __future__ import annotations

from types import SimpleNamespace

from extproc.testing.guard import check_chat, guard_for

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


def guard(audit, calls):
    return guard_for(POLICY, audit=audit, quarantine=lambda *a: calls.append(a))


def check(g, headers, key):
    return check_chat(g, "hi", key=key, headers=headers)[0]


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
