"""Schema-aware renaming of tool-name fields.

Each API module lists where names live as (container, key) slots; renaming touches
exactly those fields, never a blind string replacement over the body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Slot = tuple[dict, str]


def slot(container: Any, key: str = "name") -> list[Slot]:
    """A one-element slot list if ``container[key]`` is a string, else empty."""
    if isinstance(container, dict) and isinstance(container.get(key), str):
        return [(container, key)]
    return []


def slot_names(slots: Iterable[Slot]) -> tuple[str, ...]:
    return tuple(container[key] for container, key in slots)


def rename_slots(slots: Iterable[Slot], rename: Callable[[str], str]) -> bool:
    """Apply ``rename`` to every slot in order; True if any value changed."""
    changed = False
    for container, key in slots:
        old = container[key]
        new = rename(old)
        if new != old:
            container[key] = new
            changed = True
    return changed
