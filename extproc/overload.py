"""Load shedding: an overloaded sidecar refuses new exchanges at once instead of queueing them.

Past its capacity the sidecar falls behind, and every exchange slows down together until Envoy's
ext_proc ``message_timeout`` (10 s) or its circuit breaker fails them all. A fast 503 is cheaper for
everyone than a request that waits 10 s to fail, and refusing the ones that already waited longest
is what drains the backlog (the body, whose screening is most of the cost, is never read).

Two measures, either of which sheds:

- **How long the request waited** before its headers reached a stage: Envoy's ``request.time``
  attribute (when the request arrived) against this process's clock. Measured under overload, this
  is where the backlog is: streams wait for grpc.aio to accept them (6 s) while the event loop itself
  is less than a second behind. Needs Envoy and the sidecar on one clock (one host or pod, as
  deployed); a request time in the future counts as no wait.
- **How late the event loop runs** (a timer every ``SAMPLE_S``, smoothed so that one pause, a garbage
  collection, does not shed): a loop that stays behind delays every message of every exchange.
  Shedding on it stops once the lag is back under half the threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

log = logging.getLogger("llmproxy.overload")

# A fifth of ext_proc's message_timeout. Not 1 s: the 10-minute soak at 150 req/s on 2 cores had a minute
# of waits up to 1.3 s (the machine oversubscribed), and 1 s turned 55 of those requests into 503s.
DEFAULT_SHED_WAIT_MS = 2_000.0
SAMPLE_S = 0.05
LOG_EVERY_S = 10.0  # one log line per this many seconds of shedding, with the count


class Shedder:
    def __init__(self, *, threshold_ms: float = DEFAULT_SHED_WAIT_MS, on_shed: Callable[[str], None] | None = None) -> None:
        self.threshold_ms = threshold_ms
        self.lag_ms = 0.0  # the event loop's lateness, smoothed
        self.lagging = False
        self.shed = {"waited": 0, "loop_lag": 0}  # exchanges refused so far, by reason
        self.on_shed = on_shed  # a metrics hook: (reason) per refusal
        self._task: asyncio.Task[None] | None = None
        self._logged_at = 0.0

    @property
    def enabled(self) -> bool:
        return self.threshold_ms > 0

    @property
    def shedding(self) -> bool:
        return self.lagging

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="llmproxy-loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def admit(self, waited_ms: float | None = None) -> bool:
        """Whether a new exchange may start now; ``waited_ms``: how long its request has waited so far."""
        if not self.enabled:
            return True
        if self.lagging:
            reason = "loop_lag"
        elif waited_ms is not None and waited_ms > self.threshold_ms:
            reason = "waited"
        else:
            return True
        self.shed[reason] += 1
        if self.on_shed is not None:
            self.on_shed(reason)
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "sidecar overloaded: refusing new requests with 503 (%s; threshold %.0f ms, event loop %.0f ms behind); "
                "refused so far: %s",
                f"this one waited {waited_ms:.0f} ms" if reason == "waited" else "event loop behind",
                self.threshold_ms, self.lag_ms, self.shed,
            )  # fmt: skip
        return False

    def observe(self, late_ms: float) -> None:
        """One sample of the loop: how many ms after its due time the timer ran."""
        alpha = 0.5 if late_ms > self.lag_ms else 0.2  # rises fast, falls slowly
        self.lag_ms += alpha * (late_ms - self.lag_ms)
        if not self.lagging and self.lag_ms >= self.threshold_ms:
            self.lagging = True
        elif self.lagging and self.lag_ms < self.threshold_ms / 2:
            self.lagging = False
            log.warning("sidecar event loop back on time (%.0f ms behind); refused so far: %s", self.lag_ms, self.shed)

    async def _run(self) -> None:
        while True:
            due = time.perf_counter() + SAMPLE_S
            await asyncio.sleep(SAMPLE_S)
            self.observe(max(0.0, (time.perf_counter() - due) * 1000))


def request_age_ms(request_time: str | None, now: float | None = None) -> float | None:
    """How long ago Envoy received the request, from its ``request.time`` attribute (RFC 3339, as
    Envoy sends a timestamp: ``2026-12-07T14:21:40.407123456Z``); None when absent or unreadable."""
    if not request_time:
        return None
    text = request_time.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python reads at most microseconds: drop digits past the sixth of a fraction.
    dot = text.find(".")
    if dot >= 0:
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        text = text[: min(end, dot + 7)] + text[end:]
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    age = ((time.time() if now is None else now) - at.timestamp()) * 1000
    return max(age, 0.0)


__all__ = ["DEFAULT_SHED_WAIT_MS", "Shedder", "request_age_ms"]
