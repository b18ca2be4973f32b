"""`llmproxy status`: exit 0 only when Envoy, the sidecar and the database are all healthy.

Besides the health of each part it names what is wrong while it lasts: a part `llmproxy up` is
restarting (with its restarts and last exit reason), the database refusing connections or in crash
recovery, the request log spooling to disk (or, with the spool's disk full, holding records in memory
or dropping them), Claude unavailable or out of budget (the stack then runs local-only).

``--json`` keeps the fields of earlier versions (``ok``, ``parts`` as booleans, ``ports``,
``intelligence``, ``intelligence_detail``, ``error``) and adds ``problems``, ``supervision``,
``database``, ``recorder`` and ``claude``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from intelligence.ops.health import database_state, envoy_ready, grpc_healthy, recorder_problems, recorder_state
from intelligence.ops.stack import StackState, pid_alive, port_free


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="health of the running stack (exit 0 only if all parts are healthy)")
    p.add_argument("--data-dir", type=Path, default=Path(".llmproxy"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    state = StackState.load(args.data_dir)
    if state is None:
        msg = _vector_problem(args.data_dir) or (
            f"no stack running from {args.data_dir.resolve()} (no stack.json): start one with `llmproxy up`"
        )
        print(json.dumps({"ok": False, "error": msg}) if args.json else f"llmproxy: {msg}")
        return 1
    db_ok, db_detail = asyncio.run(database_state(state.database_url))
    parts = {
        "envoy": envoy_ready(state.ports["admin"]),
        "sidecar": grpc_healthy(state.ports["sidecar"]),
        # further sidecar workers (`up --sidecar-workers N`): each must serve
        **{name: grpc_healthy(port) for name, port in state.ports.items() if name.startswith("sidecar-")},
        "database": db_ok,
    }
    if "ui" in state.ports:
        parts["dashboard"] = "ui" in state.pids and pid_alive(state.pids["ui"])
    if "control" in state.ports:  # the intelligence process: background jobs + control API (optional part)
        parts["intelligence"] = (
            "intelligence" in state.pids
            and pid_alive(state.pids["intelligence"])
            and not port_free("127.0.0.1", state.ports["control"])
        )
    required = ("envoy", *(name for name in parts if name.startswith("sidecar")), "database")
    ok = all(parts[p] for p in required)
    vector = _vector_problem(args.data_dir)
    if vector:
        ok = False
    recorder = recorder_state(args.data_dir)
    problems = _problems(parts, db_detail, state.supervision, recorder)
    intelligence = _intelligence(state)
    claude = _claude(state, intelligence)
    if claude.get("problem"):
        problems.append(claude["summary"])
    if args.json:
        print(
            json.dumps(
                {
                    "ok": ok,
                    "parts": parts,
                    "ports": state.ports,
                    "intelligence": claude.get("summary") or intelligence["summary"],
                    "intelligence_detail": intelligence,
                    **({"error": vector} if vector else {}),
                    "problems": problems,
                    "database": {"ok": db_ok, "detail": db_detail},
                    "supervision": state.supervision,
                    "recorder": recorder,
                    "claude": claude,
                }
            )
        )
    else:
        for name, healthy in parts.items():
            print(f"  {name:<12} {'ok' if healthy else 'DOWN'}{_part_detail(name, db_detail, state.supervision)}")
        for line in intelligence_lines({**intelligence, "summary": claude.get("summary") or intelligence["summary"]}):
            print(line)
        if recorder is not None and not recorder.get("stale"):
            print(
                f"  request log  queue {recorder.get('queue', 0)}, spool {recorder.get('spool', 0)}, held in memory "
                f"{recorder.get('held', 0)}, dropped {recorder.get('dropped', 0)}"
            )
        for problem in problems:
            print(f"problem: {problem}")
        if vector:
            print(f"unhealthy: {vector}")
        elif not ok:
            print("unhealthy: " + ", ".join(p for p in required if not parts[p]))
    return 0 if ok else 1


_PART_OF = {"dashboard": "ui"}  # status part name -> supervision name


def _part_detail(name: str, db_detail: str, supervision: dict[str, dict[str, Any]]) -> str:
    detail = ""
    if name == "database" and db_detail != "ok":
        detail = f"  {db_detail}"
    sup = supervision.get(_PART_OF.get(name, name)) or (supervision.get("postgres") if name == "database" else None)
    if sup and (sup.get("restarts") or sup.get("state") not in ("running", None)):
        detail += f"  [{sup.get('state')}, {sup.get('restarts', 0)} restarts"
        if sup.get("last_exit"):
            detail += f", last: {sup['last_exit']} at {sup.get('last_exit_at')}"
        detail += "]"
    return detail


def _problems(
    parts: dict[str, bool], db_detail: str, supervision: dict[str, dict[str, Any]], recorder: dict[str, Any] | None
) -> list[str]:
    out: list[str] = []
    if not parts.get("database"):
        out.append(f"database: {db_detail}")
    for name, sup in supervision.items():
        state = sup.get("state")
        if state == "failed":
            out.append(
                f"{name}: failed, `llmproxy up` gave up after {sup.get('restarts', 0)} restarts (last: {sup.get('last_exit')})"
            )
        elif state in ("restarting", "starting") and sup.get("last_exit"):
            out.append(f"{name}: {sup.get('last_exit')} at {sup.get('last_exit_at')}; `llmproxy up` is restarting it")
    for name in ("envoy", "sidecar"):
        if not parts.get(name) and not any(p.startswith(f"{name}:") for p in out):
            out.append(f"{name}: not answering its health check")
    out += recorder_problems(recorder)
    return out


def _vector_problem(data_dir: Path) -> str | None:
    """The pgvector self-check's sentence, when the last start-up (or a later check) found the build unusable."""
    try:
        result = json.loads((data_dir / "vector_check.json").read_text())
    except (OSError, ValueError):
        return None
    return None if result.get("ok") else str(result.get("message") or "the pgvector self-check failed")


def _intelligence(state: StackState | None = None) -> dict:
    """Mode, model, flags and a sentence: what the running stack started with (stack.json), else this
    shell's environment (the variables `llmproxy up` reads)."""
    if state is not None and state.intelligence.get("summary"):
        return dict(state.intelligence)
    from intelligence.claude import IntelligenceFlags

    try:
        return IntelligenceFlags.from_env().describe()
    except ValueError as exc:  # a malformed CLAUDE_* variable: say so rather than fail the health check
        return {"mode": "invalid", "model": None, "flags": {}, "summary": f"intelligence settings invalid: {exc}"}


def _claude(state: StackState, intelligence: dict) -> dict:
    """Is Claude usable now (recent calls, today's spend against the budget)? {} when not configured."""
    if intelligence.get("mode") in (None, "local-only", "invalid"):
        return {}
    if (intelligence.get("flags") or {}).get("intelligence") is False:
        return {}
    from intelligence.ops.claude_state import claude_state

    try:
        return asyncio.run(claude_state(state.database_url, intelligence))
    except Exception as exc:  # noqa: BLE001 - status reports, it does not fail on its own checks
        return {"summary": f"{intelligence.get('summary')}; Claude state unknown ({type(exc).__name__})"}


def intelligence_lines(info: dict) -> list[str]:
    flags = info.get("flags") or {}
    on = [name for name, value in flags.items() if value and name != "intelligence"]
    off = [name for name, value in flags.items() if not value and name != "intelligence"]
    lines = [f"  intelligence {info['summary']}"]
    if flags:
        lines.append(f"               features on: {', '.join(on) or 'none'}" + (f"; off: {', '.join(off)}" if off else ""))
    return lines
