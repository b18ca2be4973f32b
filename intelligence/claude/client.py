"""ClaudeClient: the one way the project asks Claude anything.

Every question is a structured one: Claude must answer by calling a single tool whose input schema
is the answer's JSON schema. The client owns retries (the SDK's own are off so attempts can be
counted and classified), the concurrency limit, the daily budget and the call record; callers get a
StructuredResult and never an exception for API, parse or budget problems.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import anthropic
import jsonschema
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from .models import ClaudeCall
from .prices import call_cost
from .settings import ClaudeSettings
from .spend import spent_since, utc_midnight

log = logging.getLogger(__name__)

EPHEMERAL = {"type": "ephemeral"}
_ERROR_TEXT_LIMIT = 500


@dataclass(frozen=True)
class StructuredResult:
    ok: bool
    data: dict | None
    outcome: str  # ok | error | parse_error | timeout | overloaded | rate_limited | budget_exhausted | local_only
    error: str | None
    call_id: int | None
    cost_usd: float
    latency_ms: float
    attempts: int = 0
    tokens: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Failure:
    outcome: str
    retryable: bool
    message: str
    retry_after_s: float | None = None


@dataclass
class _Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def add(self, usage: Any) -> None:
        self.input_tokens += int(getattr(usage, "input_tokens", 0) or 0)
        self.output_tokens += int(getattr(usage, "output_tokens", 0) or 0)
        self.cache_read_tokens += int(getattr(usage, "cache_read_input_tokens", 0) or 0)
        self.cache_write_tokens += int(getattr(usage, "cache_creation_input_tokens", 0) or 0)

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "input": self.input_tokens,
            "output": self.output_tokens,
            "cache_read": self.cache_read_tokens,
            "cache_write": self.cache_write_tokens,
        }


def _retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, retry-after seconds or HTTP date)."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _error_type(exc: anthropic.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    return str(error.get("type", "")) if isinstance(error, dict) else ""


def classify(exc: BaseException, timeout_s: float | None = None) -> _Failure:
    """Which outcome an exception means and whether another attempt may help."""
    detail = str(exc) or (f"no answer within {timeout_s:g} s" if timeout_s is not None else "")
    text = f"{type(exc).__name__}: {detail}"[:_ERROR_TEXT_LIMIT]
    # APITimeoutError subclasses APIConnectionError: test it first.
    if isinstance(exc, (anthropic.APITimeoutError, TimeoutError)):
        return _Failure("timeout", True, text)
    if isinstance(exc, anthropic.APIConnectionError):
        return _Failure("error", True, text)
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        retry_after = _retry_after(exc.response.headers if exc.response is not None else None)
        if status == 429:
            return _Failure("rate_limited", True, text, retry_after)
        if status == 529 or _error_type(exc) == "overloaded_error":
            return _Failure("overloaded", True, text, retry_after)
        if status >= 500 or status == 408:
            return _Failure("error", True, text, retry_after)
        return _Failure("error", False, text)
    return _Failure("error", False, text)


class DailyBudget:
    """USD and tokens spent since UTC midnight, from claude_calls, refreshed every few seconds.

    Between refreshes the process adds its own calls, so a burst of calls sees its own spend at
    once; other replicas' spend shows up at the next refresh.
    """

    def __init__(self, settings: ClaudeSettings, engine: AsyncEngine | None) -> None:
        self._settings = settings
        self._engine = engine
        self._day: date | None = None
        self._usd = 0.0
        self._tokens = 0
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def spent(self) -> tuple[float, int]:
        return self._usd, self._tokens

    async def _refresh(self) -> None:
        midnight = utc_midnight()
        if self._day != midnight.date():
            self._day, self._usd, self._tokens, self._loaded_at = midnight.date(), 0.0, 0, None
        fresh = self._loaded_at is not None and time.monotonic() - self._loaded_at < self._settings.budget_cache_s
        if self._engine is None or fresh:
            return
        async with self._lock:
            try:
                async with asyncio.timeout(self._settings.record_timeout_s):
                    async with self._engine.connect() as conn:
                        self._usd, self._tokens = await spent_since(conn, midnight)
            except Exception as exc:  # noqa: BLE001 - the database being away must not stop the intelligence
                log.warning("claude budget: cannot read today's spend (%s); counting this process only", exc)
            self._loaded_at = time.monotonic()

    async def exhausted(self) -> str | None:
        """Why no more calls may be made today, or None."""
        await self._refresh()
        if self._usd >= self._settings.daily_budget_usd:
            return (
                f"daily budget exhausted: ${self._usd:.4f} spent since UTC midnight "
                f"(CLAUDE_DAILY_BUDGET_USD={self._settings.daily_budget_usd:g})"
            )
        if self._tokens >= self._settings.daily_token_budget:
            return (
                f"daily token budget exhausted: {self._tokens} tokens since UTC midnight "
                f"(CLAUDE_DAILY_TOKEN_BUDGET={self._settings.daily_token_budget})"
            )
        return None

    def add(self, usd: float, tokens: int) -> None:
        self._usd += usd
        self._tokens += tokens


class ClaudeClient:
    def __init__(self, settings: ClaudeSettings, engine: AsyncEngine | None = None) -> None:
        self.settings = settings
        self._engine = engine
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self.budget = DailyBudget(settings, engine)
        self._sdk: anthropic.AsyncAnthropic | None = None
        if not settings.local_only:
            # OpenRouter wants "Authorization: Bearer" (auth_token); Anthropic wants x-api-key.
            credentials = {"auth_token": settings.api_key} if settings.mode == "openrouter" else {"api_key": settings.api_key}
            self._sdk = anthropic.AsyncAnthropic(
                **credentials, base_url=settings.base_url, max_retries=0, timeout=settings.timeout_s
            )

    @property
    def local_only(self) -> bool:
        return self.settings.local_only

    @property
    def mode(self) -> str:
        return self.settings.mode

    @property
    def model(self) -> str:
        return self.settings.model

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None

    async def structured(
        self,
        purpose: str,
        subject: str,
        system: str,
        prompt: str,
        tool_name: str,
        tool_description: str,
        schema: dict,
        max_tokens: int = 1024,
    ) -> StructuredResult:
        """Ask Claude and get ``data`` valid against ``schema``, or ok=False with the reason."""
        if self._sdk is None:
            return StructuredResult(
                ok=False,
                data=None,
                outcome="local_only",
                error=self.settings.summary(),
                call_id=None,
                cost_usd=0.0,
                latency_ms=0.0,
            )
        validator_cls = jsonschema.validators.validator_for(schema)
        validator_cls.check_schema(schema)  # a bad schema is the caller's bug, not Claude's: raise
        validator = validator_cls(schema)
        request = {
            "model": self.settings.model,
            "max_tokens": max_tokens,
            # Both blocks are the same for every call of a purpose: cached, later calls pay 0.1x for them.
            "system": [{"type": "text", "text": system, "cache_control": EPHEMERAL}],
            "tools": [{"name": tool_name, "description": tool_description, "input_schema": schema, "cache_control": EPHEMERAL}],
            "tool_choice": {"type": "tool", "name": tool_name},
            "messages": [{"role": "user", "content": prompt}],
        }
        # Held across retries too: when Claude pushes back, queued calls wait instead of piling on.
        async with self._semaphore:
            started = time.monotonic()
            reason = await self.budget.exhausted()
            if reason is not None:
                return await self._finish(
                    purpose, subject, started, _Usage(), attempts=0, outcome="budget_exhausted", error=reason, data=None
                )
            usage = _Usage()
            attempts = 0
            while True:
                attempts += 1
                try:
                    async with asyncio.timeout(self.settings.timeout_s):
                        message = await self._sdk.messages.create(**request)
                except Exception as exc:  # noqa: BLE001 - classified below: retried, or recorded as the outcome
                    failure = classify(exc, self.settings.timeout_s)
                    delay = self._backoff(attempts, failure)
                    if delay is None:
                        return await self._finish(
                            purpose,
                            subject,
                            started,
                            usage,
                            attempts=attempts,
                            outcome=failure.outcome,
                            error=failure.message,
                            data=None,
                        )
                    log.info("claude %s: attempt %d %s, retrying in %.2fs", purpose, attempts, failure.outcome, delay)
                    await asyncio.sleep(delay)
                    continue
                usage.add(message.usage)
                data, problem = _tool_input(message, tool_name, validator)
                if problem is not None:
                    return await self._finish(
                        purpose, subject, started, usage, attempts=attempts, outcome="parse_error", error=problem, data=None
                    )
                return await self._finish(
                    purpose, subject, started, usage, attempts=attempts, outcome="ok", error=None, data=data
                )

    def _backoff(self, attempt: int, failure: _Failure) -> float | None:
        """Seconds to wait before the next attempt, or None when there must be none."""
        if not failure.retryable or attempt > self.settings.max_retries:
            return None
        if failure.retry_after_s is not None and failure.retry_after_s > self.settings.max_retry_after_s:
            return None
        ceiling = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt - 1))
        delay = random.uniform(ceiling / 2, ceiling)  # jitter: replicas retrying together spread out
        return max(delay, failure.retry_after_s or 0.0)

    async def _finish(
        self,
        purpose: str,
        subject: str,
        started: float,
        usage: _Usage,
        *,
        attempts: int,
        outcome: str,
        error: str | None,
        data: dict | None,
    ) -> StructuredResult:
        latency_ms = (time.monotonic() - started) * 1000.0
        cost = call_cost(
            self.settings.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        )
        self.budget.add(cost, usage.total)
        call_id = await self._record(purpose, subject, usage, cost, latency_ms, attempts, outcome, error)
        return StructuredResult(
            ok=outcome == "ok",
            data=data,
            outcome=outcome,
            error=error,
            call_id=call_id,
            cost_usd=cost,
            latency_ms=latency_ms,
            attempts=attempts,
            tokens=usage.as_dict(),
        )

    async def _record(
        self,
        purpose: str,
        subject: str,
        usage: _Usage,
        cost: float,
        latency_ms: float,
        attempts: int,
        outcome: str,
        error: str | None,
    ) -> int | None:
        if self._engine is None:
            return None
        row = {
            "purpose": purpose,
            "subject": subject,
            "mode": self.settings.mode,
            "model": self.settings.model,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "cost_usd": cost,
            "latency_ms": latency_ms,
            "attempts": attempts,
            "outcome": outcome,
            "error": error,
        }
        try:
            async with asyncio.timeout(self.settings.record_timeout_s):
                async with self._engine.begin() as conn:
                    result = await conn.execute(insert(ClaudeCall).values(**row).returning(ClaudeCall.id))
                    return int(result.scalar_one())
        except Exception as exc:  # noqa: BLE001 - the answer is worth more than its record
            log.warning("claude %s: call record not written (%s); outcome %s", purpose, exc, outcome)
            return None


def _tool_input(message: Any, tool_name: str, validator: Any) -> tuple[dict | None, str | None]:
    """The validated tool input, or the reason there is none."""
    blocks = [b for b in message.content if getattr(b, "type", None) == "tool_use"]
    block = next((b for b in blocks if getattr(b, "name", None) == tool_name), None)
    if block is None:
        kinds = ", ".join(getattr(b, "type", "?") for b in message.content) or "nothing"
        return None, f"no {tool_name} tool call in the answer (got {kinds}; stop_reason {message.stop_reason})"
    data = block.input
    if not isinstance(data, dict):
        return None, f"{tool_name} input is {type(data).__name__}, not an object"
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return None, f"{tool_name} input does not match the schema at {where}: {error.message}"[:_ERROR_TEXT_LIMIT]
    return data, None
