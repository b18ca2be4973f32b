"""Test doubles shipped with the package (``llmproxy bench`` runs against them too)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .switches import Scripted

if TYPE_CHECKING:
    from .fakes import FakeProvider, ReceivedRequest

__all__ = ["FakeProvider", "ReceivedRequest", "Scripted"]


def __getattr__(name: str) -> Any:
    # Imported lazily so `python -m extproc.testing.fakes` does not find the
    # module already imported by its own package (runpy warns about that).
    if name in ("FakeProvider", "ReceivedRequest"):
        from . import fakes

        return getattr(fakes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
