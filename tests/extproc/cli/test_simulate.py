"""`llmproxy simulate ab` (statistics only, in-process) and the pieces of `llmproxy simulate enhancement`
that need no stack: the property-based fake model, the users' cohorts and the fake Claude's analysis.
The whole loop runs in tests/e2e/test_enhancement.py."""

from __future__ import annotations

import json

import pytest

from extproc.cli import main
from extproc.cli.simulate import (
    FEATURES,
    Analyst,
    PropertyModel,
    SessionPlan,
    plan_session,
    request_doc,
    session_effect,
)

AB_KEYS = {
    "runs",
    "promoted",
    "rolled_back",
    "undecided",
    "false_decision_rate",
    "power",
    "median_requests_to_decide",
    "method",
}


def _ab(capsys, *argv: str) -> dict:
    with pytest.raises(SystemExit) as done:
        main(["simulate", "ab", "--json", *argv])
    assert done.value.code in (0, None)
    return json.loads(capsys.readouterr().out)


def test_simulate_ab_json_contract_null_and_power(capsys) -> None:
    null_args = ("--session-sd", "0.3", "--seed", "4", "--max-requests", "1000")
    null = _ab(capsys, "--runs", "300", "--requests-per-session", "5", *null_args)
    assert AB_KEYS <= set(null) and null["method"] == "session" and null["power"] is None
    assert null["runs"] == null["promoted"] + null["rolled_back"] + null["undecided"] == 300
    assert 0 <= null["false_decision_rate"] <= 0.1 and null["decide_mismatches"] == 0
    power = _ab(capsys, "--runs", "200", "--control-rate", "0.30", "--variant-rate", "0.45", "--max-requests", "2500")
    assert power["false_decision_rate"] is None and power["power"] >= 0.9
    assert 100 < power["median_requests_to_decide"] < 1500
    old = _ab(capsys, "--runs", "200", "--requests-per-session", "10", "--method", "per-request", *null_args)
    assert old["method"] == "per-request" and old["false_decision_rate"] > 0.15  # inflated by correlated sessions


def test_simulate_ab_refuses_an_impossible_spread(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["simulate", "ab", "--runs", "10", "--control-rate", "0.1", "--session-sd", "0.4"])
    assert done.value.code == 2 and "too large" in capsys.readouterr().err


def test_the_fake_model_reacts_to_properties_not_strings() -> None:
    m = PropertyModel(seed=1, session_sd=0.0, helpful_effect=0.45, harmful_effect=0.5)
    base = "You bill.\nWrite the invoice summary for order 7 with its line items and totals."
    assert m.probability(base, "s")[1] == pytest.approx(0.3)
    # any wording of a length limit counts, not one exact instruction
    for limit in ("Keep it under 100 words.", "Answer in no more than 80 words please", "at most 5 words"):
        assert m.probability(f"{base} {limit}", "s")[1] == pytest.approx(0.75)
    detail = " Explain every line item in full detail before the totals."
    assert m.probability(base + detail, "s")[1] == pytest.approx(0.02)  # 0.3 - 0.5, clipped
    complex_ = base.replace("with its line items and totals", "with 40 line items across 6 currencies")
    assert m.probability(complex_ + detail, "s")[1] == pytest.approx(0.6)  # complex orders need the detail
    assert m.probability(base + " Add a short thank-you line at the end.", "s")[1] == pytest.approx(0.3)
    assert m.probability("Translate 'hello' into French.", "s") == ("other", pytest.approx(0.9))
    # the session's effect correlates its requests; draws are reproducible
    correlated = PropertyModel(seed=1, session_sd=1.0)
    assert correlated.probability(base, "a")[1] != correlated.probability(base, "b")[1]
    assert [correlated.decide(base, f"s{i}")[1] for i in range(50)] == [
        PropertyModel(seed=1, session_sd=1.0).decide(base, f"s{i}")[1] for i in range(50)
    ]
    effects = [session_effect(3, f"s{i}", 0.5) for i in range(4000)]
    assert abs(sum(effects) / len(effects)) < 0.03 and 0.47 < (sum(e * e for e in effects) / len(effects)) ** 0.5 < 0.53


def test_cohorts_bring_the_habits_of_each_phase() -> None:
    plans = {c: [plan_session(5, f"sim-x-{i}", c, 0.5) for i in range(2000)] for c in (0, 2, 3)}
    assert not any(p.complex_orders or p.writes_detail or p.writes_thanks for p in plans[0])
    complex_ = [p for p in plans[2] if p.complex_orders]
    assert 0.2 < len(complex_) / 2000 < 0.3 and sum(p.writes_detail for p in complex_) / len(complex_) > 0.75
    thanks = [p for p in plans[3] if p.writes_thanks]
    others = [p for p in plans[3] if not p.writes_thanks]
    # the users who write the thank-you line are those whose sessions go well anyway (confounding)
    assert sum(p.effect for p in thanks) / len(thanks) > sum(p.effect for p in others) / len(others) + 0.3
    doc = request_doc(SessionPlan("s", True, True, True, True, True, 0.0), 0)
    user = doc["messages"][1]["content"]
    assert "across 6 currencies" in user and "under 100 words" in user and "thank-you line" in user


def _example(user: str) -> dict:
    return {"system": "You are the billing assistant.", "user": user}


def test_the_fake_claude_proposes_what_separates_successes_from_failures() -> None:
    analyst = Analyst()
    base = "Write the invoice summary for order 1."
    evidence = {
        "succeeding_examples": [_example(base + " Keep it under 90 words.")] * 6 + [_example(base)] * 4,
        "failing_examples": [_example(base)] * 10,
        "already_tried": [],
    }
    answer = analyst({"prompt": "Evidence ...\n\n" + json.dumps(evidence)})
    (candidate,) = answer["candidates"]
    assert candidate["kind"] == "system_prompt" and "under 120 words" in candidate["spec"]["text"]
    assert "60%" in candidate["rationale"] and analyst.analyses[-1]["chosen"] == "length_limit"
    # once tried, it is not proposed again; nothing else separates the examples: no proposal
    tried = {**evidence, "already_tried": [{"kind": "system_prompt", "spec": FEATURES["length_limit"][1]["spec"]}]}
    assert analyst({"prompt": "x\n\n" + json.dumps(tried)}) == {"candidates": []}
    # a habit of the succeeding users is proposed even though it does not cause success: the data decide
    detail = " Explain every line item in full detail before the totals."
    misleading = {
        "succeeding_examples": [_example(base + detail)] * 5 + [_example(base)] * 5,
        "failing_examples": [_example(base)] * 10,
        "already_tried": tried["already_tried"],
    }
    assert analyst({"prompt": "x\n\n" + json.dumps(misleading)})["candidates"][0]["spec"]["text"] == detail.strip()
    assert analyst({"prompt": "no evidence"}) == {"candidates": []}
