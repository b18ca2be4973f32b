"""`llmproxy eval patterns`: how well does pattern memory recognise kinds of prompts?

Seeds a fresh memory with the dataset's train split through the gateway's own path (exchanges
rows -> PatternWorker -> PatternAssigner), then classifies the test split by the patterns and
nearest stored prompts each text falls into. Pattern ids carry no labels: a pattern's label is
the majority of its train members' labels, which is exactly how an operator would name it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("llmproxy.eval.patterns")

OOS_LABEL = "oos"
TEMPERATURE = 0.1  # softmax temperature over cosine similarities when voting
PATTERN_VOTES = 3  # nearest patterns that vote besides the k nearest prompts
DEFAULT_OOS_THRESHOLD = 0.45


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("patterns", help="measure pattern recognition on a labelled JSONL dataset")
    p.add_argument("--dataset", required=True, type=Path, help="JSONL lines {text, label, meta: {split}}")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (logs go to stderr)")
    p.add_argument(
        "--database-url",
        help="server to use (a temporary database is created on it and dropped); default: a temporary embedded Postgres",
    )
    p.add_argument("--threshold", type=float, default=None, help="join threshold (default: MemoryConfig's)")
    p.add_argument("--k", type=int, default=10, help="nearest stored prompts that vote (default 10)")
    p.add_argument(
        "--oos-threshold",
        type=float,
        default=DEFAULT_OOS_THRESHOLD,
        help="predict out-of-scope when the nearest pattern is less similar than this (default 0.45)",
    )
    p.add_argument("--eval-split", default="test", help="split to classify: test (report) or val (tuning)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed of the train order (live traffic is interleaved)")
    p.add_argument("--max-train", type=int, default=None, help="use only the first N shuffled train rows")
    p.add_argument("--max-eval", type=int, default=None, help="classify only the first N eval rows")
    p.add_argument("--no-maintenance", action="store_true", help="skip the merge/split job after seeding")
    p.add_argument(
        "--unsupervised-report",
        action="store_true",
        help="also report patterns formed vs true labels: count, purity, adjusted Rand index",
    )
    p.add_argument(
        "--lookup-report",
        action="store_true",
        help="also time the inline lookup (cache hit, exact-hash hit, embedding + HNSW miss)",
    )
    p.add_argument(
        "--lag-rate",
        type=float,
        default=0.0,
        help="after evaluating, insert exchanges at this rate (req/s) with the worker running, and report request-to-pattern lag",
    )
    p.add_argument("--lag-seconds", type=float, default=30.0, help="duration of the lag measurement")
    p.add_argument("--model", default=None, help="sentence-transformers model (default all-MiniLM-L6-v2)")
    p.set_defaults(func=run)


@dataclass
class Row:
    text: str
    label: str
    split: str


@dataclass
class EvalResult:
    accuracy: float | None
    macro_f1: float | None
    oos_recall: float | None
    n_train: int
    n_test: int
    n_patterns: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "oos_recall": self.oos_recall,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_patterns": self.n_patterns,
            **self.extra,
        }


def split_kind(split: str) -> str:
    """'oos_test' -> 'test': CLINC150 keeps its out-of-scope rows in splits of their own."""
    return split.rsplit("_", 1)[-1] if split.startswith("oos_") else split


def load_rows(path: Path) -> list[Row]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            d = json.loads(line)
            if not isinstance(d.get("text"), str) or "label" not in d:
                raise ValueError(f"{path}:{n}: need text and label")
            rows.append(Row(d["text"], str(d["label"]), split_kind(str((d.get("meta") or {}).get("split", "")))))
    return rows


def run(args: argparse.Namespace) -> int:
    real_stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # libraries that print must not corrupt --json
        try:
            result = asyncio.run(evaluate(args))
        except (ValueError, FileNotFoundError) as exc:
            log.error("%s", exc)
            return 2
    if args.json:
        real_stdout.write(json.dumps(result.as_dict(), sort_keys=True) + "\n")
    else:
        real_stdout.write(format_report(result) + "\n")
    real_stdout.flush()
    return 0


def format_report(r: EvalResult) -> str:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f}%"

    lines = [
        f"train rows {r.n_train}, eval rows {r.n_test}, patterns {r.n_patterns}",
        f"top-1 accuracy (in-scope) {pct(r.accuracy)}",
        f"macro-F1                  {pct(r.macro_f1)}",
        f"out-of-scope recall       {pct(r.oos_recall)}",
    ]
    if "embeddings_per_s" in r.extra:
        lines.append(
            f"seeding: {r.extra['embeddings_per_s']:.0f} embeddings/s, "
            f"{r.extra['seed_seconds']:.1f} s for the train split end to end"
        )
    if "unsupervised" in r.extra:
        u = r.extra["unsupervised"]
        lines.append(
            f"unsupervised: {u['n_patterns']} patterns for {u['n_labels']} labels, purity {u['purity']:.3f}, "
            f"adjusted Rand {u['adjusted_rand']:.3f} (before maintenance: {u['n_patterns_before_maintenance']})"
        )
    if "lookup" in r.extra:
        for tier, t in r.extra["lookup"].items():
            lines.append(f"lookup {tier}: p50 {t['p50_ms']:.3f} ms, p95 {t['p95_ms']:.3f} ms ({t['n']} lookups)")
    if "lag" in r.extra:
        g = r.extra["lag"]
        lines.append(
            f"lag at {g['rate']:.0f} req/s for {g['seconds']:.0f} s: p50 {g['p50_ms']:.0f} ms, "
            f"p95 {g['p95_ms']:.0f} ms, max {g['max_ms']:.0f} ms ({g['n']} requests)"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


async def evaluate(args: argparse.Namespace) -> EvalResult:
    import numpy as np

    from intelligence.embeddings import DEFAULT_MODEL, shared_embedder
    from intelligence.memory.assign import MemoryConfig

    rows = load_rows(args.dataset)
    rng = np.random.default_rng(args.seed)
    train = [rows[i] for i in rng.permutation(len(rows)) if rows[i].split == "train"]
    if args.max_train:
        train = train[: args.max_train]
    evaluation = [r for r in rows if r.split == args.eval_split][: args.max_eval or None]
    if not train or not evaluation:
        raise ValueError(f"need rows in split 'train' and '{args.eval_split}' (meta.split)")
    config = MemoryConfig() if args.threshold is None else MemoryConfig(join_threshold=args.threshold)
    log.info(
        "train %d rows, eval %d rows (%s), join threshold %.3f",
        len(train),
        len(evaluation),
        args.eval_split,
        config.join_threshold,
    )
    embedder = await asyncio.to_thread(shared_embedder, args.model or DEFAULT_MODEL)
    async with temporary_database(args.database_url) as url:
        return await _evaluate_on(url, embedder, config, train, evaluation, args)


@contextlib.asynccontextmanager
async def temporary_database(server_url: str | None):
    """A freshly migrated database, removed afterwards (embedded server, or a new DB on the given server)."""
    from intelligence.store.migrate import upgrade_async

    if server_url is None:
        from intelligence.embedded_pg import start_embedded

        with tempfile.TemporaryDirectory(prefix="llmproxy-eval-") as tmp:
            pg = await asyncio.to_thread(start_embedded, Path(tmp))
            try:
                await upgrade_async(pg.url)
                yield pg.url
            finally:
                await asyncio.to_thread(pg.stop)
        return

    import asyncpg

    from intelligence.store.engine import asyncpg_dsn

    name = f"llmproxy_eval_{uuid.uuid4().hex[:12]}"
    admin = asyncpg_dsn(server_url)
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(admin)
    url = urlunsplit(parts._replace(path="/" + name))
    try:
        await upgrade_async(url)
        yield url
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def _evaluate_on(
    url: str, embedder: Any, config: Any, train: list[Row], evaluation: list[Row], args: argparse.Namespace
) -> EvalResult:
    from intelligence.memory.maintenance import PatternMaintenance
    from intelligence.store.engine import make_engine

    engine = make_engine(url)
    try:
        started = time.perf_counter()
        ids, worker = await seed(engine, embedder, config, train)
        seed_seconds = time.perf_counter() - started
        labels_by_id = {rid: row.label for rid, row in zip(ids, train)}
        before = await _assignments(engine, ids)
        n_before = len({p for p in before.values() if p is not None})
        if not args.no_maintenance:
            report = await PatternMaintenance(engine, config).run()
            log.info("maintenance: %d merged, %d split", len(report.merged), len(report.split))
        assignments = await _assignments(engine, ids)
        n_patterns = len({p for p in assignments.values() if p is not None})
        log.info("seeded %d rows in %.1f s: %d patterns (%d before maintenance)", len(train), seed_seconds, n_patterns, n_before)

        pattern_labels: dict[int, Counter[str]] = defaultdict(Counter)
        for rid, pid in assignments.items():
            if pid is not None:
                pattern_labels[pid][labels_by_id[rid]] += 1
        started = time.perf_counter()
        vectors = await asyncio.to_thread(embedder.encode, [r.text for r in evaluation], 64)
        predictions = [
            await classify(
                engine,
                vec,
                labels_by_id,
                pattern_labels,
                k=args.k,
                oos_threshold=args.oos_threshold,
                ef_search=max(config.ef_search, 2 * args.k),
            )
            for vec in vectors
        ]
        log.info("classified %d rows in %.1f s", len(evaluation), time.perf_counter() - started)
        truth = [r.label for r in evaluation]
        extra: dict[str, Any] = {
            "embeddings_per_s": round(worker.stats.embeddings_per_s or 0.0, 1),
            "seed_seconds": round(seed_seconds, 1),
            "settings": {
                "join_threshold": config.join_threshold,
                "merge_threshold": config.merge_threshold,
                "k": args.k,
                "oos_threshold": args.oos_threshold,
                "seed": args.seed,
                "eval_split": args.eval_split,
                "maintenance": not args.no_maintenance,
                "model": args.model or "all-MiniLM-L6-v2",
            },
        }
        if args.unsupervised_report:
            # purity and ARI over in-scope train rows: "oos" is a catch-all, not a kind of prompt
            pairs = [
                (labels_by_id[rid], pid) for rid, pid in assignments.items() if pid is not None and labels_by_id[rid] != OOS_LABEL
            ]
            extra["unsupervised"] = {
                "n_patterns": n_patterns,
                "n_patterns_before_maintenance": n_before,
                "n_patterns_in_scope": len({p for _, p in pairs}),
                "n_labels": len({t for t, _ in pairs}),
                "purity": round(purity([t for t, _ in pairs], [p for _, p in pairs]), 4),
                "adjusted_rand": round(adjusted_rand([t for t, _ in pairs], [p for _, p in pairs]), 4),
            }
        if args.lookup_report:
            extra["lookup"] = await measure_lookup(
                engine, embedder, [r.text for r in train[:200]], [r.text for r in evaluation[:200]]
            )
        if args.lag_rate > 0:
            extra["lag"] = await measure_lag(
                engine, embedder, config, [r.text for r in evaluation], rate=args.lag_rate, seconds=args.lag_seconds
            )
        return EvalResult(
            accuracy=in_scope_accuracy(truth, predictions),
            macro_f1=macro_f1(truth, predictions),
            oos_recall=oos_recall(truth, predictions),
            n_train=len(train),
            n_test=len(evaluation),
            n_patterns=n_patterns,
            extra=extra,
        )
    finally:
        await engine.dispose()


def _record(request_id: str, text: str, at: datetime, client: str | None = None) -> Any:
    from intelligence.records import ExchangeRecord

    return ExchangeRecord(
        request_id=request_id,
        started_at=at,
        finished_at=at,
        method="POST",
        path="/v1/chat/completions",
        client_key_fp=client,
        model="eval",
        api="chat",
        status=200,
        prompt_user=text,
        finish_reason="stop",
    )


async def seed(engine: Any, embedder: Any, config: Any, train: list[Row]) -> tuple[list[str], Any]:
    """Record the train rows as exchanges and let the pattern worker process them all."""
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from intelligence.memory.worker import PatternWorker
    from intelligence.store.repositories import ExchangeRepository

    start = datetime.now(UTC) - timedelta(seconds=len(train) + 60)
    ids = [f"eval-train-{i:06d}" for i in range(len(train))]
    sessions = async_sessionmaker(engine)
    for lo in range(0, len(train), 1000):
        records = [_record(ids[i], train[i].text, start + timedelta(seconds=i)) for i in range(lo, min(lo + 1000, len(train)))]
        async with sessions() as session, session.begin():
            await ExchangeRepository(session).insert_batch(records)
    worker = PatternWorker(engine, embedder, batch=128, config=config)
    done = 0
    while (n := await worker.run_once()) > 0:
        done += n
        if done % 2048 < n:
            log.info("seeded %d/%d", done, len(train))
    return ids, worker


async def _assignments(engine: Any, ids: list[str]) -> dict[str, int | None]:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from intelligence.memory.repository import PatternRepository

    async with async_sessionmaker(engine)() as session:
        return await PatternRepository(session).pattern_assignments(ids)


async def classify(
    engine: Any,
    vector: Any,
    labels_by_id: dict[str, str],
    pattern_labels: dict[int, Counter[str]],
    *,
    k: int,
    oos_threshold: float,
    ef_search: int,
) -> str:
    """Vote of the k nearest stored prompts and the nearest patterns' label mix; out-of-scope when
    even the nearest pattern is far (the text would start a new pattern)."""
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from intelligence.memory.repository import PatternRepository

    async with async_sessionmaker(engine)() as session, session.begin():
        repo = PatternRepository(session)
        patterns = await repo.nearest_patterns(vector, k=PATTERN_VOTES, ef_search=ef_search)
        neighbours = await repo.similar_to_vector(vector, k=k, ef_search=ef_search)
    if not patterns or patterns[0].similarity < oos_threshold:
        return OOS_LABEL
    knn: Counter[str] = Counter()
    for n in neighbours:
        if n.request_id in labels_by_id:
            knn[labels_by_id[n.request_id]] += math.exp(n.similarity / TEMPERATURE)
    by_pattern: Counter[str] = Counter()
    for p in patterns:
        mix = pattern_labels.get(p.id)
        if not mix:
            continue
        size = sum(mix.values())
        weight = math.exp(p.similarity / TEMPERATURE) * math.log1p(size)
        for label, n in mix.items():
            by_pattern[label] += weight * n / size
    score: Counter[str] = Counter()
    for votes in (knn, by_pattern):
        total = sum(votes.values())
        for label, v in votes.items():
            score[label] += 0.5 * v / total
    return max(score.items(), key=lambda kv: (kv[1], kv[0]))[0] if score else OOS_LABEL


# --------------------------------------------------------------------------------------------- metrics


def in_scope_accuracy(truth: list[str], predicted: list[str]) -> float | None:
    pairs = [(t, p) for t, p in zip(truth, predicted) if t != OOS_LABEL]
    return None if not pairs else sum(t == p for t, p in pairs) / len(pairs)


def oos_recall(truth: list[str], predicted: list[str]) -> float | None:
    pairs = [(t, p) for t, p in zip(truth, predicted) if t == OOS_LABEL]
    return None if not pairs else sum(p == OOS_LABEL for _, p in pairs) / len(pairs)


def macro_f1(truth: list[str], predicted: list[str]) -> float | None:
    """Unweighted mean F1 over the labels present in the truth (oos included when present)."""
    labels = sorted(set(truth))
    if not labels:
        return None
    scores = []
    for label in labels:
        tp = sum(t == label and p == label for t, p in zip(truth, predicted))
        fp = sum(t != label and p == label for t, p in zip(truth, predicted))
        fn = sum(t == label and p != label for t, p in zip(truth, predicted))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def purity(truth: list[str], clusters: list[Any]) -> float:
    """Share of items whose cluster's majority label is their own."""
    by_cluster: dict[Any, Counter[str]] = defaultdict(Counter)
    for t, c in zip(truth, clusters):
        by_cluster[c][t] += 1
    return sum(max(c.values()) for c in by_cluster.values()) / max(len(truth), 1)


