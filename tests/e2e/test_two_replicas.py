"""Two real gateway replicas (two `llmproxy up` stacks: two Envoys, two sidecars) on ONE database:
per-key request budgets and policy throttles are enforced across both (not per process), and a key
revoked in the shared database is refused by both.

The limits asserted are the documented cross-replica bounds: `limit + (N - 1)` for N = 2 replicas
(docs/keys-and-audit.md "Budgets across replicas", docs/policy.md "Throttling"). Per-process counters
would admit up to 2 x limit with the traffic offered here, so the assertions can tell the two apart.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from intelligence.store.engine import asyncpg_dsn
from intelligence.store.migrate import upgrade
from tests.conftest import database_url

from .conftest import LLMPROXY, Stack, start_stack

pytestmark = pytest.mark.e2e

REPLICAS = 2
KEY_RPM = 20
THROTTLE_RPM = 12
# The documented bound for N replicas: the limit plus the rounding of N shares.
KEY_BOUND = KEY_RPM + (REPLICAS - 1)
THROTTLE_BOUND = THROTTLE_RPM + (REPLICAS - 1)

POLICY = f"""
version: 1
name: replicas
rules:
  - id: slow-team
    match: {{keys: [throttled-*]}}
    actions:
      throttle: {{rpm: {THROTTLE_RPM}, per: key}}
