"""Admission: an overloaded sidecar refuses new exchanges with a fast 503 (``extproc.overload``).

Runs at request headers, after access (so the refusal is in the calling API's error format) and
before anything reads or screens the body. Refusing is failing closed: nothing is forwarded. The
refusal is an answer of the gateway's own, so the exchange is still recorded.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from ..context import Context
from ..errors import gateway_error
from ..exchange import Exchange
from ..pipeline import Failure
from ..wire import Immediate

log = logging.getLogger("llmproxy.overload")
RETRY_AFTER_S = 1


class AdmissionStage:
    name: ClassVar[str] = "admission"
    failure: ClassVar[Failure] = Failure.CLOSED

    def __init__(self, ctx: Context) -> None:
        self.load = ctx.load
        self._checked_attribute = False

    async def request_headers(self, ex: Exchange) -> Immediate | None:
        if self.load is None:
            return None
        if not self._checked_attribute:
            self._checked_attribute = True
            if ex.request.waited_ms is None:
                log.warning(
                    "Envoy sends no readable request.time attribute (ext_proc request_attributes in envoy.yaml): "
                    "load shedding sees only the event loop's lag, not how long requests wait"
                )
        if self.load.admit(ex.request.waited_ms):
            return None
        answer = gateway_error(
            503,
            "llmproxy: the gateway is overloaded and did not take this request; retry after a second",
            api=ex.api,
            code="gateway_overloaded",
        )
        answer.headers["retry-after"] = str(RETRY_AFTER_S)
        ex.notes.shed = True
        return answer
