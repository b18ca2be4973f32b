"""`llmproxy eval security` and `llmproxy eval pii`: offline detector evaluation, no stack needed.

eval security: each --dataset is JSONL with {text, label: attack|benign, meta?}. It scores them with
the same default detector the sidecar runs inline (injection.default_injection_detector). Per file it reports
the detection rate (attack rows) or false-positive rate (benign rows) at the default policy's
threshold, per-prompt latency p50/p99, a breakdown per meta.family/meta.method, and the file's
``role`` (train | calibration | heldout) from the manifest of what the shipped detector was built
from (intelligence/detectors/manifest.py), never from a flag. meta.segment_source (tool_result,
document, ...) is passed as the segment's source. Rows the shipped
classifier or memory were trained on (data/trainset.yaml) are left out and counted as `excluded`.
When a row carries meta.system_prompt it is passed as the system segment, as the gateway would.

eval pii: JSONL with {text, label: [{type, start, end}]}; precision and recall per entity type.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("llmproxy.eval.security")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("security", help="detection / false-positive rate and latency of the injection detectors")
    p.add_argument(
        "--dataset",
        action="append",
        required=True,
        type=Path,
        metavar="FILE.jsonl",
        help="JSONL {text, label: attack|benign}; repeatable",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--threshold", type=float, default=None, help="override the default policy's threshold")
    p.add_argument(
        "--no-embeddings", action="store_true", help="heuristics and context only (no static embedding, no classifier/memory)"
    )
    p.add_argument("--include-training-rows", action="store_true", help="also score rows the shipped model was trained on")
    p.add_argument(
        "--budget-ms",
        type=float,
        default=None,
        help="per-request detection budget as the sidecar applies it (default: none, every window is scanned)",
    )
    p.add_argument(
        "--ignore-system-prompt", action="store_true", help="score the text alone even when meta.system_prompt is present"
    )
    p.set_defaults(func=run_security)

    q = sub.add_parser("pii", help="precision / recall per entity type of the PII detector")
    q.add_argument(
        "--dataset",
        action="append",
        required=True,
        type=Path,
        metavar="FILE.jsonl",
        help="JSONL {text, label: [{type,start,end}]}",
    )
    q.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    q.add_argument("--all-recognizers", action="store_true", help="also run URL / DATE_TIME / US_DRIVER_LICENSE recognisers")
    q.add_argument("--spacy-model", default=None, help="an installed spaCy pipeline for PERSON (never downloaded)")
    q.set_defaults(func=run_pii)


# -- eval security --------------------------------------------------------------------------------
def _rows(path: Path) -> Iterable[dict[str, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                log.warning("%s:%d: not JSON (%s); skipped", path, n, exc)
                continue
            if isinstance(row, dict) and isinstance(row.get("text"), str):
                yield row


def _group(meta: dict[str, Any]) -> str | None:
    family, method = meta.get("family"), meta.get("method")
    if family and method:
        return f"{family}/{method}"
    return str(family or method) if (family or method) else None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def evaluate_file(
    path: Path, detector: Any, *, include_training: bool, use_system_prompt: bool, budget_ms: float | None = None
) -> dict[str, Any]:
    from intelligence.detectors.injection import Segment
    from intelligence.detectors.trainset import is_training_text

    attack_hits: list[bool] = []
    benign_hits: list[bool] = []
    latencies: list[float] = []
    groups: dict[str, list[bool]] = defaultdict(list)
    group_labels: dict[str, set[str]] = defaultdict(set)
    variants: dict[str, list[bool]] = defaultdict(list)
    excluded = 0
    incomplete = 0
    for row in _rows(path):
        text = row["text"]
        if not include_training and is_training_text(text):
            excluded += 1
            continue
        meta: dict[str, Any] = row["meta"] if isinstance(row.get("meta"), dict) else {}
        segments = [Segment(str(meta.get("segment_source") or "user"), text)]
        if use_system_prompt and isinstance(meta.get("system_prompt"), str) and meta["system_prompt"].strip():
            segments.insert(0, Segment("system", meta["system_prompt"]))
        t0 = time.perf_counter()
        verdict = detector.scan(segments, budget_ms=budget_ms)
        latencies.append((time.perf_counter() - t0) * 1000)
        incomplete += bool(getattr(verdict, "incomplete", False))
        flagged = verdict.flagged
        label = str(row.get("label", "")).lower()
        (attack_hits if label == "attack" else benign_hits).append(flagged)
        key = _group(meta)
        if key:
            groups[key].append(flagged)
            group_labels[key].add(label)
        if meta.get("variant"):
            variants[f"{meta.get('injection_type', '')}/{meta['variant']}".lstrip("/")].append(flagged)
    out: dict[str, Any] = {"n": len(attack_hits) + len(benign_hits)}
    if attack_hits:
        out["detection_rate"] = round(sum(attack_hits) / len(attack_hits), 4)
    if benign_hits:
        out["false_positive_rate"] = round(sum(benign_hits) / len(benign_hits), 4)
    out["p50_ms"] = round(percentile(latencies, 0.50), 3)
    out["p99_ms"] = round(percentile(latencies, 0.99), 3)
    out["threshold"] = detector.threshold
    out["excluded_training_rows"] = excluded
    out["incomplete"] = incomplete
    if groups:
        out["by_family"] = {k: _rate(v, group_labels[k]) for k, v in sorted(groups.items())}
    if variants:
        out["by_variant"] = {k: _rate(v, {"attack"}) for k, v in sorted(variants.items())}
    return out


def _rate(hits: list[bool], labels: set[str]) -> dict[str, Any]:
    key = "detection_rate" if labels == {"attack"} else "false_positive_rate" if labels == {"benign"} else "flagged_rate"
    return {"n": len(hits), key: round(sum(hits) / len(hits), 4) if hits else 0.0}


def run_security(args: argparse.Namespace) -> int:
    from intelligence.detectors.injection import DEFAULT_THRESHOLD, default_injection_detector
    from intelligence.detectors.manifest import role_of

    missing = [str(p) for p in args.dataset if not p.exists()]
    if missing:
        log.error("dataset not found: %s", ", ".join(missing))
        return 2
    detector = default_injection_detector(with_embeddings=not args.no_embeddings)
    detector.threshold = args.threshold if args.threshold is not None else DEFAULT_THRESHOLD
    if detector.embed is not None:
        detector.scan_text("warm-up: load the static embedding table before timing")
    log.info("threshold %.2f, embeddings %s", detector.threshold, "on" if detector.embed else "off")
    results: dict[str, Any] = {}
    for path in args.dataset:
        log.info("evaluating %s", path)
        role = role_of(path)
        results[path.name] = {
            "role": role["role"],
            "role_reason": role["why"],
            **evaluate_file(
                path,
                detector,
                include_training=args.include_training_rows,
                use_system_prompt=not args.ignore_system_prompt,
                budget_ms=args.budget_ms,
            ),
        }
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=False))
    else:
        _print_security(results)
    return 0


def _print_security(results: dict[str, Any]) -> None:
    for name, r in results.items():
        rate = (
            f"detection {r['detection_rate']:.1%}"
            if "detection_rate" in r
            else f"false positives {r.get('false_positive_rate', 0):.1%}"
        )
        print(
            f"{name} [{r['role']}]: n={r['n']} {rate} p50={r['p50_ms']:.1f}ms p99={r['p99_ms']:.1f}ms threshold={r['threshold']:.2f} (excluded training rows: {r['excluded_training_rows']})"
        )
        for title in ("by_family", "by_variant"):
            for k, v in (r.get(title) or {}).items():
                metric = next(m for m in ("detection_rate", "false_positive_rate", "flagged_rate") if m in v)
                print(f"    {k:55s} n={v['n']:5d} {metric.replace('_', ' ')} {v[metric]:.1%}")


# -- eval pii ---------------------------------------------------------------------------------------
# Presidio's URL recogniser finds what the synthetic dataset labels DOMAIN_NAME.
_GOLD_NAME = {"URL": "DOMAIN_NAME"}


def score_pii(rows: Iterable[dict[str, Any]], detector: Any) -> tuple[dict[str, dict[str, Any]], list[float]]:
    gold_n: dict[str, int] = defaultdict(int)
    gold_hit: dict[str, int] = defaultdict(int)
    pred_n: dict[str, int] = defaultdict(int)
    pred_hit: dict[str, int] = defaultdict(int)
    latencies: list[float] = []
    for row in rows:
        text = row["text"]
        gold = [g for g in (row.get("label") or []) if isinstance(g, dict) and "type" in g]
        t0 = time.perf_counter()
        spans = detector.find(text)
        latencies.append((time.perf_counter() - t0) * 1000)
        for s in spans:
            kind = _GOLD_NAME.get(s.kind, s.kind)
            pred_n[kind] += 1
            if any(g["type"] == kind and s.start < g["end"] and g["start"] < s.end for g in gold):
                pred_hit[kind] += 1
        for g in gold:
            gold_n[g["type"]] += 1
            if any(_GOLD_NAME.get(s.kind, s.kind) == g["type"] and s.start < g["end"] and g["start"] < s.end for s in spans):
                gold_hit[g["type"]] += 1
    supported = {_GOLD_NAME.get(e, e) for e in detector.supported}
    table: dict[str, dict[str, Any]] = {}
    for kind in sorted(set(gold_n) | set(pred_n)):
        table[kind] = {
            "gold": gold_n[kind],
            "predicted": pred_n[kind],
            "precision": round(pred_hit[kind] / pred_n[kind], 4) if pred_n[kind] else None,
            "recall": round(gold_hit[kind] / gold_n[kind], 4) if gold_n[kind] else None,
            "detected": kind in supported,
        }
    return table, latencies


def run_pii(args: argparse.Namespace) -> int:
    from intelligence.detectors.pii import DEFAULT_ENTITIES, EXTRA_ENTITIES, PiiDetector

    entities = DEFAULT_ENTITIES + (EXTRA_ENTITIES if args.all_recognizers else ())
    detector = PiiDetector(entities=entities, spacy_model=args.spacy_model)
    if not detector.detects_person:
        log.info("PERSON is not detected: no spaCy NER model is installed (blank pipeline)")
    results: dict[str, Any] = {}
    for path in args.dataset:
        if not path.exists():
            log.error("dataset not found: %s", path)
            return 2
        rows = list(_rows(path))
        table, latencies = score_pii(rows, detector)
        results[path.name] = {
            "n": len(rows),
            "match": "character overlap with a gold span of the same type",
            "entities": table,
            "p50_ms": round(percentile(latencies, 0.5), 3),
            "p99_ms": round(percentile(latencies, 0.99), 3),
        }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, r in results.items():
            print(f"{name}: n={r['n']} p50={r['p50_ms']:.1f}ms p99={r['p99_ms']:.1f}ms ({r['match']})")
            print(f"    {'type':20s} {'gold':>6s} {'pred':>6s} {'precision':>10s} {'recall':>8s}")
            for kind, v in r["entities"].items():
                p = "-" if v["precision"] is None else f"{v['precision']:.1%}"
                rc = "-" if v["recall"] is None else f"{v['recall']:.1%}"
                note = "" if v["detected"] else "  (not detected)"
                print(f"    {kind:20s} {v['gold']:6d} {v['predicted']:6d} {p:>10s} {rc:>8s}{note}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="eval")
    register(parser.add_subparsers())
    ns = parser.parse_args()
    raise SystemExit(ns.func(ns))
