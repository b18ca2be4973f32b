"""Make values storable in Postgres text and jsonb.

Postgres text cannot hold U+0000, jsonb rejects the ``\\u0000`` escape and NaN/Infinity, and
asyncpg cannot encode lone surrogates (which ``json.loads`` happily produces from ``"\\ud800"``).
Bodies come from arbitrary clients and providers, so every string goes through here.
"""

from __future__ import annotations

import math
from typing import Any

REPLACEMENT = "\ufffd"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def clean_text(value: str) -> str:
    """``value`` with NUL and unpaired surrogates replaced by U+FFFD."""
    if "\x00" in value:
        value = value.replace("\x00", REPLACEMENT)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # surrogatepass keeps valid pairs joinable; decoding with "replace" turns lone halves into U+FFFD
        value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


def clean_optional_text(value: str | None) -> str | None:
    return None if value is None else clean_text(value)


def clean_json(value: Any) -> Any:
    """A copy of a JSON-like value that jsonb accepts (strings cleaned, non-finite floats -> None)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    # anything else (a Decimal, a datetime a caller slipped in) is kept as its text form
    return clean_text(str(value))


def clean_bigint(value: int | None) -> int | None:
    """Token counts outside bigint range are garbage from upstream; store NULL rather than fail the batch."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if value is None or isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if _INT64_MIN <= value <= _INT64_MAX else None
