"""`llmproxy status`: exit 0 only when Envoy, the sidecar and the database are all healthy."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from intelligence.ops.health import database_ok, envoy_ready, grpc_healthy
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
    parts = {
        "envoy": envoy_ready(state.ports["admin"]),
        "sidecar": grpc_healthy(state.ports["sidecar"]),
        "database": asyncio.run(database_ok(state.database_url)),
    }
    if "ui" in state.ports:
        parts["dashboard"] = "ui" in state.pids and pid_alive(state.pids["ui"])
    if "control" in state.ports:  # the intelligence process: background jobs + control API (optional part)
        parts["intelligence"] = (
            "intelligence" in state.pids
            and pid_alive(state.pids["intelligence"])
            and not port_free("127.0.0.1", state.ports["control"])
        )
    required = ("envoy", "sidecar", "database")
    ok = all(parts[p] for p in required)
    vector = _vector_problem(args.data_dir)
    if vector:
        ok = False
    if args.json:
        intelligence = _intelligence()
        print(
            json.dumps(
                {
                    "ok": ok,
                    "parts": parts,
                    "ports": state.ports,
                    "intelligence": intelligence["summary"],
                    "intelligence_detail": intelligence,
                    **({"error": vector} if vector else {}),
                }
            )
        )
    else:
        for name, healthy in parts.items():
            print(f"  {name:<10} {'ok' if healthy else 'DOWN'}")
        for line in intelligence_lines(_intelligence()):
            print(line)
        if vector:
            print(f"unhealthy: {vector}")
        elif not ok:
            print("unhealthy: " + ", ".join(p for p in required if not parts[p]))
    return 0 if ok else 1


def _vector_problem(data_dir: Path) -> str | None:
    """The pgvector self-check's sentence, when the last start-up (or a later check) found the build unusable."""
    try:
        result = json.loads((data_dir / "vector_check.json").read_text())
    except (OSError, ValueError):
        return None
    return None if result.get("ok") else str(result.get("message") or "the pgvector self-check failed")


def _intelligence() -> dict:
    """Mode, model, flags and a sentence, read from this shell's environment (the variables `llmproxy up` reads)."""
    from intelligence.claude import IntelligenceFlags

    try:
        return IntelligenceFlags.from_env().describe()
    except ValueError as exc:  # a malformed CLAUDE_* variable: say so rather than fail the health check
        return {"mode": "invalid", "model": None, "flags": {}, "summary": f"intelligence settings invalid: {exc}"}


def intelligence_lines(info: dict) -> list[str]:
    flags = info.get("flags") or {}
    on = [name for name, value in flags.items() if value and name != "intelligence"]
    off = [name for name, value in flags.items() if not value and name != "intelligence"]
    lines = [f"  intelligence {info['summary']}"]
    if flags:
        lines.append(f"               features on: {', '.join(on) or 'none'}" + (f"; off: {', '.join(off)}" if off else ""))
    return lines
