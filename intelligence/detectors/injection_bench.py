"""Per-prompt latency of the default injection detector, wall clock and CPU, with the load average.

    python -m intelligence.detectors.injection_bench --dataset ../shared/eval/attack_jailbreakbench_artifacts.jsonl ... [--no-embeddings]

Scans every held-out row of the given files (rows in data/trainset.yaml are skipped, as in
``llmproxy eval security``) with its ``meta.system_prompt``, once per ``--repeat``, and prints
p50/p90/p99 of wall time and of process CPU time. On a shared machine the wall-clock tail is
mostly time spent waiting for a core; the CPU figures say what the detector itself costs.

``--pairs SYSTEMS.jsonl`` measures instead the context layer's false positives on benign text
under a restricting system prompt: every CLINC150 test utterance (``--clinc``) and every held-out
benign row of the ``--dataset`` files is paired with a system prompt drawn at random (fixed seed)
from the rows of SYSTEMS.jsonl; a pair counts when it is flagged and the text alone is not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .injection import Segment, default_injection_detector
from .trainset import is_training_text


def load_segments(paths: list[Path]) -> list[list[Segment]]:
    out: list[list[Segment]] = []
    for path in paths:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row.get("text"), str) or is_training_text(row["text"]):
                    continue
                segs = [Segment("user", row["text"])]
                system = (row.get("meta") or {}).get("system_prompt")
                if isinstance(system, str) and system.strip():
                    segs.insert(0, Segment("system", system))
                out.append(segs)
    return out


def measure(detector, prompts: list[list[Segment]]) -> dict[str, float]:  # type: ignore[no-untyped-def]
    wall: list[float] = []
    cpu: list[float] = []
    for segs in prompts:
        t0, c0 = time.perf_counter(), time.process_time()
        detector.scan(segs)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    w = np.percentile(wall, [50, 90, 99])
    c = np.percentile(cpu, [50, 90, 99])
    return {
        "n": len(prompts),
        "wall_p50": w[0],
        "wall_p90": w[1],
        "wall_p99": w[2],
        "cpu_p50": c[0],
        "cpu_p90": c[1],
        "cpu_p99": c[2],
    }


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [row for row in (json.loads(line) for line in f if line.strip()) if isinstance(row.get("text"), str)]


def pair_false_positives(
    detector, systems_file: Path, clinc_file: Path | None, benign_files: list[Path], seed: int = 7
) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    """Flag rates of benign texts each paired with a random system prompt from ``systems_file``."""
    systems = sorted(
        {
            s
            for s in ((r.get("meta") or {}).get("system_prompt") for r in _jsonl(systems_file))
            if isinstance(s, str) and s.strip()
        }
    )
    rng = random.Random(seed)
    groups: dict[str, list[str]] = {}
    if clinc_file is not None:
        groups["clinc150_test"] = [r["text"] for r in _jsonl(clinc_file) if (r.get("meta") or {}).get("split") == "test"]
    groups["held_out_benign"] = [
        r["text"] for path in benign_files for r in _jsonl(path) if r.get("label") == "benign" and not is_training_text(r["text"])
    ]
    out: dict[str, dict[str, float]] = {}
    for name, texts in groups.items():
        flagged = 0
        for text in texts:
            paired = detector.scan([Segment("system", rng.choice(systems)), Segment("user", text)]).flagged
            flagged += paired and not detector.scan([Segment("user", text)]).flagged
        out[name] = {"n": len(texts), "flagged": flagged, "rate": round(flagged / len(texts), 4) if texts else 0.0}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m intelligence.detectors.injection_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dataset", action="append", required=True, type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-embeddings", action="store_true", help="heuristics and context only")
    parser.add_argument(
        "--pairs",
        type=Path,
        metavar="SYSTEMS.jsonl",
        help="measure false positives of benign text under random system prompts from this file",
    )
    parser.add_argument("--clinc", type=Path, help="with --pairs: CLINC150 JSONL whose meta.split == test rows are paired too")
    args = parser.parse_args(argv)
    detector = default_injection_detector(with_embeddings=not args.no_embeddings)
    if args.pairs is not None:
        print(json.dumps(pair_false_positives(detector, args.pairs, args.clinc, args.dataset), indent=2))
        return 0
    prompts = load_segments(args.dataset)
    detector.scan_text("warm-up: load the static table before timing")
    for run in range(args.repeat):
        load = os.getloadavg()[0]
        r = measure(detector, prompts)
        print(
            f"run {run + 1}: n={r['n']} wall p50/p90/p99 {r['wall_p50']:.1f}/{r['wall_p90']:.1f}/{r['wall_p99']:.1f} ms, "
            f"cpu {r['cpu_p50']:.1f}/{r['cpu_p90']:.1f}/{r['cpu_p99']:.1f} ms, load average {load:.1f}->{os.getloadavg()[0]:.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
