"""Feedback: ``POST /v1/feedback`` is answered by the gateway itself (202), never forwarded.

The feedback table is its record, so these posts are not logged as exchanges. Feedback is accepted
only from the client that made the request it is about: the gateway key, or in passthrough mode the
fingerprint of the same provider credential.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import ClassVar

from intelligence.memory.feedback import FeedbackForbidden

from ..context import Context
from ..errors import gateway_error
from ..exchange import Exchange, Route
from ..pipeline import Failure
from ..wire import Immediate

log = logging.getLogger("llmproxy.feedback")
USAGE = "llmproxy: POST a JSON body {request_id, score|thumbs, comment} to /v1/feedback"
TIMEOUT_S = 5.0


class FeedbackStage:
    name: ClassVar[str] = "feedback"
    failure: ClassVar[Failure] = Failure.CLOSED

    def __init__(self, ctx: Context) -> None:
        self.sink = ctx.feedback

    async def request_headers(self, ex: Exchange) -> Immediate | None:
        if ex.request.route is not Route.FEEDBACK:
            return None
        ex.record = False
        if ex.request.method != "POST":
            return gateway_error(405, USAGE, code="feedback_usage")
        return None

    async def request_body(self, ex: Exchange) -> Immediate | None:
        if ex.request.route is not Route.FEEDBACK:
            return None
        if not ex.request.body:
            return gateway_error(400, USAGE, code="feedback_usage")
        if self.sink is None:
            return gateway_error(503, "llmproxy: feedback is not available (no pattern memory)", code="feedback_unavailable")
        client_fp = None if ex.auth.key_id is not None else (ex.client or ex.client_addr)
        try:
            fid = await asyncio.wait_for(
                self.sink.submit(ex.request.doc, key_id=ex.auth.key_id, client_fp=client_fp), timeout=TIMEOUT_S
            )
        except FeedbackForbidden as exc:  # a ValueError too: before the 400 below
            return gateway_error(403, f"llmproxy: {exc}", code="feedback_forbidden")
        except ValueError as exc:
            return gateway_error(400, f"llmproxy: invalid feedback: {exc}", code="invalid_feedback")
        except Exception as exc:  # noqa: BLE001 - the database away: the client should retry, nothing was stored
            log.warning("feedback not stored: %s", type(exc).__name__)
            return gateway_error(503, "llmproxy: feedback could not be stored right now; retry", code="feedback_unavailable")
        doc = ex.request.doc or {}
        body = json.dumps({"ok": True, "feedback_id": fid, "request_id": doc.get("request_id")}).encode()
        return Immediate(status=202, body=body, details="llmproxy_feedback")
