"""Keeps the inline detector's attack memory = shipped seed + the active learned attacks.

Learned attacks live in ``attack_memory`` (intelligence/attacks/) with their vectors already made in
the detector's static embedding, so a reload is a query and a matrix swap: nothing is embedded in
the sidecar and nothing touches the request path. The reload runs at start, when the table's trigger
notifies ``llmproxy_attack_memory`` and every ``poll_interval`` seconds (a lost notification).

Each reload first reads a small version stamp and loads the rows only when it moved. The new memory
is swapped in whole (:meth:`NumpyAttackMemory.replace`): a scan sees the old or the new content.
When the detector's embedding layers are not on yet (the static table is still being built in the
background), the loaded rows wait and are applied on a later round, once the seed memory exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.detectors.memory import EMBEDDING_MODEL, KnownAttack, NumpyAttackMemory
from intelligence.store.listen import NotifyReloader

from .models import NOTIFY_CHANNEL
from .store import load_active, memory_version

log = logging.getLogger("llmproxy.attacks.sync")

DEFAULT_POLL_INTERVAL = 5.0


@dataclass
class _Learned:
    version: tuple[Any, ...]
    items: list[KnownAttack] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 384), dtype=np.float32))


class AttackMemorySync:
    """Owns the learned part of ``detector.memory``; start/stop with the sidecar."""

    def __init__(
        self, engine: AsyncEngine, detector: Any, *, poll_interval: float = DEFAULT_POLL_INTERVAL, listen: bool = True
    ) -> None:
        self.engine = engine
        self.detector = detector
        self.stats = {"refreshes": 0, "loads": 0}  # the reloader adds notifications, listens, failures
        self.reloader = NotifyReloader(
            engine,
            NOTIFY_CHANNEL,
            self.refresh,
            poll_interval=poll_interval,
            listen=listen,
            what="learned attacks",
            task_name="attack-memory-sync",
            stats=self.stats,
        )
        self._learned: _Learned | None = None
        self._seed: tuple[NumpyAttackMemory, list[KnownAttack], np.ndarray] | None = None
        self._applied: tuple[int, tuple[Any, ...]] | None = None  # (memory id, version) in the detector now

    @property
    def learned(self) -> int:
        """How many learned attacks the last load found (applied or waiting)."""
        return len(self._learned.items) if self._learned is not None else 0

    @property
    def applied(self) -> bool:
        """Whether the detector's memory holds the last loaded state."""
        return self._learned is not None and self._applied is not None and self._applied[1] == self._learned.version

    async def start(self) -> None:
        await self.reloader.start()

    async def stop(self) -> None:
        await self.reloader.stop()

    async def refresh(self) -> None:
        async with self.engine.connect() as conn:
            version = await memory_version(conn, EMBEDDING_MODEL)
            if self._learned is None or self._learned.version != version:
                items, vectors = await load_active(conn, EMBEDDING_MODEL)
                self._learned = _Learned(version, items, vectors)
                self.stats["loads"] += 1
        self.stats["refreshes"] += 1
        self.apply()

    def apply(self) -> bool:
        """Put seed + learned into the detector's memory if it changed; False while it cannot yet."""
        learned = self._learned
        memory = self._memory()
        if learned is None or memory is None:
            return False
        if self._seed is None or self._seed[0] is not memory:
            # first sight of this memory object: what it holds now is the shipped seed
            self._seed = (memory, memory.items, memory.vectors)
            self._applied = None
        if self._applied == (id(memory), learned.version):
            return True
        _, seed_items, seed_vectors = self._seed
        memory.replace(seed_items + learned.items, np.vstack([seed_vectors, learned.vectors.reshape(-1, memory.dim)]))
        self._applied = (id(memory), learned.version)
        log.info("attack memory: %d shipped + %d learned attacks", len(seed_items), len(learned.items))
        return True

    def _memory(self) -> NumpyAttackMemory | None:
        if getattr(self.detector, "embed", None) is None:
            return None  # embedding layers not on yet: attach() sets the memory, then the embedder
        memory = getattr(self.detector, "memory", None)
        if memory is None:  # no shipped seed: learned attacks alone
            memory = NumpyAttackMemory(384)
            self.detector.memory = memory
        if not isinstance(memory, NumpyAttackMemory):
            return None
        return memory
