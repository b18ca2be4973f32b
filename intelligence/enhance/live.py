"""Applying enhancements inline: which change (if any) this request gets, and in which experiment arm.

:class:`EnhancementCache` holds an immutable snapshot of what the sidecar applies, per pattern:
enhancements under a running experiment (status ``testing``) and promoted ones (``active``). It is
reloaded when the database NOTIFYs ``llmproxy_experiments`` (triggers on both tables) and, as a
fallback, every few seconds.

:class:`Enhancer` is the hot-path part. When the snapshot is empty, the feature flag is off, the API
is not chat/messages or the client opted out (``x-enhance: off``), :meth:`Enhancer.wants`
says no and the exchange stays synchronous: no await, no database, no embedding. Otherwise the
request's pattern is found with pattern memory's :class:`PatternLookup` (5 ms budget; a miss means
"not enhanced", never a delay), the arm is assigned deterministically from the experiment id and the
session (or client), and the variant/active arm gets the spec applied as a JSON patch. See
docs/experiments-simulation.md.

Scopes: an enhancement learned from one gateway key's traffic has ``scope`` = that key's id and
applies only to requests whose ``client`` (the key id the sidecar passes, ``Exchange.key_fp``) is that
key; ``scope`` None applies to every request. A scoped change wins over a global one: its experiment
is the one assigned, and a scoped active enhancement replaces a global active one of the same kind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from intelligence.enhance import spec as specs

log = logging.getLogger("llmproxy.enhance")

NOTIFY_CHANNEL = "llmproxy_experiments"
# Not x-llmproxy-*: Envoy strips that namespace from clients (it is the gateway's own, for routing).
OPT_OUT_HEADER = "x-enhance"
ENHANCEABLE_APIS = frozenset({"chat", "messages"})

# Enhancements that apply now, with the live pattern they belong to. A pattern merged away keeps its
# row with redirect_to set; requests whose lookup lands on the old id must still be enhanced.
_SNAPSHOT_SQL = text("""
WITH RECURSIVE applicable AS (
    SELECT e.id AS enhancement_id, e.pattern_id, e.kind, e.spec, e.status, e.scope,
           x.id AS experiment_id, x.control_weight, x.assign_by
    FROM enhancements e
    LEFT JOIN experiments x ON x.enhancement_id = e.id AND x.status = 'running'
    WHERE e.pattern_id IS NOT NULL
      AND (e.status = 'active' OR (e.status = 'testing' AND x.id IS NOT NULL))
), aliases(alias_id, live_id, depth) AS (
    SELECT DISTINCT pattern_id, pattern_id, 0 FROM applicable
    UNION ALL
    SELECT p.id, a.live_id, a.depth + 1 FROM patterns p JOIN aliases a ON p.redirect_to = a.alias_id WHERE a.depth < 8
)
SELECT a.alias_id, ap.enhancement_id, ap.kind, ap.spec, ap.status, ap.scope, ap.experiment_id, ap.control_weight,
       ap.assign_by
FROM aliases a JOIN applicable ap ON ap.pattern_id = a.live_id
ORDER BY a.alias_id, ap.experiment_id NULLS LAST, ap.enhancement_id
""")


@dataclass(frozen=True, slots=True)
class Applicable:
    """One enhancement the sidecar may apply to a pattern's requests."""

    experiment_id: int | None
    enhancement_id: int
    kind: str
    spec: Mapping[str, Any]
    control_weight: float
    assign_by: str  # session | client
    mode: str  # experiment | active
    parsed: Any = field(default=None, compare=False, repr=False)  # the typed spec (intelligence.enhance.spec)
    scope: str | None = None  # the gateway key id it applies to; None: every request

    def applies_to(self, client: str | None) -> bool:
        return self.scope is None or self.scope == client


