"""Policy ``throttle`` actions: a local token bucket plus a per-minute count shared by all replicas.

Two checks per (rule, subject), subject = the gateway key id when one authenticated the request, else
the peer address Envoy saw. Never the fingerprint of a passthrough credential: a client can send a
new made-up key with every request, but it cannot pick its address as freely. Both checks are
synchronous, no I/O:

* the **token bucket** of this process (capacity ``burst``, refilled at ``rpm``/60 per second) caps
  how fast one replica admits; it answers alone when there is no shared counter;
* the **shared window** (``shared``, an :class:`intelligence.throttle.SharedThrottleCounts`) counts
  admissions per UTC calendar minute over every replica: a request is refused once the minute's
  total (other replicas' counts as last read, about a second old, plus this replica's own) reaches
  ``max(rpm, burst)``; Retry-After is then the time to the next minute.

  Between two reads of the totals a replica admits at most its fair share of what is left (N live
  replicas, counted through heartbeats: ``ceil((left - (N-1) x share held by the others) / N)``), so
  N replicas hit at full speed as a minute opens stay within ``max(rpm, burst)`` plus rounding
  (< N); docs/policy.md derives the bound. A request refused for its share gets Retry-After 1.

Without a database (or while the live-replica count is unknown) a replica spends all it believes is
left, as before shares: the overshoot is then bounded by the buckets (``burst + rpm x 2s/60`` per
other replica), and with the database down for good, per process. A refused request consumes
nothing. Buckets survive snapshot swaps (keyed by the rule's qualified id) and idle ones are dropped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .decision import Block, FiredRule, Mode, RequestDecision
from .facts import RequestFacts

if TYPE_CHECKING:
    from intelligence.throttle.shared import SharedThrottleCounts

log = logging.getLogger("llmproxy.policy.throttle")

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
    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_buckets: int = 100_000, shared: SharedThrottleCounts | None = None
    ):
        self.clock = clock
        self.max_buckets = max_buckets
        self.shared = shared
        # over the limit (enforce or monitor); share: this replica's share until its next read was spent
        self.stats = {"bucket_refused": 0, "window_refused": 0, "share_refused": 0}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._checks = 0
        self._said_local = False

    def check(self, decision: RequestDecision, facts: RequestFacts) -> ThrottleResult:
        """Count the request against every throttle the decision names; synchronous, no I/O."""
        if not decision.throttles:
            return _NOTHING
        now = self.clock()
        self._checks += 1
        if self._checks % _SWEEP_EVERY == 0 or len(self._buckets) > self.max_buckets:
            self._sweep(now)
        shared = self.shared
        window = shared.window() if shared is not None else None
        if shared is None and not self._said_local:
            self._said_local = True
            log.info("policy throttles count in this process only (no shared database counter)")
        block: Block | None = None
        fired: list[FiredRule] = []
        for t in decision.throttles:
            who = facts.key_id or facts.client_addr or facts.client
            if who is None:
                continue  # nobody to count against: an anonymous request is not throttled here
            rate = t.rpm / 60.0
            bucket = self._buckets.get((t.rule, who))
            if bucket is None:
                bucket = self._buckets[(t.rule, who)] = _Bucket(float(t.burst), now)
            else:
                bucket.tokens = min(float(t.burst), bucket.tokens + (now - bucket.updated) * rate)
                bucket.updated = now
            wait = 0
            if bucket.tokens < 1.0:
                self.stats["bucket_refused"] += 1
                wait = max(1, math.ceil((1.0 - bucket.tokens) / rate))
            refusal = None
            if shared is not None and window is not None:
                refusal = shared.refusal(t.rule, who, window.start, max(t.rpm, t.burst))
            if refusal == "full" and window is not None:
                self.stats["window_refused"] += 1
                wait = max(wait, 1, math.ceil(window.seconds_left))  # the bucket may refill sooner: no use
            elif refusal == "share":  # the next flush (about a second) brings a new share or the minute is full
                self.stats["share_refused"] += 1
                wait = max(wait, 1)
            if not wait:
                bucket.tokens -= 1.0
                if shared is not None and window is not None:
                    shared.add(t.rule, who, window.start)
                continue
            policy, _, rule = t.rule.partition("/")
            note = f"over {t.rpm} requests per minute per {t.per}"
            fired.append(FiredRule(rule, policy, t.mode, ("throttle",), note))
            if t.mode is Mode.ENFORCE and block is None:
                block = Block(
                    429,
                    f"llmproxy: rate limited by policy rule {t.rule} ({note}); retry in {wait}s",
                    "policy_throttled",
                    t.rule,
                    retry_after=wait,
                )
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
