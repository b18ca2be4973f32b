"""What every exchange shares: settings and the long-lived services the stages use.

Built once in the entrypoint (``extproc/__main__.py``) and handed to :func:`extproc.stages.default_stages`;
tests build one with fakes (``extproc.testing``). Optional services left as None switch their concern off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from intelligence.keys.cache import KeySnapshot

from .auth import AuthMode
from .routing import ModelRouter
from .settings import SidecarSettings

if TYPE_CHECKING:
    from intelligence.enhance.live import Enhancer
    from intelligence.keys.meter import UsageMeter
    from intelligence.records import Recorder

    from .overload import Shedder
    from .screening import Guard


class FeedbackSink(Protocol):
    """Stores client feedback, bound to who sends it: the gateway key (``key_id``), or in passthrough
    mode the fingerprint of the client's credential (``client_fp``). Raises
    ``intelligence.memory.feedback.FeedbackForbidden`` (a 403) for a request another client made, and
    ValueError (the message fits a 400) on invalid input."""

    async def submit(self, payload: Any, *, key_id: str | None, client_fp: str | None) -> int: ...


class KeySource(Protocol):
    @property
    def snapshot(self) -> KeySnapshot: ...


@dataclass
class Context:
    settings: SidecarSettings
    recorder: Recorder
    feedback: FeedbackSink | None = None
    guard: Guard | None = None  # detectors + policy; None runs no screening (tests of other concerns)
    keys: KeySource | None = None  # the gateway keys in memory (intelligence.keys.cache.KeyCache)
    meter: UsageMeter | None = None  # shared-database budgets per gateway key
    enhancer: Enhancer | None = None  # enhancements and experiments; None applies none
    load: Shedder | None = None  # load shedding (extproc.overload); None admits every exchange
    router: ModelRouter = field(init=False)
    auth_mode: AuthMode = field(init=False)

    def __post_init__(self) -> None:
        self.router = ModelRouter(self.settings.model_routes)
        self.auth_mode = AuthMode.parse(self.settings.auth_mode)

    @property
    def key_snapshot(self) -> KeySnapshot:
        return self.keys.snapshot if self.keys is not None else KeySnapshot.empty()


__all__ = ["Context", "FeedbackSink", "KeySource"]
