"""`python -m intelligence.policy.bench`: microseconds per policy evaluation, on the hot path's terms.

Times :meth:`PolicySnapshot.evaluate_request` (and one ``evaluate_response``) on the shipped default
policy and on a generated 50-rule policy, for requests that fire no rule (the cached untouched
decision), a few rules, or a block. Each figure is the best of ``--repeat`` runs of ``--number``
evaluations (the least disturbed by other work on the machine), in microseconds per evaluation.
Pure CPU, no I/O; only the public API, so it runs against any version of the engine.
"""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable
from typing import Any

from .facts import RequestFacts
from .parse import parse_policy
from .snapshot import PolicySnapshot
from .testing import detections, policy_yaml, request_facts, response_facts
from .watcher import DEFAULT_POLICY_FILE, load_file

# one rule of each shape, cycled to 50: conditions that mostly do not hold for the benchmark's requests,
# actions of every kind so that the rules that do fire exercise the whole accumulator
_SHAPES: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = (
    ({"models": ["claude-*"]}, {"tag": "claude"}),
    ({"keys": ["team-b", "ops-*"]}, {"cap_max_tokens": 256}),
    ({"headers": ["x-debug"]}, {"strip_headers": ["x-debug"], "tag": "debug"}),
    ({"pii": ["CREDIT_*"]}, {"mask": ["CREDIT_CARD"], "alert": "card"}),
    ({"injection_score": {"gte": 0.9}}, {"block": True, "alert": {"severity": "critical", "message": "inj"}}),
    ({"paths": ["/v1/embeddings"]}, {"set_fields": {"/dimensions": 256}}),
    ({"providers": ["anthropic"]}, {"prepend_system": "be brief"}),
    ({"time": {"days": ["sat", "sun"]}}, {"throttle": {"rpm": 10}}),
    ({"request_bytes": {"gt": 1_000_000}}, {"block": {"status": 413, "code": "too_big"}}),
    ({"flags": ["bidi"]}, {"tag": "bidi", "quarantine_key": True}),
)
# ...and these fire for the benchmark's request: 5 of the 50 (one is a monitor rule)
_FIRING: tuple[dict[str, Any], ...] = (
    {"id": "fire-tag", "priority": 1, "match": {"models": ["gpt-4o*"]}, "actions": {"tag": ["gpt", "bench"]}},
    {
        "id": "fire-cap",
        "priority": 2,
        "match": {"keys": ["team-*"]},
        "actions": {"cap_max_tokens": 1024, "set_headers": {"x-team": "a"}},
    },
    {
        "id": "fire-redact",
        "priority": 3,
        "match": {"secrets": "any"},
        "actions": {"redact": {"kinds": ["secrets"], "in": ["request", "response"]}, "tag": "secret"},
    },
    {
        "id": "fire-edit",
        "priority": 4,
        "match": {"apis": ["chat"]},
        "actions": {"default_fields": {"/temperature": 0.2}, "remove_fields": ["/logit_bias"], "throttle": {"rpm": 600}},
    },
    {"id": "fire-watch", "priority": 5, "mode": "monitor", "match": {"pii": "any"}, "actions": {"redact": ["pii"], "tag": "pii"}},
)


def fifty_rule_policy() -> PolicySnapshot:
    rules: list[dict[str, Any]] = list(_FIRING)
    i = 0
    while len(rules) < 50:
        match, actions = _SHAPES[i % len(_SHAPES)]
        rules.append({"id": f"r{i}", "priority": 10 + i, "match": match, "actions": actions})
        i += 1
    return PolicySnapshot.build([parse_policy(policy_yaml(*rules, name="bench"), name="bench")])


def default_policy() -> PolicySnapshot:
    return PolicySnapshot.build([load_file(DEFAULT_POLICY_FILE)])


def _time(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Best microseconds per call over ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def cases() -> list[tuple[str, PolicySnapshot, RequestFacts]]:
    default, fifty = default_policy(), fifty_rule_policy()
    dirty = detections(secrets=["AWS_ACCESS_KEY"], pii=["EMAIL_ADDRESS"], injection=0.1)
    return [
        ("default: no rule fires (cached decision)", default, request_facts()),
        ("default: secret redacted, pii monitored", default, request_facts(detections=dirty)),
        ("default: injection blocked", default, request_facts(detections=detections(injection=0.99))),
        ("50 rules: none fires", fifty, request_facts(model="o3", key_name="x", key_id="gk_x", api="responses")),
        ("50 rules: 5 fire (1 monitor)", fifty, request_facts(detections=dirty)),
        ("50 rules: 3 fire, then a block", fifty, request_facts(detections=detections(injection=0.95))),
    ]


def run(number: int, repeat: int) -> list[dict[str, Any]]:
    out = []
    for name, snap, facts in cases():
        out.append({"case": name, "us": round(_time(_request(snap, facts), number, repeat), 3)})
    snap, facts = cases()[4][1:]
    resp = response_facts(request=facts, request_decision=snap.evaluate_request(facts))
    out.append(
        {"case": "50 rules: evaluate_response", "us": round(_time(lambda: snap.evaluate_response(resp), number, repeat), 3)}
    )
    return out


def _request(snap: PolicySnapshot, facts: RequestFacts) -> Callable[[], object]:
    return lambda: snap.evaluate_request(facts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m intelligence.policy.bench", description=__doc__.splitlines()[0])
    p.add_argument("--number", type=int, default=20_000, help="evaluations per run")
    p.add_argument("--repeat", type=int, default=7, help="runs; the best one counts")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    results = run(args.number, args.repeat)
    if args.json:
        print(json.dumps(results))
    else:
        width = max(len(r["case"]) for r in results)
        for r in results:
            print(f"{r['case']:<{width}}  {r['us']:8.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