def adjusted_rand(truth: list[str], clusters: list[Any]) -> float:
    """Hubert and Arabie's adjusted Rand index (1 = identical partitions, about 0 = chance)."""

    def pairs(n: int) -> int:
        return n * (n - 1) // 2

    n = len(truth)
    table = Counter(zip(truth, clusters))
    sum_cells = sum(pairs(v) for v in table.values())
    sum_rows = sum(pairs(v) for v in Counter(truth).values())
    sum_cols = sum(pairs(v) for v in Counter(clusters).values())
    expected = sum_rows * sum_cols / pairs(n) if n > 1 else 0.0
    maximum = (sum_rows + sum_cols) / 2
    return 1.0 if maximum == expected else (sum_cells - expected) / (maximum - expected)


# --------------------------------------------------------------------------------------------- timings


def percentiles(samples_ms: list[float]) -> dict[str, Any]:
    ordered = sorted(samples_ms)

    def q(f: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(f * len(ordered)))], 3) if ordered else 0.0

    return {"n": len(ordered), "p50_ms": q(0.5), "p95_ms": q(0.95), "max_ms": round(ordered[-1], 3) if ordered else 0.0}


async def measure_lookup(engine: Any, embedder: Any, seen: list[str], unseen: list[str]) -> dict[str, Any]:
    """Wall time of PatternLookup.lookup per tier, with a budget large enough never to cut it short."""
    from intelligence.memory.canonical import canonical_prompt
    from intelligence.memory.lookup import PatternLookup

    lookup = PatternLookup(engine, embedder, budget_ms=10_000, cache_size=100_000)
    timings: dict[str, list[float]] = {"exact_hash": [], "cache_hit": [], "embed_and_index": []}

    async def timed(text: str) -> Any:
        started = time.perf_counter()
        match = await lookup.lookup(canonical_prompt(text))
        elapsed = (time.perf_counter() - started) * 1000
        if match is not None:
            tier = {"hash": "exact_hash", "cache": "cache_hit", "index": "embed_and_index"}[match.source]
            timings[tier].append(elapsed)
        return match

    for text in seen:  # seen before: answered from the database by hash, then from the cache
        await timed(text)
        await timed(text)
    for text in unseen:
        await timed(text)
    return {tier: percentiles(samples) for tier, samples in timings.items()}