@dataclass(frozen=True, slots=True)
class EnhancementSnapshot:
    by_pattern: Mapping[int, tuple[Applicable, ...]]
    loaded_at: datetime | None = None

    @classmethod
    def empty(cls) -> EnhancementSnapshot:
        return cls({}, None)

    @property
    def is_empty(self) -> bool:
        return not self.by_pattern

    def for_pattern(self, pattern_id: int, client: str | None = None) -> tuple[Applicable, ...]:
        """What applies to a request of this pattern from ``client`` (the gateway key id, or the
        credential's fingerprint): global enhancements and those scoped to that key."""
        items = self.by_pattern.get(pattern_id, ())
        if all(i.scope is None for i in items):
            return items
        return tuple(i for i in items if i.applies_to(client))

    @classmethod
    def from_rows(cls, rows: list[Mapping[str, Any]], loaded_at: datetime | None = None) -> EnhancementSnapshot:
        grouped: dict[int, list[Applicable]] = {}
        for r in rows:
            running = r["experiment_id"] is not None and r["status"] == "testing"
            if not running and r["status"] != "active":
                continue
            try:  # parsed once per reload, not per request
                parsed = specs.parse_spec(str(r["kind"]), r["spec"] or {})
            except specs.SpecError as exc:
                log.warning("enhancement %s has an invalid spec (%s); not applied", r["enhancement_id"], exc)
                continue
            grouped.setdefault(int(r["alias_id"]), []).append(
                Applicable(
                    experiment_id=int(r["experiment_id"]) if running else None,
                    enhancement_id=int(r["enhancement_id"]),
                    kind=str(r["kind"]),
                    spec=dict(r["spec"] or {}),
                    control_weight=float(r["control_weight"]) if running else 0.0,
                    assign_by=str(r["assign_by"] or "session") if running else "session",
                    mode="experiment" if running else "active",
                    parsed=parsed,
                    scope=str(r["scope"]) if r.get("scope") is not None else None,
                )
            )
        return cls({pid: tuple(items) for pid, items in grouped.items()}, loaded_at)


async def load_snapshot(conn: AsyncConnection) -> EnhancementSnapshot:
    rows = (await conn.execute(_SNAPSHOT_SQL)).mappings().all()
    return EnhancementSnapshot.from_rows([dict(r) for r in rows], datetime.now(UTC))


class EnhancementCache:
    """The current :class:`EnhancementSnapshot`; LISTEN/NOTIFY plus polling keep it fresh."""

    def __init__(self, engine: AsyncEngine, *, poll_interval: float = 5.0, listen: bool = True, channel: str = NOTIFY_CHANNEL):
        from intelligence.store.listen import NotifyReloader

        self.engine = engine
        self.stats = {"refreshes": 0, "failures": 0, "notifications": 0, "listens": 0}
        self._snapshot = EnhancementSnapshot.empty()
        self._on_change: list[Callable[[EnhancementSnapshot], None]] = []
        self._reloader = NotifyReloader(
            engine,
            channel,
            self.refresh,
            poll_interval=poll_interval,
            listen=listen,
            what="enhancements",
            task_name="enhancement-cache",
            stats=self.stats,
            keeping=lambda: f"keeping the snapshot from {self._snapshot.loaded_at}",
        )

    @property
    def poll_interval(self) -> float:
        return self._reloader.poll_interval

    @property
    def listen(self) -> bool:
        return self._reloader.listen

    @property
    def channel(self) -> str:
        return self._reloader.channel

    @property
    def snapshot(self) -> EnhancementSnapshot:
        return self._snapshot

    @property
    def listening(self) -> bool:
        return self._reloader.listening

    def on_change(self, callback: Callable[[EnhancementSnapshot], None]) -> None:
        self._on_change.append(callback)

    async def refresh(self) -> EnhancementSnapshot:
        async with self.engine.connect() as conn:
            snap = await load_snapshot(conn)
        changed = snap.by_pattern != self._snapshot.by_pattern
        self._snapshot = snap
        self.stats["refreshes"] += 1
        if changed:
            log.info("enhancements reloaded: %d pattern(s) with applicable changes", len(snap.by_pattern))
            for cb in self._on_change:
                with contextlib.suppress(Exception):
                    cb(snap)
        return snap

    async def start(self) -> None:
        """Load once (a failure is logged, not raised: the loop keeps trying) and start refreshing."""
        await self._reloader.start()

    async def stop(self) -> None:
        await self._reloader.stop()


# ------------------------------------------------------------------------------------ hot path
class SnapshotSource(Protocol):
    @property
    def snapshot(self) -> EnhancementSnapshot: ...


class PatternFinder(Protocol):
    async def lookup(self, prompt: Any) -> Any: ...  # intelligence.memory.lookup.PatternLookup


