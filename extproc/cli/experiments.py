"""`llmproxy experiments list|start|approve|pause|resume|promote|rollback|history` over the control API.

Starting and promoting need an admin's approval by default (intelligence/enhance/approval.py): the
candidate job's experiments wait in status ``pending`` and the evaluator's promotions wait as
``awaiting promote``; `llmproxy experiments approve ID` approves whichever the experiment awaits.

Talks gRPC to the control API (--control, default $LLMPROXY_CONTROL_ADDR or 127.0.0.1:50052) with
the access token in $LLMPROXY_TOKEN (from `llmproxy token create`; not needed on a loopback server
without SECRET_KEY). Changes need role admin; the token's subject is recorded as the actor. TLS:
--control-ca or $LLMPROXY_CONTROL_TLS_CA (see intelligence.control.tls); a token is never sent in
plaintext to a non-loopback address.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

ACTIONS = ("approve", "pause", "resume", "promote", "rollback")
HELP = {
    "approve": "approve what an experiment awaits: its start (pending) or the promotion the evaluator asked for",
    "rollback": "roll an experiment back (or decline a pending one)",
}


def register(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control", default=None, metavar="ADDR", help="control API address (default $LLMPROXY_CONTROL_ADDR or 127.0.0.1:50052)"
    )
    common.add_argument(
        "--control-ca",
        default=None,
        metavar="PEM",
        help="CA that signed the control API's certificate: connect with TLS (default $LLMPROXY_CONTROL_TLS_CA)",
    )
    common.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("experiments", help="list and steer enhancement A/B experiments (control API)")
    actions = p.add_subparsers(dest="experiments_command", metavar="ACTION", required=True)

    ls = actions.add_parser("list", parents=[common], help="experiments, newest first, with their statistics")
    ls.add_argument("--status", default=None, choices=["pending", "running", "paused", "promoted", "rolled_back", "stopped"])
    ls.add_argument("--limit", type=int, default=0)
    ls.set_defaults(func=run_list)

    st = actions.add_parser("start", parents=[common], help="start testing a candidate enhancement")
    st.add_argument("enhancement_id", type=int)
    st.add_argument("--control-weight", type=float, default=None, help="share of traffic kept on control (default 0.5)")
    st.add_argument("--assign-by", choices=["session", "client"], default=None, help="unit of assignment (default session)")
    st.set_defaults(func=run_start)

    for action in ACTIONS:
        a = actions.add_parser(action, parents=[common], help=HELP.get(action, f"{action} an experiment"))
        a.add_argument("experiment_id", type=int)
        if action != "resume":
            a.add_argument("--reason", default="", help="recorded in the experiment's history")
        a.set_defaults(func=run_action, action=action)

    h = actions.add_parser("history", parents=[common], help="an experiment's history (who did what, when)")
    h.add_argument("experiment_id", type=int)
    h.set_defaults(func=run_history)


def _client(args: argparse.Namespace) -> Any:
    from intelligence.control.client import client_from_env

    return client_from_env(args.control, ca=getattr(args, "control_ca", None))


def _call(args: argparse.Namespace, work: Any) -> int:
    import grpc

    from intelligence.control.client import describe_error

    try:
        client = _client(args)
    except ValueError as exc:  # TLS misconfigured, or a token about to go out in plaintext
        print(f"llmproxy experiments: {exc}", file=sys.stderr)
        return 2
    with client:
        try:
            return work(client)
        except grpc.RpcError as exc:
            print(f"llmproxy experiments: {describe_error(exc)} ({client.addr})", file=sys.stderr)
            return 1


def _dump(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def lift_ci(ci: list[float | None]) -> str:
    """A relative-lift interval; its upper end is None when the control rate could be 0 (unbounded)."""
    return f"{ci[0]:+.0%}.." + ("unbounded" if ci[1] is None else f"{ci[1]:+.0%}")


def summary_line(d: dict[str, Any]) -> str:
    enh = d.get("enhancement") or {}
    stats = d.get("stats") or {}
    arms = stats.get("arms") or {}
    parts = [
        f"#{d.get('id')}",
        str(d.get("status")),
        f"pattern {d.get('pattern_id') if d.get('pattern_id') is not None else '-'}",
        f"enhancement {d.get('enhancement_id')}" + (f" ({enh.get('kind')} v{enh.get('version')})" if enh.get("kind") else ""),
        f"control {d.get('control_weight')}",
        f"by {d.get('assign_by')}",
    ]
    if d.get("scope"):
        parts.append(f"scope {d['scope']}")
    if d.get("awaiting"):
        parts.append(f"AWAITING APPROVAL to {d['awaiting']}")
    samples = sum(int((arms.get(arm) or {}).get("n") or 0) for arm in ("control", "variant"))
    for arm in ("control", "variant"):
        a = arms.get(arm)
        if a:
            units = f", {a['units']} units" if a.get("units") is not None else ""
            parts.append(f"{arm} {a.get('successes', 0)}/{a.get('n', 0)} ({_fmt(a.get('rate'))}{units})")
    if not samples:
        parts.append("no data yet")  # never a p-value without samples
    else:
        if stats.get("effect") is not None:
            parts.append(f"effect {stats['effect']:+.3f}")
        lift = stats.get("relative_lift") or {}
        if lift.get("ci"):
            parts.append(f"lift {lift['estimate']:+.0%} (CI {lift_ci(lift['ci'])})")
        if stats.get("p_value") is not None:
            parts.append(f"p {stats['p_value']:.4f}")
    if stats.get("decision"):
        parts.append(f"→ {stats['decision']}")
    line = "  ".join(parts)
    reason = d.get("decision_reason") or (d.get("awaiting_reason") if d.get("awaiting") else "") or stats.get("reason")
    return line + (f"\n    {reason}" if reason else "")


def run_list(args: argparse.Namespace) -> int:
    from intelligence.control.convert import record

    def work(client: Any) -> int:
        rows = [record(e) for e in client.list_experiments(status=args.status, limit=args.limit)]
        if args.json:
            _dump(rows)
        elif not rows:
            print("no experiments")
        else:
            for row in rows:
                print(summary_line(row))
        return 0

    return _call(args, work)


def run_start(args: argparse.Namespace) -> int:
    def work(client: Any) -> int:
        experiment_id = client.start_experiment(args.enhancement_id, control_weight=args.control_weight, assign_by=args.assign_by)
        if args.json:
            _dump({"experiment_id": experiment_id, "enhancement_id": args.enhancement_id})
        else:
            print(f"experiment {experiment_id} started for enhancement {args.enhancement_id}")
        return 0

    return _call(args, work)


def _approve(client: Any, experiment_id: int, reason: str) -> Any:
    """ApproveExperiment; through the client's own method once it has one (intelligence/control/client.py)."""
    method = getattr(client, "approve_experiment", None)
    if method is not None:
        return method(experiment_id, reason=reason)
    from intelligence.control.gen import control_pb2 as pb

    return client._call("ApproveExperiment", pb.ExperimentActionRequest(experiment_id=experiment_id, reason=reason)).experiment


def run_action(args: argparse.Namespace) -> int:
    from intelligence.control.convert import record

    def work(client: Any) -> int:
        reason = getattr(args, "reason", "")
        if args.action == "approve":
            after = record(_approve(client, args.experiment_id, reason))
        else:
            after = record(client.experiment_action(args.action, args.experiment_id, reason=reason))
        if args.json:
            _dump(after)
        else:
            print(f"experiment {args.experiment_id}: {args.action} done, now {after.get('status')}")
        return 0

    return _call(args, work)


def run_history(args: argparse.Namespace) -> int:
    def work(client: Any) -> int:
        entries = client.experiment_history(args.experiment_id)
        rows = [
            {"id": e.id, "at": e.at, "action": e.action, "actor": e.actor, "detail": json.loads(e.detail_json or "{}")}
            for e in entries
        ]
        if args.json:
            _dump(rows)
        else:
            for r in rows:
                detail = ", ".join(f"{k}={v}" for k, v in r["detail"].items() if v not in (None, "", {}))
                print(f"{r['at']}  {r['action']:<12} {r['actor']}" + (f"  {detail}" if detail else ""))
        return 0

    return _call(args, work)