# --------------------------------------------------------------------------------------------- lag


async def measure_lag(
    engine: Any, embedder: Any, config: Any, texts: list[str], *, rate: float, seconds: float
) -> dict[str, Any]:
    """Insert exchanges at ``rate``/s while a PatternWorker runs; lag = pattern row time - insert time
    (both from the database clock)."""
    from sqlalchemy import text as sql
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from intelligence.memory.worker import PatternWorker
    from intelligence.store.repositories import ExchangeRepository

    sessions = async_sessionmaker(engine)
    worker = PatternWorker(engine, embedder, config=config, poll_interval=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    total = int(rate * seconds)
    ids = [f"eval-lag-{uuid.uuid4().hex[:12]}-{i}" for i in range(total)]
    t0 = time.perf_counter()
    insert_seconds = seconds
    try:
        for i, rid in enumerate(ids):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            async with sessions() as session, session.begin():
                await ExchangeRepository(session).insert_batch(
                    [_record(rid, texts[i % len(texts)], datetime.now(UTC), client=f"lag-{i % 7}")]
                )
        insert_seconds = time.perf_counter() - t0
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            async with sessions() as session:
                done = (
                    await session.execute(sql("SELECT count(*) FROM exchange_embeddings WHERE request_id LIKE 'eval-lag-%'"))
                ).scalar_one()
            if done >= total:
                break
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task
    async with sessions() as session:
        lags = [
            float(v)
            for v in (
                await session.execute(
                    sql(
                        "SELECT extract(epoch FROM e.embedded_at - x.inserted_at) * 1000 FROM exchange_embeddings e "
                        "JOIN exchanges x USING (request_id) WHERE e.request_id LIKE 'eval-lag-%' ORDER BY 1"
                    )
                )
            ).scalars()
        ]
    return {"rate": rate, "seconds": seconds, "achieved_rate": round(total / max(insert_seconds, 1e-9), 1), **percentiles(lags)}
