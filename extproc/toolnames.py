"""Provider-safe aliases for tool names.

OpenAI and Anthropic reject tool names outside ``^[a-zA-Z0-9_-]{1,64}$``, yet agents
routinely declare MCP/plugin tools such as ``github.search`` or ``fs/read file``. The
gateway therefore swaps such names for aliases on the way upstream and swaps them back
on the way to the client. An alias is a readable sanitised stem plus a short hash of the
original, so it is deterministic (the same name always maps to the same alias within the
same registration order) and reversible through the codec's table.

With a namespace, *every* name is aliased into it (``team-a__search``) so that tools of
different tenants can never be confused upstream.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from collections.abc import Iterable, Iterator

PROVIDER_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

MAX_NAME_LEN = 64
_NAMESPACE_MAX_LEN = 24
_NAMESPACE_SEP = "__"
_HASH_MIN_LEN = 8
_UNSAFE_RUN = re.compile(r"[^a-zA-Z0-9_-]+")


def _ascii_stem(text: str) -> str:
    """Readable provider-safe rendering of ``text`` (may be empty)."""
    # NFKD splits accents off their letters so "café" reads as "cafe", not "caf_".
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _UNSAFE_RUN.sub("_", folded).strip("_")


def _sanitise_namespace(namespace: str) -> str:
    stem = _ascii_stem(namespace)[:_NAMESPACE_MAX_LEN].strip("_") or "ns"
    if stem != namespace:
        # Two different tenants must not share a namespace just because their labels
        # sanitise alike ("team a" / "team.a"), so a lossy rendering carries a hash.
        stem = f"{stem[: _NAMESPACE_MAX_LEN - 7]}-{_digest(namespace, 0)[:6]}"
    return stem


def _digest(name: str, attempt: int) -> str:
    seed = name if attempt == 0 else f"{attempt}\x00{name}"
    return hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()


class ToolNameCodec:
    """Bijective table between original tool names and provider-safe aliases.

    Names are registered in call order; on a collision the later name gets a longer
    hash, so callers must register in a stable order (declared tools, then history).
    """

    def __init__(self, names: Iterable[str] = (), namespace: str | None = None) -> None:
        self._prefix = (_sanitise_namespace(namespace) + _NAMESPACE_SEP) if namespace is not None else ""
        self._alias_of: dict[str, str] = {}  # original -> alias
        self._original_of: dict[str, str] = {}  # alias -> original (identity entries included)
        for name in names:
            self.add(name)

    @property
    def namespace_prefix(self) -> str:
        return self._prefix

    def add(self, name: str) -> str:
        """Register ``name`` (idempotent) and return its alias."""
        alias = self._alias_of.get(name)
        if alias is not None:
            return alias
        for candidate in self._candidates(name):
            if candidate not in self._original_of:
                alias = candidate
                break
        self._alias_of[name] = alias
        self._original_of[alias] = name
        return alias

    def encode(self, name: str) -> str:
        return self.add(name)

    def decode(self, alias: str) -> str:
        return self._original_of.get(alias, alias)

    @property
    def mapping(self) -> dict[str, str]:
        """alias -> original for the names that were rewritten."""
        return {alias: original for alias, original in self._original_of.items() if alias != original}

    @property
    def active(self) -> bool:
        return any(alias != original for alias, original in self._original_of.items())

    @property
    def aliases(self) -> frozenset[str]:
        """Every name the upstream may legitimately use, rewritten or not."""
        return frozenset(self._original_of)

    def is_complete_alias(self, fragment: str) -> bool:
        """True if ``fragment`` is a known alias that no other known alias extends.

        Streams may deliver a name in pieces; a piece that passes this test cannot
        grow into a different known name, so it can be restored without waiting.
        """
        if fragment not in self._original_of:
            return False
        return not any(a != fragment and a.startswith(fragment) for a in self._original_of)

    def _candidates(self, name: str) -> Iterator[str]:
        prefix = self._prefix
        if PROVIDER_NAME_RE.match(name) and len(prefix) + len(name) <= MAX_NAME_LEN:
            yield prefix + name
        stem = _ascii_stem(name) or "tool"
        # Deterministic escalation: longer hashes first, then re-seeded digests, so even
        # adversarially chosen colliding names terminate with a unique alias.
        for attempt in itertools.count():
            digest = _digest(name, attempt)
            longest = min(len(digest), MAX_NAME_LEN - len(prefix))
            for hash_len in range(_HASH_MIN_LEN, longest + 1, 4):
                room = MAX_NAME_LEN - len(prefix) - hash_len - 1
                head = stem[:room].rstrip("_") if room > 0 else ""
                yield f"{prefix}{head}_{digest[:hash_len]}" if head else f"{prefix}{digest[:hash_len]}"
