"""What an exchange cost, from a dated per-model price table (``prices.yaml`` beside this module).

Providers count cached and reasoning tokens differently, and the request log keeps their counts
as reported (see extproc/providers/usage.py):

* OpenAI-style APIs (chat, responses, completions, embeddings; also OpenRouter and other
  OpenAI-compatible servers): ``cached_tokens`` is the part of ``input_tokens`` served from the
  prompt cache, ``reasoning_tokens`` the part of ``output_tokens`` spent thinking.
* Anthropic Messages: ``input_tokens`` excludes cache reads; ``cached_tokens`` (cache_read_input_tokens)
  come on top.

:func:`billable` turns either form into four disjoint counts; each is priced at its own rate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PRICE_FILE = Path(__file__).with_name("prices.yaml")
PER_TOKENS = 1_000_000  # prices are quoted per million tokens

# APIs whose input count excludes cache reads (the cached tokens are billed on top).
CACHE_ADDITIVE_APIS = frozenset({"messages"})

_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    model: str
    provider: str
    input: float
    cached_input: float
    output: float
    reasoning: float  # equals output unless the table says otherwise
    since: date | None = None


@dataclass(frozen=True, slots=True)
class Billable:
    """Disjoint token counts, each priced at its own rate."""

    uncached_input: int = 0
    cached_input: int = 0
    output: int = 0  # excluding reasoning
    reasoning: int = 0


def billable(
    api: str | None, input_tokens: int | None, output_tokens: int | None, cached_tokens: int | None, reasoning_tokens: int | None
) -> Billable:
    inp, out = max(input_tokens or 0, 0), max(output_tokens or 0, 0)
    cached, reasoning = max(cached_tokens or 0, 0), max(reasoning_tokens or 0, 0)
    if api in CACHE_ADDITIVE_APIS:
        uncached = inp
    else:
        cached = min(cached, inp)  # a subset of the input: never more than it
        uncached = inp - cached
    reasoning = min(reasoning, out)
    return Billable(uncached_input=uncached, cached_input=cached, output=out - reasoning, reasoning=reasoning)


def price_tokens(price: ModelPrice, tokens: Billable) -> float:
    """USD for these tokens at this price."""
    return (
        tokens.uncached_input * price.input
        + tokens.cached_input * price.cached_input
        + tokens.output * price.output
        + tokens.reasoning * price.reasoning
    ) / PER_TOKENS


def canonical_model(model: str) -> str:
    """The table's name for a model as a client or router spells it."""
    name = model.strip().lower()
    if "/" in name:  # OpenRouter: vendor/model
        name = name.rsplit("/", 1)[1]
    name = name.removesuffix("-latest")
    return _DATE_SUFFIX.sub("", name)


@dataclass(frozen=True)
class PriceTable:
    as_of: date
    sources: dict[str, str]
    prices: dict[str, tuple[ModelPrice, ...]]  # canonical name or alias -> entries, oldest first

    def lookup(self, model: str | None, on: date | datetime | None = None) -> ModelPrice | None:
        """The price of ``model`` in force on ``on`` (default: today), or None if the table has none."""
        if not model:
            return None
        entries = self.prices.get(canonical_model(model))
        if not entries:
            return None
        day = _as_date(on)
        current = None
        for entry in entries:
            if entry.since is None or entry.since <= day:
                current = entry
        return current if current is not None else entries[0]  # traffic before a model's first dated price

    def cost(
        self,
        model: str | None,
        api: str | None,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        on: date | datetime | None = None,
    ) -> float | None:
        """USD for one exchange (or a sum of exchanges of one model and API); None when unpriced."""
        price = self.lookup(model, on)
        if price is None:
            return None
        return price_tokens(price, billable(api, input_tokens, output_tokens, cached_tokens, reasoning_tokens))

    def models(self) -> list[ModelPrice]:
        """Every entry once, by model then date."""
        seen: dict[tuple[str, date | None], ModelPrice] = {}
        for entries in self.prices.values():
            for e in entries:
                seen[(e.model, e.since)] = e
        return sorted(seen.values(), key=lambda e: (e.provider, e.model, e.since or date.min))


def _as_date(on: date | datetime | None) -> date:
    if on is None:
        return datetime.now(UTC).date()
    if isinstance(on, datetime):
        return (on if on.tzinfo is None else on.astimezone(UTC)).date()
    return on


def parse_table(doc: dict[str, Any]) -> PriceTable:
    prices: dict[str, list[ModelPrice]] = {}
    for raw in doc.get("models") or []:
        since = raw.get("since")
        entry = ModelPrice(
            model=str(raw["model"]),
            provider=str(raw.get("provider", "")),
            input=float(raw["input"]),
            cached_input=float(raw.get("cached_input", raw["input"])),
            output=float(raw["output"]),
            reasoning=float(raw.get("reasoning", raw["output"])),
            since=since if isinstance(since, date) or since is None else date.fromisoformat(str(since)),
        )
        for name in (entry.model, *raw.get("aliases", ())):
            prices.setdefault(canonical_model(str(name)), []).append(entry)
    ordered = {k: tuple(sorted(v, key=lambda e: e.since or date.min)) for k, v in prices.items()}
    as_of = doc["as_of"]
    return PriceTable(
        as_of=as_of if isinstance(as_of, date) else date.fromisoformat(str(as_of)),
        sources=dict(doc.get("sources") or {}),
        prices=ordered,
    )


@lru_cache(maxsize=4)
def load_prices(path: Path = PRICE_FILE) -> PriceTable:
    with open(path, encoding="utf-8") as fh:
        return parse_table(yaml.safe_load(fh))


def costs(
    table: PriceTable,
    rows: Iterable[tuple[str | None, str | None, date | datetime | None, int | None, int | None, int | None, int | None]],
) -> list[float | None]:
    """Cost of each (model, api, when, input, output, cached, reasoning) row; lookups memoised per model and day."""
    memo: dict[tuple[str | None, date], ModelPrice | None] = {}
    out: list[float | None] = []
    for model, api, when, inp, outp, cached, reasoning in rows:
        key = (model, _as_date(when))
        if key not in memo:
            memo[key] = table.lookup(model, key[1])
        price = memo[key]
        out.append(None if price is None else price_tokens(price, billable(api, inp, outp, cached, reasoning)))
    return out
