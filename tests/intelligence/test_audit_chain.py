"""The hash chain's pure parts, and the invariant the whole design rests on: a payload, once
normalised, hashes the same after a trip through Postgres jsonb."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone

import asyncpg

from intelligence.audit.chain import (
    GENESIS_HASH,
    HASH_MISMATCH,
    HEAD_MISMATCH,
    MISSING_ROW,
    PREV_HASH_MISMATCH,
    AuditEntry,
    ChainChecker,
    canonical_json,
    entry_hash,
    normalise_payload,
    seal,
)
from intelligence.store.engine import asyncpg_dsn

T0 = datetime(2026, 1, 1, 9, 30, tzinfo=UTC)


def _chain(n: int) -> list[AuditEntry]:
    out, prev = [], (0, GENESIS_HASH)
    for i in range(n):
        e = seal(prev, T0 + timedelta(seconds=i), "actor", "policy_decision", f"s{i}", {"i": i})
        out.append(e)
        prev = (e.id, e.hash)
    return out


def test_canonical_json_is_order_and_spelling_independent() -> None:
    assert canonical_json({"b": 1, "a": [1.0, 2.5]}) == canonical_json({"a": [1, 2.5], "b": 1.0}) == '{"a":[1,2.5],"b":1}'
    assert canonical_json({"é": "ü"}) == '{"é":"ü"}'


def test_hash_covers_every_field() -> None:
    base = dict(id=1, ts=T0, actor="a", kind="k", subject="s", payload={"x": 1})
    h = entry_hash(GENESIS_HASH, **base)
    assert h == entry_hash(GENESIS_HASH, **{**base, "ts": T0.astimezone(timezone(timedelta(hours=5)))})
    for field, other in (
        ("id", 2),
        ("ts", T0 + timedelta(microseconds=1)),
        ("actor", "b"),
        ("kind", "j"),
        ("subject", "t"),
        ("payload", {"x": 2}),
    ):
        assert entry_hash(GENESIS_HASH, **{**base, field: other}) != h, field
    assert entry_hash("f" * 64, **base) != h


def test_checker_on_intact_and_broken_chains() -> None:
    entries = _chain(4)
    ok = ChainChecker()
    assert all(ok.feed(e) for e in entries) and ok.finish((4, entries[-1].hash)) is None and ok.checked == 4

    bad = ChainChecker()
    tampered = [entries[0], AuditEntry(**{**entries[1].to_dict(), "ts": entries[1].ts, "payload": {"i": 99}}), *entries[2:]]
    assert not all(bad.feed(e) for e in tampered)
    assert (bad.broken.entry_id, bad.broken.reason) == (2, HASH_MISMATCH)
    assert not bad.feed(entries[3])  # once broken, stays broken

    gap = ChainChecker()
    for e in (entries[0], entries[2]):
        gap.feed(e)
    assert (gap.broken.entry_id, gap.broken.reason) == (2, MISSING_ROW)

    relinked = ChainChecker()
    relinked.feed(entries[0])
    relinked.feed(AuditEntry(**{**entries[1].to_dict(), "ts": entries[1].ts, "prev_hash": "e" * 64}))
    assert (relinked.broken.entry_id, relinked.broken.reason) == (2, PREV_HASH_MISMATCH)

    first_missing = ChainChecker()
    first_missing.feed(entries[1])
    assert (first_missing.broken.entry_id, first_missing.broken.reason) == (1, MISSING_ROW)


def test_checker_end_against_the_head() -> None:
    entries = _chain(3)
    for head, expected in (
        ((5, "x" * 64), (4, MISSING_ROW)),
        ((2, entries[1].hash), (3, HEAD_MISMATCH)),
        ((3, "y" * 64), (3, HEAD_MISMATCH)),
    ):
        checker = ChainChecker()
        for e in entries:
            checker.feed(e)
        broken = checker.finish(head)
        assert (broken.entry_id, broken.reason) == expected, head
    empty = ChainChecker()
    assert empty.finish((0, GENESIS_HASH)) is None and empty.finish(None) is None
    assert ChainChecker().finish((1, "z")).reason == MISSING_ROW


def test_mid_chain_start_accepts_the_first_entry() -> None:
    entries = _chain(5)
    checker = ChainChecker(start=None)
    assert all(checker.feed(e) for e in entries[2:]) and checker.checked == 3


def test_entry_dict_round_trip() -> None:
    e = _chain(1)[0]
    assert AuditEntry.from_dict(json.loads(json.dumps(e.to_dict()))) == e


def _random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice(
            [
                0.1,
                1e16,
                1e300,
                -2.5e-300,
                5e-324,
                1.0,
                -0.0,
                123456.789,
                float("inf"),
                float("nan"),
                2.0**53,
                1e-7,
                3.141592653589793,
                rng.uniform(-1e6, 1e6),
                rng.random() * 10 ** rng.randrange(-20, 20),
            ]
        )
    if kind == 1:
        return rng.choice([0, -1, 2**63 - 1, 2**80, -(2**70)])
    if kind == 2:
        return "".join(rng.choice(["a", "é", "\x00", "\ud800", "\n", '"', "\\", "😀", "\u202e"]) for _ in range(rng.randrange(6)))
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5):
        return rng.randrange(-1000, 1000)
    if kind in (6, 7):
        return {
            str(_random_value(rng, depth + 1))[:10] if rng.random() < 0.5 else f"k{i}": _random_value(rng, depth + 1)
            for i in range(rng.randrange(4))
        }
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]


async def test_normalised_payloads_hash_the_same_after_jsonb(pg_server_url: str) -> None:
    rng = random.Random(20260301)
    conn = await asyncpg.connect(asyncpg_dsn(pg_server_url))
    try:
        for _ in range(400):
            payload = normalise_payload({"v": _random_value(rng)})
            back = json.loads(await conn.fetchval("SELECT CAST($1 AS jsonb)::text", json.dumps(payload)))
            assert canonical_json(back) == canonical_json(payload), payload
    finally:
        await conn.close()
