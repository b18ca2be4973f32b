"""Policy schema for the response side: `reversible` (synonym of `restore`) is validated strictly."""

from __future__ import annotations

import pytest

from intelligence.policy import PolicyError, parse_policy
from intelligence.policy.testing import policy_yaml, request_facts, snapshot


def redact_rule(spec: dict) -> dict:
    return {"id": "r", "match": {"pii": "any"}, "actions": {"redact": spec}}


def test_reversible_turns_on_restore() -> None:
    snap = snapshot(redact_rule({"kinds": ["pii"], "reversible": True}))
    from intelligence.policy.testing import detections

    decision = snap.evaluate_request(request_facts(detections=detections(pii=["EMAIL_ADDRESS"])))
    assert decision.redact.restores("EMAIL_ADDRESS", "pii")
    snap = snapshot(redact_rule({"kinds": ["pii"], "reversible": False}))
    decision = snap.evaluate_request(request_facts(detections=detections(pii=["EMAIL_ADDRESS"])))
    assert decision.redact.active and not decision.redact.restores("EMAIL_ADDRESS", "pii")


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"kinds": ["pii"], "reversible": "yes"}, "expected true or false"),
        ({"kinds": ["pii"], "reversible": True, "restore": True}, "not both"),
        ({"kinds": ["pii"], "reversible": True, "in": ["response"]}, "add `in: [request]`"),
    ],
)
def test_reversible_is_validated(spec: dict, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(policy_yaml(redact_rule(spec)), name="t")
    assert message in str(err.value)


def test_mask_takes_no_reversible() -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(policy_yaml({"id": "m", "actions": {"mask": {"kinds": ["pii"], "reversible": True}}}), name="t")
    assert "unknown key" in str(err.value)
