"""Claude verdict: a ``claude_verdict`` policy rule holds the request for Claude's judgement.

The guard decides whether a verdict is needed; this stage waits for it, bounded by the rule's
``timeout_ms``, and applies the rule's declared ``on_timeout`` (allow or block) when no verdict comes.
"""

from __future__ import annotations

from typing import ClassVar

from ..exchange import Exchange
from ..pipeline import Failure
from ..wire import Immediate


class ClaudeVerdictStage:
    name: ClassVar[str] = "claude_verdict"
    failure: ClassVar[Failure] = Failure.CLOSED

    async def request_body(self, ex: Exchange) -> Immediate | None:
        pending = ex.verdict
        if pending is None:
            return None
        refusal: Immediate | None = await pending.resolve()
        ex.notes.claude_verdict = pending.record()
        return refusal
