"""Carrying out policy decisions on provider JSON, on the hot path.

The policy language (parsing, validation, evaluation, storage) is :mod:`intelligence.policy`, shared
with the dashboard; what a decision does to a request or response body needs the provider adapters'
edits, so it lives here.
"""

from .apply import Redactions, apply_request, apply_response, redact_text

__all__ = ["Redactions", "apply_request", "apply_response", "redact_text"]
