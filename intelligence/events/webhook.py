"""Deliver feed events to an operator's webhook (``LLMPROXY_ALERT_WEBHOOK_URL``).

Each ``tick`` takes the undelivered events at or above ``min_severity`` (oldest first), POSTs each as
JSON and records the outcome on the row: ``delivered_at`` on a 2xx, ``delivery_attempts`` always. A
failed event is retried with exponential backoff (``backoff`` × 2^(attempts−1) seconds, capped) until
``max_attempts``; then it stays undelivered and is left alone. An event delivered once is never sent
again: candidates are only rows with ``delivered_at IS NULL``, locked ``FOR UPDATE SKIP LOCKED`` for
the tick, so several gateway replicas running a dispatcher never send the same event twice at once.

With ``LLMPROXY_ALERT_WEBHOOK_SECRET`` set, the body is signed: header ``x-llmproxy-signature:
sha256=<hex HMAC-SHA256 of the exact body bytes>``; ``x-llmproxy-event-id`` lets the receiver drop
a duplicate (a delivery whose 2xx was lost in transit is retried: at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from .models import SEVERITIES, Event

log = logging.getLogger("llmproxy.webhook")

URL_ENV = "LLMPROXY_ALERT_WEBHOOK_URL"
SECRET_ENV = "LLMPROXY_ALERT_WEBHOOK_SECRET"
SEVERITY_ENV = "LLMPROXY_ALERT_WEBHOOK_MIN_SEVERITY"
SIGNATURE_HEADER = "x-llmproxy-signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def event_payload(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at.isoformat() if row.at is not None else None,
        "kind": row.kind,
        "severity": row.severity,
        "title": row.title,
        "subject": row.subject,
        "detail": row.detail or {},
        "source": row.source,
    }


class WebhookDispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        url: str,
        *,
        secret: str | None = None,
        min_severity: str = "warning",
        max_attempts: int = 5,
        backoff: float = 2.0,
        max_backoff: float = 600.0,
        timeout: float = 5.0,
        batch_size: int = 50,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if min_severity not in SEVERITIES:
            raise ValueError(f"min_severity must be one of {SEVERITIES}, not {min_severity!r}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url must be http(s): {url!r}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.engine, self.url, self.secret = engine, url, secret or None
        self.severities = SEVERITIES[SEVERITIES.index(min_severity) :]
        self.max_attempts, self.backoff, self.max_backoff = max_attempts, backoff, max_backoff
        self.timeout, self.batch_size, self.interval = timeout, batch_size, interval
        self._clock = clock
        self._not_before: dict[int, float] = {}  # event id -> clock time of its next attempt (backoff)
        self._session: aiohttp.ClientSession | None = None
        self.stats = {"delivered": 0, "failed_attempts": 0, "given_up": 0}

    @classmethod
    def from_env(cls, engine: AsyncEngine, env: Mapping[str, str] | None = None, **kw: Any) -> WebhookDispatcher | None:
        env = os.environ if env is None else env
        url = env.get(URL_ENV, "").strip()
        if not url:
            return None
        return cls(
            engine,
            url,
            secret=env.get(SECRET_ENV) or None,
            min_severity=env.get(SEVERITY_ENV, "warning").strip().lower() or "warning",
            **kw,
        )

    async def tick(self) -> dict[str, int]:
        """One delivery round; returns counts: delivered, failed, waiting (in backoff)."""
        now = self._clock()
        waiting = [i for i, t in self._not_before.items() if t > now]
        summary = {"delivered": 0, "failed": 0, "waiting": len(waiting)}
        async with self.engine.begin() as conn:
            q = (
                select(Event)
                .where(
                    Event.delivered_at.is_(None), Event.delivery_attempts < self.max_attempts, Event.severity.in_(self.severities)
                )
                .order_by(Event.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            if waiting:
                q = q.where(Event.id.not_in(waiting))
            rows = (await conn.execute(q)).all()
            for row in rows:
                ok, why = await self._post(row)
                attempts = row.delivery_attempts + 1
                if ok:
                    await conn.execute(
                        update(Event)
                        .where(Event.id == row.id, Event.delivered_at.is_(None))
                        .values(delivered_at=func.now(), delivery_attempts=attempts)
                    )
                    self._not_before.pop(row.id, None)
                    summary["delivered"] += 1
                    self.stats["delivered"] += 1
                    continue
                await conn.execute(update(Event).where(Event.id == row.id).values(delivery_attempts=attempts))
                summary["failed"] += 1
                self.stats["failed_attempts"] += 1
                if attempts >= self.max_attempts:
                    self._not_before.pop(row.id, None)
                    self.stats["given_up"] += 1
                    log.warning("webhook: event %d not delivered after %d attempts (%s); giving up", row.id, attempts, why)
                else:
                    delay = min(self.backoff * 2 ** (attempts - 1), self.max_backoff)
                    self._not_before[row.id] = self._clock() + delay
                    log.info("webhook: event %d attempt %d failed (%s); retry in %.1fs", row.id, attempts, why, delay)
        return summary

    async def _post(self, row: Any) -> tuple[bool, str]:
        body = json.dumps(event_payload(row), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            "x-llmproxy-event-id": str(row.id),
            "x-llmproxy-delivery-attempt": str(row.delivery_attempts + 1),
            "user-agent": "llmproxy-webhook",
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(self.url, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.read()
                return 200 <= resp.status < 300, f"HTTP {resp.status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return False, type(exc).__name__

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except Exception as exc:  # noqa: BLE001 - the database may be away: try again next round
                    log.warning("webhook round failed: %s", exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