def assignment_point(experiment_id: int, unit: str) -> float:
    """A uniform number in [0, 1) fixed by the experiment and the unit (session or client)."""
    digest = hashlib.sha256(f"{experiment_id}:{unit}".encode("utf-8", "replace")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_arm(item: Applicable, *, session_id: str | None, client: str | None) -> str:
    if item.mode == "active":
        return "active"
    unit = (client if item.assign_by == "client" else session_id) or session_id or client or ""
    return "control" if assignment_point(int(item.experiment_id or 0), unit) < item.control_weight else "variant"


def opted_out(headers: Mapping[str, str]) -> bool:
    return headers.get(OPT_OUT_HEADER, "").strip().lower() in ("off", "0", "false", "no")


@dataclass(frozen=True, slots=True)
class Applied:
    """What happened to one request: recorded as exchanges.flags["enhancement"]."""

    experiment_id: int | None
    enhancement_id: int
    arm: str  # control | variant | active
    pattern_id: int
    patch: tuple[dict[str, Any], ...] = ()
    doc: Any = field(default=None, compare=False, repr=False)  # the request to forward (the client's when unchanged)
    also_active: tuple[int, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.patch)

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "experiment": self.experiment_id,
            "enhancement": self.enhancement_id,
            "arm": self.arm,
            "pattern": self.pattern_id,
            "patch": list(self.patch),
        }
        if self.also_active:
            out["also_active"] = list(self.also_active)
        return out


class Enhancer:
    def __init__(self, cache: SnapshotSource, lookup: PatternFinder | None, flags: Any = None):
        self.cache = cache
        self.lookup = lookup
        self.flags = flags
        self.stats = {"looked_up": 0, "unmatched": 0, "applied": 0, "control": 0, "active": 0, "failed": 0}

    @property
    def enabled(self) -> bool:
        return self.flags is None or bool(getattr(self.flags, "real_time_enhancement", True))

    def wants(self, api: str | None, headers: Mapping[str, str]) -> bool:
        """Cheap, synchronous: False means the request is left alone with no await at all."""
        return (
            self.lookup is not None
            and api in ENHANCEABLE_APIS
            and self.enabled
            and not self.cache.snapshot.is_empty
            and not opted_out(headers)
        )

    async def enhance(
        self,
        view: Any,
        doc: dict,
        api: str | None,
        session_key: str | None,
        headers: Mapping[str, str],
        *,
        client: str | None = None,
    ) -> Applied | None:
        """Find the request's pattern and assign the arm; ``Applied.doc`` is the request to forward.

        None: not an exposure (feature off, opted out, no pattern found within the budget, nothing
        applies to the pattern). ``doc`` itself is never mutated.
        """
        if not self.wants(api, headers):
            return None
        snapshot = self.cache.snapshot
        from intelligence.memory.canonical import canonical_prompt

        prompt = canonical_prompt(
            getattr(view, "last_user", None), getattr(view, "system", None), getattr(view, "tool_names", ()) or ()
        )
        if prompt.empty:
            return None
        self.stats["looked_up"] += 1
        match = await self.lookup.lookup(prompt)  # type: ignore[union-attr]
        if match is None or not match.matched:
            self.stats["unmatched"] += 1
            return None
        items = snapshot.for_pattern(match.pattern_id, client)
        if not items:
            return None
        return self.apply_items(items, match.pattern_id, doc, api, session_id=session_key, client=client)

    def apply_items(
        self,
        items: tuple[Applicable, ...],
        pattern_id: int,
        doc: dict,
        api: str | None,
        *,
        session_id: str | None,
        client: str | None,
    ) -> Applied:
        """A pattern's enhancements on ``doc``: active ones for everyone, the experiment's for its variant arm.

        ``items`` must already be filtered for the client (:meth:`EnhancementSnapshot.for_pattern`); a
        scoped experiment is preferred to a global one, and a scoped active enhancement replaces a
        global active one of the same kind.
        """
        experiments = [i for i in items if i.mode == "experiment"]
        experiment = next((i for i in experiments if i.scope is not None), experiments[0] if experiments else None)
        actives = [i for i in items if i.mode == "active"]
        scoped_kinds = {a.kind for a in actives if a.scope is not None}
        actives = [a for a in actives if a.scope is not None or a.kind not in scoped_kinds]
        if experiment is not None:
            arm = assign_arm(experiment, session_id=session_id, client=client)
            # The variant replaces an active enhancement of the same kind (a new version), else stacks on top.
            chosen = [a for a in actives if arm == "control" or a.kind != experiment.kind]
            if arm == "variant":
                chosen.append(experiment)
            head = experiment
        else:
            arm, chosen, head = "active", actives, actives[0]
        patch: list[dict[str, Any]] = []
        current: Any = doc
        for item in chosen:
            ops = specs.apply(item.parsed, current, api)
            if not ops:
                continue
            updated = specs.apply_patch(current, ops)
            if updated is current:  # the patch did not fit: all or nothing, so this item changes nothing
                self.stats["failed"] += 1
                continue
            current = updated
            patch.extend(ops)
        self.stats[arm if arm in ("control", "active") else "applied"] += 1
        also = tuple(a.enhancement_id for a in chosen if a is not head)
        return Applied(head.experiment_id, head.enhancement_id, arm, pattern_id, tuple(patch), current, also)
