"""Errors the gateway answers itself, in the calling API's own error format.

SDKs parse these like any provider error, so a client sees e.g. ``openai.BadRequestError`` with our
message instead of an opaque failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .providers.registry import error_body
from .wire import Immediate

if TYPE_CHECKING:
    from intelligence.policy.decision import Block


def gateway_error(
    status: int, message: str, *, api: str | None = None, code: str | None = None, details: str | None = None
) -> Immediate:
    return Immediate(
        status=status,
        body=error_body(api, status, message, code),
        headers={"x-llmproxy-error": code or "gateway"},
        details=details or f"llmproxy_{code or 'error'}",
    )


def refusal(block: Block, api: str | None) -> Immediate:
    """A policy block (``intelligence.policy.decision.Block``) as the answer, in the API's error format."""
    imm = gateway_error(block.status, block.message, api=api, code=block.code, details=f"llmproxy_policy_{block.code}")
    imm.headers["x-llmproxy-policy-rule"] = block.rule
    if block.retry_after is not None:
        imm.headers["retry-after"] = str(block.retry_after)
    return imm
