"""`llmproxy bench pii`: what the PII scan costs on the texts that cost it most, with and without its
per-request budget (in-process, one thread: the cost the sidecar's event loop would pay).

Each shape is written to be hard for one part of the scan (python-phonenumbers' candidates, spaCy's
affix splitting, Presidio's context enhancer), cut to ``--size`` characters. The full scan shows the
cost that grows with the text; the budgeted scan shows where the guard stops (LLMPROXY_PII_BUDGET_MS).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

SHAPES: dict[str, str] = {
    "digit pairs (1 1 1 ...)": "1 ",
    "dashed digits (1-1-1-...)": "1-",
    "dotted digits (.1.1.1...)": ".1",
    "log lines (timestamps)": "2026-12-07 07:12:31.042 INFO req 4211 took 37 ms\n",
    "full-width numbers": "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19\uff10\uff11\uff12\uff13 ",
    "brackets around a phone": "",  # built below: it is not a repetition
    "IP addresses, one per word": "10.0.0.1 ",
    "prose with an e-mail": "Please write to jane.doe@example.com about the order. ",
}


def _text(shape: str, size: int) -> str:
    if shape == "brackets around a phone":
        half = max((size - 16) // 2, 0)
        return "(" * half + "+44 20 7946 0958" + ")" * half
    unit = SHAPES[shape]
    return (unit * (size // len(unit) + 1))[:size]


def register(bench_subparsers: argparse._SubParsersAction) -> None:
    p = bench_subparsers.add_parser("pii", help="the PII scan's cost on its worst texts, with and without its budget")
    p.add_argument("--size", type=int, default=10_000, help="characters per text (default 10000)")
    p.add_argument("--budget-ms", type=float, default=250.0, help="the budget to apply (default 250: LLMPROXY_PII_BUDGET_MS)")
    p.add_argument("--repeat", type=int, default=3, help="runs per text; the best is reported (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def measure(size: int, budget_ms: float, repeat: int) -> dict[str, Any]:
    from intelligence.detectors.pii import PiiDetector

    detector = PiiDetector()  # its own: nothing remembered from other texts
    detector.find("warm-up: +44 20 7946 0958, jane.doe@example.com")
    rows = []
    for shape in SHAPES:
        text = _text(shape, size)
        full_ms, budget_runs = [], []
        for _ in range(max(repeat, 1)):
            t0 = time.perf_counter()
            full = detector.scan(text)
            full_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            cut = detector.scan(text, deadline=t0 + budget_ms / 1000)
            budget_runs.append(((time.perf_counter() - t0) * 1000, cut))
        best_ms, cut = min(budget_runs, key=lambda run: run[0])
        rows.append(
            {
                "shape": shape,
                "chars": len(text),
                "full_ms": round(min(full_ms), 1),
                "spans": len(full.spans),
                "budgeted_ms": round(best_ms, 1),
                "budgeted_complete": cut.complete,
                "budgeted_scanned_chars": cut.scanned_chars,
            }
        )
    return {"size": size, "budget_ms": budget_ms, "repeat": repeat, "shapes": rows}


def run(args: argparse.Namespace) -> int:
    result = measure(args.size, args.budget_ms, args.repeat)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"PII scan, {args.size:,} characters per text, budget {args.budget_ms:g} ms (best of {args.repeat})")
    print(f"{'text':28s} {'full scan':>10s} {'spans':>6s} {'budgeted':>10s}  read")
    for row in result["shapes"]:
        read = "all" if row["budgeted_complete"] else f"{row['budgeted_scanned_chars']:,} chars (incomplete)"
        print(f"{row['shape']:28s} {row['full_ms']:8.1f} ms {row['spans']:6d} {row['budgeted_ms']:8.1f} ms  {read}")
    return 0
