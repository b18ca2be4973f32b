"""Metering: a gateway key with token budgets is charged for streamed responses too.

Budgets count the tokens each response reports. OpenAI-style streams report usage only when asked
(``stream_options.include_usage``); for a key with a token budget the gateway asks, and the usage-only
event the client did not ask for is left out of what the client receives (the tool-name stage's
stream decoder drops it). The record stage charges the key once the exchange ends.
"""

from __future__ import annotations

from typing import ClassVar

from ..exchange import Exchange
from ..pipeline import Failure


class MeteringStage:
    name: ClassVar[str] = "metering"
    # Without it a stream is charged requests but not tokens: a gap in enforcement, not in screening.
    failure: ClassVar[Failure] = Failure.OPEN

    async def request_body(self, ex: Exchange) -> None:
        req = ex.request
        key = ex.auth.key
        if key is None or req.doc is None or req.endpoint is None:
            return
        budgets = key.budgets
        if budgets.tpm is None and budgets.tpd is None:
            return
        if req.endpoint.ask_stream_usage(req.doc):
            req.stream_usage_added = req.changed = True
