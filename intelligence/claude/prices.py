"""What a Claude call costs: USD per million tokens for input, output, cache reads and cache writes.

intelligence/prices.yaml prices the traffic the gateway carries and has no cache-write rate, which
the intelligence's own calls pay (its system prompt and tool are cached). Source:
https://platform.claude.com/docs/en/about-claude/pricing (read 2026-11-27; Sonnet 5/5.5 rates as
published at launch). Haiku 5.5 had no published rate in the sources read: it falls to FALLBACK.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PER_TOKENS = 1_000_000


@dataclass(frozen=True, slots=True)
class ClaudePrice:
    input: float
    output: float
    cache_read: float
    cache_write: float


# Longest matching prefix wins, so "claude-opus-4-5" is not priced as "claude-opus-4".
# (input, output, cache read, 5-minute cache write), USD per million tokens.
_TABLE: dict[str, tuple[float, float, float, float]] = {
    "claude-fable-5-1": (10.00, 50.00, 0.25, 12.50),
    "claude-mythos-5-1": (10.00, 50.00, 0.25, 12.50),
    "claude-fable-5": (10.00, 50.00, 1.00, 12.50),
    "claude-mythos-5": (10.00, 50.00, 1.00, 12.50),
    "claude-opus-5": (5.00, 25.00, 0.50, 6.25),
    "claude-opus-4-8": (5.00, 25.00, 0.50, 6.25),
    "claude-opus-4-7": (5.00, 25.00, 0.50, 6.25),
    "claude-opus-4-6": (5.00, 25.00, 0.50, 6.25),
    "claude-opus-4-5": (5.00, 25.00, 0.50, 6.25),
    "claude-opus-4-1": (15.00, 75.00, 1.50, 18.75),
    "claude-opus-4": (15.00, 75.00, 1.50, 18.75),
    "claude-sonnet-5-5": (2.00, 10.00, 0.20, 2.50),
    "claude-sonnet-5": (2.00, 10.00, 0.20, 2.50),
    "claude-sonnet-4-6": (3.00, 15.00, 0.30, 3.75),
    "claude-sonnet-4-5": (3.00, 15.00, 0.30, 3.75),
    "claude-sonnet-4": (3.00, 15.00, 0.30, 3.75),
    "claude-3-7-sonnet": (3.00, 15.00, 0.30, 3.75),
    "claude-3-5-sonnet": (3.00, 15.00, 0.30, 3.75),
    "claude-haiku-4-5": (1.00, 5.00, 0.10, 1.25),
    "claude-3-5-haiku": (0.80, 4.00, 0.08, 1.00),
    "claude-3-haiku": (0.25, 1.25, 0.03, 0.30),
}
PRICES: dict[str, ClaudePrice] = {
    name: ClaudePrice(input=i, output=o, cache_read=r, cache_write=w) for name, (i, o, r, w) in _TABLE.items()
}
# A model missing from the table is priced at the dearest rate, so the daily budget stops early
# rather than late.
FALLBACK = max(PRICES.values(), key=lambda p: p.output)

_DATE_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")


def normalise(model: str) -> str:
    """``anthropic/claude-sonnet-4.5`` and ``claude-sonnet-4-5-20250929`` both -> ``claude-sonnet-4-5``."""
    name = model.rsplit("/", 1)[-1].lower().replace(".", "-")
    return _DATE_SUFFIX.sub("", name)


def price_for(model: str) -> ClaudePrice:
    name = normalise(model)
    for key in sorted(PRICES, key=len, reverse=True):
        if name == key or name.startswith(key + "-"):
            return PRICES[key]
    return FALLBACK


def call_cost(
    model: str, *, input_tokens: int, output_tokens: int, cache_read_tokens: int = 0, cache_write_tokens: int = 0
) -> float:
    """USD; Anthropic's input_tokens exclude cache reads and writes, so the four counts are disjoint."""
    p = price_for(model)
    return (
        input_tokens * p.input + output_tokens * p.output + cache_read_tokens * p.cache_read + cache_write_tokens * p.cache_write
    ) / PER_TOKENS
