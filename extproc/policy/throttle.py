"""Policy ``throttle`` actions: token buckets per (rule, key or client), in this process.

First version, said plainly: the buckets live in one sidecar process. With N replicas a client can
get up to N x rpm through before every replica has refused it. Hard per-key budgets that hold across
replicas are the gateway keys' own (``extproc.auth.UsageMeter``, shared through the database); policy
throttles are the fast, local brake that detector verdicts can pull. State survives snapshot swaps
(buckets are keyed by the rule's qualified id), and idle buckets are dropped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from .decision import Block, FiredRule, Mode, RequestDecision
from .facts import RequestFacts

_IDLE_SECONDS = 600.0
_SWEEP_EVERY = 1024  # checks between sweeps of idle buckets


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class ThrottleResult:
    block: Block | None  # the first enforcing throttle that ran dry
    fired: tuple[FiredRule, ...]  # every throttle that ran dry (enforce and monitor)


class Throttler:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_buckets: int = 100_000):
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._checks = 0

    def check(self, decision: RequestDecision, facts: RequestFacts) -> ThrottleResult:
        """Take one token from every bucket the decision's throttles name; synchronous, no I/O."""
        if not decision.throttles:
            return _NOTHING
        now = self.clock()
        self._checks += 1
        if self._checks % _SWEEP_EVERY == 0 or len(self._buckets) > self.max_buckets:
            self._sweep(now)
        block: Block | None = None
        fired: list[FiredRule] = []
        for t in decision.throttles:
            who = facts.key_id if t.per == "key" else None
            who = who or facts.client or facts.client_addr
            if who is None:
                continue  # nobody to count against: an anonymous request is not throttled here
            rate = t.rpm / 60.0
            bucket = self._buckets.get((t.rule, who))
            if bucket is None:
                bucket = self._buckets[(t.rule, who)] = _Bucket(float(t.burst), now)
            else:
                bucket.tokens = min(float(t.burst), bucket.tokens + (now - bucket.updated) * rate)
                bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                continue
            wait = max(1, math.ceil((1.0 - bucket.tokens) / rate))
            policy, _, rule = t.rule.partition("/")
            note = f"over {t.rpm} requests per minute per {t.per}"
            fired.append(FiredRule(rule, policy, t.mode, ("throttle",), note))
            if t.mode is Mode.ENFORCE and block is None:
                block = Block(429, f"llmproxy: rate limited by policy rule {t.rule} ({note}); retry in {wait}s",
                              "policy_throttled", t.rule, retry_after=wait)
        return ThrottleResult(block, tuple(fired)) if fired else _NOTHING

    def _sweep(self, now: float) -> None:
        idle = [k for k, b in self._buckets.items() if now - b.updated > _IDLE_SECONDS]
        for k in idle:
            del self._buckets[k]
        if len(self._buckets) > self.max_buckets:  # still too many: forget the oldest (they refill anyway)
            for k, _ in sorted(self._buckets.items(), key=lambda kv: kv[1].updated)[: len(self._buckets) - self.max_buckets]:
                del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)


_NOTHING = ThrottleResult(None, ())
