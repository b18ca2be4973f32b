"""Explicit client feedback (``POST /v1/feedback {request_id, score | thumbs, comment}``).

Feedback moves a pattern's success rate and an experiment's outcome, so it is bound to whoever made
the request: a client may only rate its own requests. The sidecar passes the caller's identity:

* ``key_id``: the gateway key id of the feedback request when gateway keys are in use; the rated
  exchange must have been made with that key (its ``client_key_fp`` is the key id);
* passthrough (no gateway key, ``key_id=None``): ``client_fp``, the fingerprint of the caller's
  credential (``key_...``), else its address; it must equal the exchange's ``client_key_fp``
  (else ``client_addr``).

A mismatch raises :class:`FeedbackForbidden` (a ValueError: answer 403); a request that is not
recorded within ``wait_s`` raises ValueError (answer 400). Operators (the control API, in-process
code) call without ``key_id``: their feedback is not bound to a client.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from intelligence.memory.repository import PatternRepository

MAX_COMMENT_CHARS = 2000
MAX_REQUEST_ID_CHARS = 200
GOOD_SCORE = 0.5  # a score in [0, 1] at or above this counts as a success
DEFAULT_WAIT_S = 2.0  # the sidecar records an exchange a moment after answering it


class FeedbackForbidden(ValueError):
    """Feedback for a request another client made (the sidecar answers 403)."""


class _Operator:
    def __repr__(self) -> str:
        return "OPERATOR"


OPERATOR: Final = _Operator()  # the default identity: an operator or in-process caller, not bound to a client
_OWNER_SQL = text("SELECT client_key_fp, client_addr FROM exchanges WHERE request_id = :rid ORDER BY started_at DESC LIMIT 1")


@dataclass(frozen=True, slots=True)
class FeedbackInput:
    request_id: str
    score: float | None = None
    thumbs: str | None = None  # up | down
    comment: str | None = None

    @property
    def ok(self) -> bool:
        """Thumbs decide when given; otherwise the score does."""
        if self.thumbs is not None:
            return self.thumbs == "up"
        assert self.score is not None
        return self.score >= GOOD_SCORE

    @classmethod
    def parse(cls, payload: Any) -> FeedbackInput:
        """Validate a decoded JSON body; raises ValueError with a message fit for a 400 response."""
        if not isinstance(payload, dict):
            raise ValueError("body must be a JSON object")
        request_id = payload.get("request_id")
        if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > MAX_REQUEST_ID_CHARS:
            raise ValueError("request_id must be a non-empty string")
        return cls.build(
            request_id.strip(), score=payload.get("score"), thumbs=payload.get("thumbs"), comment=payload.get("comment")
        )

    @classmethod
    def build(cls, request_id: str, *, score: Any = None, thumbs: Any = None, comment: Any = None) -> FeedbackInput:
        if score is None and thumbs is None:
            raise ValueError("give a score (0..1) or thumbs ('up' or 'down')")
        if score is not None:
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) or not 0 <= score <= 1:
                raise ValueError("score must be a number between 0 and 1")
            score = float(score)
        if thumbs is not None:
            if isinstance(thumbs, bool):
                thumbs = "up" if thumbs else "down"
            if not isinstance(thumbs, str) or thumbs.strip().lower() not in ("up", "down"):
                raise ValueError("thumbs must be 'up' or 'down'")
            thumbs = thumbs.strip().lower()
        if comment is not None and not isinstance(comment, str):
            raise ValueError("comment must be a string")
        return cls(request_id=request_id, score=score, thumbs=thumbs, comment=comment[:MAX_COMMENT_CHARS] if comment else None)


async def _owner(engine: AsyncEngine, request_id: str, wait_s: float) -> tuple[str | None, str | None] | None:
    """(client_key_fp, client_addr) of the exchange, polling up to ``wait_s`` for it to be recorded."""
    deadline = time.monotonic() + max(0.0, wait_s)
    for _ in range(1000):  # bounded; the deadline ends it long before
        async with engine.connect() as conn:
            row = (await conn.execute(_OWNER_SQL, {"rid": request_id})).first()
        if row is not None:
            return row.client_key_fp, row.client_addr
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.1)
    return None


async def check_owner(
    engine: AsyncEngine, request_id: str, *, key_id: str | None, client_fp: str | None = None, wait_s: float = DEFAULT_WAIT_S
) -> None:
    """Raise unless the caller (gateway key ``key_id``, else passthrough ``client_fp``) made the request."""
    caller = key_id if key_id is not None else client_fp
    if not caller:
        raise FeedbackForbidden("feedback needs the caller's identity (a gateway key, or the credential it sent)")
    owner = await _owner(engine, request_id, wait_s)
    if owner is None:
        raise ValueError(f"no recorded request {request_id!r}; feedback is accepted for a request once it is recorded")
    client_key_fp, client_addr = owner
    made_by = client_key_fp if client_key_fp is not None else client_addr
    if key_id is not None and client_key_fp != key_id:
        raise FeedbackForbidden(f"request {request_id!r} was not made with this gateway key; feedback refused")
    if key_id is None and made_by != client_fp:
        raise FeedbackForbidden(f"request {request_id!r} was made by another client; feedback refused")


async def add_feedback(
    engine: AsyncEngine,
    request_id: str,
    *,
    score: float | None = None,
    thumbs: str | bool | None = None,
    comment: str | None = None,
    key_id: str | None | _Operator = OPERATOR,
    client_fp: str | None = None,
    wait_s: float = DEFAULT_WAIT_S,
) -> int:
    """Store feedback for a request; returns the feedback id.

    ``key_id``: the gateway key id the feedback request was made with, or None for passthrough (then
    ``client_fp`` -- the credential's fingerprint, else the client address -- identifies the caller).
    The request must have been made by the same key (or client): else :class:`FeedbackForbidden`.
    Left out (``OPERATOR``), the feedback is an operator's and the exchange may not be recorded yet.
    Raises ValueError for invalid input or an unknown request. The feedback also becomes a 'feedback'
    outcome signal, which moves the success rate of the request's pattern.
    """
    item = FeedbackInput.build(request_id, score=score, thumbs=thumbs, comment=comment)
    if not isinstance(key_id, _Operator):
        await check_owner(engine, item.request_id, key_id=key_id, client_fp=client_fp, wait_s=wait_s)
    async with async_sessionmaker(engine)() as session, session.begin():
        return await PatternRepository(session).add_feedback(
            item.request_id, score=item.score, thumbs=item.thumbs, comment=item.comment, ok=item.ok
        )
