"""Which Claude the intelligence talks to (if any), and which intelligence features are switched on.

Both are read from the environment once, at start-up; see docs/intelligence.md for every variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MODES = ("anthropic", "openrouter", "local-only")
DEFAULT_MODEL = "claude-sonnet-5-5"  # the current Sonnet; claude-sonnet-4-5 reaches end-of-life 2026-11-30
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
# OpenRouter's Anthropic-compatible Messages endpoint: the SDK appends /v1/messages to this base and
# the key goes out as "Authorization: Bearer" (the SDK's auth_token), not x-api-key.
OPENROUTER_BASE_URL = "https://openrouter.ai/api"

_OFF = frozenset({"0", "false", "no", "off"})
_DATE_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")
_VERSION_PAIR = re.compile(r"(?<=-)(\d)-(\d)(?=$|-)")


def openrouter_model(model: str) -> str:
    """OpenRouter's name for a Claude model: ``claude-sonnet-5-5`` -> ``anthropic/claude-sonnet-5.5``.

    Names that already carry a vendor prefix (``anthropic/...``) are the user's explicit choice and
    pass unchanged. OpenRouter names have no date snapshot and a dotted version.
    """
    if "/" in model:
        return model
    bare = _DATE_SUFFIX.sub("", model)
    return "anthropic/" + _VERSION_PAIR.sub(r"\1.\2", bare)


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw.replace("_", ""))
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True)
class ClaudeSettings:
    """Connection, limits and budget of the Claude client.

    ``mode`` left empty is derived: "anthropic" when an api_key is given, else "local-only".
    """

    api_key: str | None = None
    base_url: str | None = None
    mode: str = ""
    model: str = DEFAULT_MODEL
    timeout_s: float = 30.0  # per attempt
    max_retries: int = 3  # retries after the first attempt
    concurrency: int = 4
    daily_budget_usd: float = 5.0
    daily_token_budget: int = 2_000_000
    backoff_base_s: float = 0.5  # first retry waits about this long, doubling each time
    backoff_max_s: float = 20.0
    max_retry_after_s: float = 60.0  # a server asking us to wait longer than this ends the call
    budget_cache_s: float = 5.0  # how long the daily spend read from the database is trusted
    record_timeout_s: float = 5.0  # writing a call record never holds an answer back longer

    def __post_init__(self) -> None:
        mode = self.mode or ("anthropic" if self.api_key else "local-only")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode != "local-only" and not self.api_key:
            raise ValueError(f"mode {mode!r} needs an api_key")
        object.__setattr__(self, "mode", mode)
        if self.base_url is None and mode != "local-only":
            object.__setattr__(self, "base_url", OPENROUTER_BASE_URL if mode == "openrouter" else ANTHROPIC_BASE_URL)
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.max_retries < 0:
            raise ValueError("max_retries must not be negative")

    @property
    def local_only(self) -> bool:
        return self.mode == "local-only"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClaudeSettings:
        env = os.environ if env is None else env
        model = env.get("CLAUDE_MODEL", "").strip() or DEFAULT_MODEL
        anthropic_key = env.get("ANTHROPIC_API_KEY", "").strip()
        openrouter_key = env.get("OPENROUTER_API_KEY", "").strip()
        if anthropic_key:
            mode, key = "anthropic", anthropic_key
            base_url: str | None = env.get("ANTHROPIC_BASE_URL", "").strip() or ANTHROPIC_BASE_URL
        elif openrouter_key:
            mode, key = "openrouter", openrouter_key
            base_url = env.get("OPENROUTER_BASE_URL", "").strip() or OPENROUTER_BASE_URL
            model = openrouter_model(model)
        else:
            mode, key, base_url = "local-only", None, None
        return cls(
            api_key=key,
            base_url=base_url,
            mode=mode,
            model=model,
            timeout_s=_env_float(env, "CLAUDE_TIMEOUT_S", 30.0),
            max_retries=_env_int(env, "CLAUDE_MAX_RETRIES", 3),
            concurrency=_env_int(env, "CLAUDE_CONCURRENCY", 4),
            daily_budget_usd=_env_float(env, "CLAUDE_DAILY_BUDGET_USD", 5.0),
            daily_token_budget=_env_int(env, "CLAUDE_DAILY_TOKEN_BUDGET", 2_000_000),
        )

    def summary(self) -> str:
        """One plain sentence on what the intelligence can do in this mode."""
        if self.mode == "local-only":
            return (
                "local-only: no ANTHROPIC_API_KEY or OPENROUTER_API_KEY; patterns, statistics and "
                "local detectors run, Claude does not"
            )
        via = "Anthropic API" if self.mode == "anthropic" else "OpenRouter (Anthropic-compatible endpoint)"
        return (
            f"{self.mode}: Claude {self.model} via {via} at {self.base_url}; budget "
            f"${self.daily_budget_usd:g} and {self.daily_token_budget:,} tokens per UTC day"
        )

    def describe(self) -> dict[str, Any]:
        """What status and the dashboard show; never includes the key."""
        return {
            "mode": self.mode,
            "model": None if self.local_only else self.model,
            "base_url": self.base_url,
            "daily_budget_usd": self.daily_budget_usd,
            "daily_token_budget": self.daily_token_budget,
            "summary": self.summary(),
        }


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() not in _OFF


@dataclass(frozen=True)
class IntelligenceFlags:
    """Feature switches; all on unless set to 0/false/no/off. ENABLE_INTELLIGENCE=off turns all off."""

    intelligence: bool = True
    real_time_enhancement: bool = True
    anomaly_detection: bool = True
    pattern_learning: bool = True
    settings: ClaudeSettings | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IntelligenceFlags:
        env = os.environ if env is None else env
        on = _flag(env, "ENABLE_INTELLIGENCE")
        try:
            settings: ClaudeSettings | None = ClaudeSettings.from_env(env)
        except ValueError:  # a bad CLAUDE_* value is the Claude client's problem; the switches still hold
            settings = None
        return cls(
            intelligence=on,
            real_time_enhancement=on and _flag(env, "ENABLE_REAL_TIME_ENHANCEMENT"),
            anomaly_detection=on and _flag(env, "ENABLE_ANOMALY_DETECTION"),
            pattern_learning=on and _flag(env, "ENABLE_PATTERN_LEARNING"),
            settings=settings,
        )

    def as_dict(self) -> dict[str, bool]:
        return {
            "intelligence": self.intelligence,
            "real_time_enhancement": self.real_time_enhancement,
            "anomaly_detection": self.anomaly_detection,
            "pattern_learning": self.pattern_learning,
        }

    def describe(self, settings: ClaudeSettings | None = None) -> dict[str, Any]:
        """Mode, model, flags and a plain sentence, for `llmproxy status` and the dashboard."""
        settings = settings or self.settings or ClaudeSettings.from_env()
        info = settings.describe()
        if not self.intelligence:
            info["summary"] = "intelligence off (ENABLE_INTELLIGENCE): nothing is learned, judged or enhanced"
        else:
            off = [name for name, value in self.as_dict().items() if not value]
            if off:
                info["summary"] += "; switched off: " + ", ".join(off)
        info["flags"] = self.as_dict()
        return info
