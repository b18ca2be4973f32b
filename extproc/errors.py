"""Errors the gateway answers itself, in the calling API's own error format.

SDKs parse these like any provider error, so a client sees e.g. ``openai.BadRequestError`` with our
message instead of an opaque failure.
"""

from __future__ import annotations

import json

from .wire import Immediate

_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}


def gateway_error(status: int, message: str, *, api: str | None = None, code: str | None = None,
                  details: str | None = None) -> Immediate:
    if api == "messages":
        doc = {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    else:
        doc = {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "api_error"), "param": None,
                         "code": code}}
    return Immediate(status=status, body=json.dumps(doc).encode(), headers={"x-llmproxy-error": code or "gateway"},
                     details=details or f"llmproxy_{code or 'error'}")
