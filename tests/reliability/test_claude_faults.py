"""Claude unavailable, then out of budget: requests that ask Claude (a `claude_verdict` rule) go on under the
rule's declared fail mode, everything else is untouched, and `llmproxy status` says which problem Claude has."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Stack

from .conftest import BAND, ClaudeSwitch
from .harness import Traffic, check_log, new_session, status, summarize, wait_for

pytestmark = pytest.mark.e2e


def _ask_claude(traffic: Traffic, n: int) -> list:
    """Requests whose injection score sits in the band the policy sends to Claude."""
    import httpx

    from .harness import Outcome, chat_body

    outs = []
    with httpx.Client() as client:
        for _ in range(n):
            marker, _ = traffic.next_marker()
            body = chat_body(marker, stream=False)
            body["messages"][0]["content"] += " " + BAND
            r = client.post(
                traffic.url + "/openai/v1/chat/completions",
                json=body,
                headers={"authorization": "Bearer sk-reliability", **traffic.headers},
                timeout=30,
            )
            out = Outcome(marker, False, 0.0, status=r.status_code, request_id=r.headers.get("x-llmproxy-request-id"))
            out.complete = r.status_code == 200 and "echo: Summarise ticket" in r.text
            outs.append(out)
    traffic.outcomes += outs
    return outs


def test_claude_unavailable_then_out_of_budget(gateway: Stack, claude_switch: ClaudeSwitch, report) -> None:
    session = new_session("claude")
    traffic = Traffic(gateway.url, session)

    claude_switch.mode = "overloaded"
    asked = _ask_claude(traffic, 4)
    plain = traffic.burst(10)
    assert all(o.complete for o in asked + plain), summarize(asked + plain)
    rc, doc = status(gateway)
    assert rc == 0, doc  # the gateway itself is healthy
    assert doc["claude"]["problem"] == "unavailable" and "Claude unavailable" in doc["claude"]["summary"], doc["claude"]
    assert any("Claude unavailable" in p for p in doc["problems"])
    unavailable = doc["claude"]["summary"]

    claude_switch.mode = "ok"  # each answer now reports a million input tokens: the first one spends the budget
    asked += _ask_claude(traffic, 3)
    assert all(o.complete for o in asked), summarize(asked)
    wait_for(lambda: (status(gateway)[1].get("claude") or {}).get("problem") == "budget_exhausted", 30, "budget exhausted")
    rc, doc = status(gateway)
    assert rc == 0 and "budget exhausted" in doc["claude"]["summary"] and "local-only" in doc["claude"]["summary"]
    more = _ask_claude(traffic, 2) + traffic.burst(5)
    assert all(o.complete for o in more), summarize(more)
    log = check_log(gateway.db_url, session, traffic.outcomes)
    log.assert_exactly_once()
    report(
        "Claude overloaded (529), then daily budget exhausted",
        f"{summarize(traffic.outcomes)}: requests asking Claude passed under the rule's fail mode (allow); "
        f"status said: {unavailable!r}, then {doc['claude']['summary']!r}",
        log.holds(),
    )