"""

# Time one load phase may take; a phase starts only if the current UTC minute has this much left, so
# every request of a phase falls in one budget window (checked afterwards, with one retry).
LOAD_SECONDS = 4.0  # each of the two load patterns
PHASE_SECONDS = 2 * LOAD_SECONDS + 6


def keys_cli(db_url: str, *args: str) -> dict:
    r = subprocess.run(
        [LLMPROXY, "keys", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATABASE_URL": db_url},
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


async def _create_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, pg_server_url, fake) -> Iterator[list[Stack]]:
    """Two stacks on a fresh database of their own, so the replica count each sees is exactly 2."""
    name = f"t_replicas_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(pg_server_url, name))
    db_url = database_url(pg_server_url, name)
    upgrade(db_url)
    tmp = tmp_path_factory.mktemp("replicas")
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY)
    stacks: list[Stack] = []
    try:
        for i in range(REPLICAS):
            replica_dir = tmp / f"r{i}"
            replica_dir.mkdir()
            stacks.append(
                start_stack(
                    replica_dir,
                    db_url,
                    fake,
                    "--auth",
                    "required",
                    "--policy-file",
                    str(policy),
                    env={"LLMPROXY_OPENAI_API_KEY": "sk-operator-openai"},
                )
            )
        _wait_for_replica_count(db_url, REPLICAS)
        yield stacks
    finally:
        codes = [s.stop() for s in stacks]
        asyncio.run(_drop_database(pg_server_url, name))
    assert codes == [0] * REPLICAS, f"llmproxy up exit codes {codes}"


def _wait_for_replica_count(db_url: str, n: int, timeout: float = 10.0) -> None:
    """Wait until both sidecars beat into replica_heartbeats: until a replica has counted the other it
    computes its shares for N = 1 (all that is left), which is not the situation under test."""

    async def live() -> int:
        conn = await asyncpg.connect(asyncpg_dsn(db_url))
        try:
            return await conn.fetchval("select count(*) from replica_heartbeats where last_seen > now() - interval '10 seconds'")
        finally:
            await conn.close()

    deadline = time.monotonic() + timeout
    while (count := asyncio.run(live())) < n:
        assert time.monotonic() < deadline, f"only {count} of {n} replicas heartbeating"
        time.sleep(0.2)
    time.sleep(1.5)  # one more flush interval, so each replica has read N = 2 itself


@dataclass(frozen=True)
class Outcome:
    replica: int
    status: int
    code: str | None
    retry_after: str | None
    sent: float  # wall clock
    minute_sent: int
    minute_done: int


def _call(client: httpx.Client, replica: int, key: str, text: str) -> Outcome:
    sent = time.time()
    r = client.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
    )
    done = time.time()
    code = None
    if r.status_code != 200:
        code = r.json().get("error", {}).get("code")
    return Outcome(replica, r.status_code, code, r.headers.get("retry-after"), sent, int(sent // 60), int(done // 60))


def _wait_for_room_in_minute(seconds: float) -> None:
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.3)


def _offer_load(stacks: list[Stack], key: str, seconds_each: float, max_requests: int) -> tuple[list[Outcome], float]:
    """Steady traffic spread over both replicas for a few flush intervals: first one request at a time
    alternating between them, then 4 in flight (still alternating). Bounded by time and by count."""
    clients = [httpx.Client(base_url=s.url, timeout=10) for s in stacks]
    n = len(stacks)
    started = time.monotonic()
    try:
        outcomes: list[Outcome] = []
        until = time.monotonic() + seconds_each
        i = 0
        while time.monotonic() < until and i < max_requests:
            outcomes.append(_call(clients[i % n], i % n, key, f"seq {i}"))
            i += 1
            time.sleep(0.05)

        until = time.monotonic() + seconds_each

        def worker(w: int) -> list[Outcome]:
            mine: list[Outcome] = []
            j = 0
            while time.monotonic() < until and j < max_requests // 4:
                replica = (w + j) % n
                mine.append(_call(clients[replica], replica, key, f"par {w}.{j}"))
                j += 1
                time.sleep(0.05)
            return mine

        with ThreadPoolExecutor(max_workers=4) as pool:
            for done in pool.map(worker, range(4), timeout=seconds_each + 30):
                outcomes.extend(done)
        return outcomes, time.monotonic() - started
    finally:
        for c in clients:
            c.close()


def _load_in_one_window(stacks: list[Stack], key: str) -> tuple[list[Outcome], float]:
    """Run the load within one UTC minute; if it crossed a boundary anyway, run it once more in the
    next (fresh) window, which the first run cannot have touched."""
    for _attempt in range(2):
        _wait_for_room_in_minute(PHASE_SECONDS)
        outcomes, elapsed = _offer_load(stacks, key, seconds_each=LOAD_SECONDS, max_requests=400)
        minutes = {o.minute_sent for o in outcomes} | {o.minute_done for o in outcomes}
        if len(minutes) == 1:
            return outcomes, elapsed
        time.sleep(max(0.0, 60 - time.time() % 60 + 0.3))  # the crossed-into window is spent: skip it
    raise AssertionError("load crossed a minute boundary twice")


def _assert_shared_limit(outcomes: list[Outcome], limit: int, bound: int, refusal_code: str) -> Counter:
    admitted = Counter(o.replica for o in outcomes if o.status == 200)
    total = sum(admitted.values())
    offered_per_replica = Counter(o.replica for o in outcomes)
    # The traffic gives per-process counters room for 2 x limit: each replica alone is offered more.
    assert all(n > limit for n in offered_per_replica.values()), offered_per_replica
    assert total <= bound, f"admitted {total} across replicas, bound {bound}: {admitted}"
    assert total < 2 * limit
    # Not vacuous: both replicas served, and the shared window was actually used up (most of it).
    assert all(admitted[i] > 0 for i in range(REPLICAS)), admitted
    t0 = min(o.sent for o in outcomes)
    timeline = [(round(o.sent - t0, 2), o.replica, o.status) for o in sorted(outcomes, key=lambda o: o.sent)]
    assert total >= math.ceil(limit * 0.75), f"only {total} of {limit} admitted: {admitted} {timeline}"
    refused = [o for o in outcomes if o.status != 200]
    assert refused and {o.status for o in refused} == {429}, Counter(o.status for o in refused)
    assert {o.code for o in refused} == {refusal_code}
    assert all(o.retry_after is not None and int(o.retry_after) >= 1 for o in refused)
    assert {o.replica for o in refused} == set(range(REPLICAS))  # both replicas refused: neither had it all
    return admitted


def _seconds_to_reach(outcomes: list[Outcome], limit: int) -> float | None:
    """When, from the first request, the admitted count reached the limit (None: it never did)."""
    t0 = min(o.sent for o in outcomes)
    count = 0
    for o in sorted(outcomes, key=lambda o: o.sent):
        count += o.status == 200
        if count >= limit:
            return o.sent - t0
    return None


def _report(what: str, outcomes: list[Outcome], admitted: Counter, limit: int, elapsed: float) -> None:
    reached = _seconds_to_reach(outcomes, limit)
    print(
        f"\n{what}: offered {len(outcomes)} in {elapsed:.1f}s, admitted {sum(admitted.values())} "
        f"(per replica {dict(sorted(admitted.items()))}), limit reached after "
        f"{'never' if reached is None else f'{reached:.1f}s'}"
    )


def test_key_rpm_budget_is_shared_by_two_replicas(replicas) -> None:
    key = keys_cli(replicas[0].db_url, "create", "--name", "budgeted", "--rpm", str(KEY_RPM))["key"]
    outcomes, elapsed = _load_in_one_window(replicas, key)
    admitted = _assert_shared_limit(outcomes, KEY_RPM, KEY_BOUND, "budget_exceeded")
    _report(f"key rpm={KEY_RPM}", outcomes, admitted, KEY_RPM, elapsed)


def test_policy_throttle_is_shared_by_two_replicas(replicas) -> None:
    key = keys_cli(replicas[0].db_url, "create", "--name", "throttled-team")["key"]
    outcomes, elapsed = _load_in_one_window(replicas, key)
    admitted = _assert_shared_limit(outcomes, THROTTLE_RPM, THROTTLE_BOUND, "policy_throttled")
    _report(f"throttle rpm={THROTTLE_RPM}", outcomes, admitted, THROTTLE_RPM, elapsed)


def test_revoked_key_is_refused_by_both_replicas(replicas) -> None:
    created = keys_cli(replicas[0].db_url, "create", "--name", "to-revoke")
    key = created["key"]
    with httpx.Client(timeout=10) as client:

        def status(stack: Stack) -> httpx.Response:
            return client.post(
                stack.url + "/v1/chat/completions",
                headers={"authorization": f"Bearer {key}"},
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            )

        # both replicas must have loaded the new key before the revocation means anything
        deadline = time.monotonic() + 10
        while not all(status(s).status_code == 200 for s in replicas):
            assert time.monotonic() < deadline, "a replica never accepted the new key"
            time.sleep(0.2)
        asked_at = time.monotonic()
        keys_cli(replicas[0].db_url, "revoke", created["id"])
        revoked_at = time.monotonic()  # the revocation is committed once the CLI returns
        refused_after: dict[int, float] = {}
        while len(refused_after) < REPLICAS and time.monotonic() - revoked_at < 10:
            for i, s in enumerate(replicas):
                if i in refused_after:
                    continue
                r = status(s)
                if r.status_code == 401:
                    assert "revoked" in r.json()["error"]["message"]
                    refused_after[i] = time.monotonic() - revoked_at
            time.sleep(0.1)
    assert sorted(refused_after) == list(range(REPLICAS)), f"refused only by {refused_after} within 10 s"
    print(
        f"\nrevocation (CLI took {revoked_at - asked_at:.2f}s) refused by the replicas "
        f"{', '.join(f'{t:.2f}s' for _, t in sorted(refused_after.items()))} after it returned"
    )
