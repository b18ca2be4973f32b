"""Explicit client feedback (``POST /v1/feedback {request_id, score | thumbs, comment}``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from intelligence.memory.repository import PatternRepository

MAX_COMMENT_CHARS = 2000
MAX_REQUEST_ID_CHARS = 200
GOOD_SCORE = 0.5  # a score in [0, 1] at or above this counts as a success


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


async def add_feedback(
    engine: AsyncEngine,
    request_id: str,
    *,
    score: float | None = None,
    thumbs: str | bool | None = None,
    comment: str | None = None,
) -> int:
    """Store feedback for a request (its exchange may not be recorded yet); returns the feedback id.

    Raises ValueError for invalid input. The feedback also becomes a 'feedback' outcome signal,
    which moves the success rate of the request's pattern.
    """
    item = FeedbackInput.build(request_id, score=score, thumbs=thumbs, comment=comment)
    async with async_sessionmaker(engine)() as session, session.begin():
        return await PatternRepository(session).add_feedback(
            item.request_id, score=item.score, thumbs=item.thumbs, comment=item.comment, ok=item.ok
        )
