"""Enhance: live enhancements and experiment arms (intelligence.enhance.live.Enhancer).

Advisory, so it fails open: a failed lookup forwards the request as the client sent it. When nothing
is live, or the client sent ``x-enhance: off``, the stage returns without awaiting anything.
"""

from __future__ import annotations

from typing import ClassVar

from intelligence.enhance.live import OPT_OUT_HEADER

from ..context import Context
from ..exchange import Exchange
from ..pipeline import Failure


class EnhanceStage:
    name: ClassVar[str] = "enhance"
    failure: ClassVar[Failure] = Failure.OPEN

    def __init__(self, ctx: Context) -> None:
        self.enhancer = ctx.enhancer

    async def request_body(self, ex: Exchange) -> None:
        req = ex.request
        if OPT_OUT_HEADER in req.headers:
            ex.reply.remove_headers.append(OPT_OUT_HEADER)  # a gateway control: the provider never sees it
        enhancer = self.enhancer
        if enhancer is None or req.doc is None or req.view is None or not enhancer.wants(req.view.api, req.headers):
            return
        session = ex.session()  # the assignment unit: fixed before the arm is chosen
        applied = await enhancer.enhance(
            req.view, req.doc, req.view.api, session, req.headers, client=ex.client or ex.client_addr
        )
        if applied is None:
            return
        ex.notes.enhancement = applied.record()
        if applied.changed:
            req.doc, req.changed = applied.doc, True
