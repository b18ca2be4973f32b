"""The one exception tree: everything llmproxy raises on purpose derives from :class:`LlmproxyError`.

Each class also derives from the builtin its callers have always caught (``ValueError`` for bad input,
``LookupError`` for what does not exist, ...), so ``except ValueError`` keeps working while
``except LlmproxyError`` catches every deliberate failure of the project and nothing else.
Library errors (asyncpg, grpc, httpx) are translated at the boundary that knows what they mean.
"""

from __future__ import annotations


class LlmproxyError(Exception):
    """A failure llmproxy raises on purpose, with a message fit for an operator or a client."""


class InvalidInput(LlmproxyError, ValueError):
    """Something a client or operator sent cannot be used (a policy, a URL, a spec, a patch)."""


class ConfigError(LlmproxyError, ValueError):
    """A setting is missing, malformed or unsafe (a weak secret, a bad TLS file, an allowlist entry)."""


class NotFound(LlmproxyError, LookupError):
    """The thing asked for does not exist (a key, a policy, a verdict)."""


class Refused(LlmproxyError, PermissionError):
    """The caller may not do this (a token, a role, feedback for someone else's request)."""


class Unavailable(LlmproxyError, RuntimeError):
    """A dependency is away, busy or not started yet; retrying later may succeed."""


__all__ = ["ConfigError", "InvalidInput", "LlmproxyError", "NotFound", "Refused", "Unavailable"]
