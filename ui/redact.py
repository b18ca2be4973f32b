"""Last line of defence before anything from a request reaches the screen: no credentials.

The request log already drops credential headers; bodies and other headers come from clients
and may still carry keys (a pasted API key in a prompt, a custom auth header). Everything the
dashboard shows from a body or header passes through here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MASK = "[redacted]"

# Well-known credential shapes: provider keys, cloud keys, tokens, JWTs, private keys.
_SECRET_PATTERNS = [
    re.compile(r"\bsk-(?:ant-|proj-|or-v1-)?[A-Za-z0-9_\-]{16,}"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{30,}\b"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{8,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"),
    # key = value / "key": "value" assignments of secret-named settings
    re.compile(
        r"(?i)((?:api[_-]?key|secret|password|passwd|access[_-]?token|auth[_-]?token)[\"']?\s*[:=]\s*[\"']?)"
        r"[^\s\"',;]{6,}"
    ),
]

# Header names whose value is a credential whatever it looks like.
_SECRET_HEADER = re.compile(r"(?i)auth|key|token|secret|cookie|password|session-token|signature")
# A long opaque token (letters and digits mixed) in a header value is treated as a credential.
_OPAQUE = re.compile(r"^(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_\-+/=.]{24,}$")


def mask_secrets(text: str) -> str:
    """``text`` with every credential-shaped substring replaced by :data:`MASK`."""
    for pattern in _SECRET_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        else:
            text = pattern.sub(MASK, text)
    return text


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers fit to display: credential-named ones and opaque token values masked."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        value = str(value)
        if _SECRET_HEADER.search(name) or _OPAQUE.match(value.strip()):
            out[name] = MASK
        else:
            out[name] = mask_secrets(value)
    return out
