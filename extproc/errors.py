"""Errors the gateway answers itself, in the calling API's own error format.

SDKs parse these like any provider error, so a client sees e.g. ``openai.BadRequestError`` with our
message instead of an opaque failure.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .wire import Immediate

if TYPE_CHECKING:
    from intelligence.policy.decision import Block

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


def gateway_error(
    status: int, message: str, *, api: str | None = None, code: str | None = None, details: str | None = None
) -> Immediate:
    if api == "messages":
        doc = {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    else:
        doc = {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "api_error"), "param": None, "code": code}}
    return Immediate(
        status=status,
        body=json.dumps(doc).encode(),
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
