"""Make values storable in Postgres text and jsonb.

Postgres text cannot hold U+0000, jsonb rejects the ``\\u0000`` escape and NaN/Infinity, and
asyncpg cannot encode lone surrogates (which ``json.loads`` happily produces from ``"\\ud800"``).
Bodies come from arbitrary clients and providers, so every string goes through here.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

REPLACEMENT = "\ufffd"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def clean_text(value: str) -> str:
    """``value`` with NUL and unpaired surrogates replaced by U+FFFD."""
    if "\x00" in value:
        value = value.replace("\x00", REPLACEMENT)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # surrogatepass keeps valid pairs joinable; decoding with "replace" turns lone halves into U+FFFD
        value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


def clean_optional_text(value: str | None) -> str | None:
    return None if value is None else clean_text(value)


def clean_json(value: Any) -> Any:
    """A copy of a JSON-like value that jsonb accepts (strings cleaned, non-finite floats -> None)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    # anything else (a Decimal, a datetime a caller slipped in) is kept as its text form
    return clean_text(str(value))


def clean_bigint(value: int | None) -> int | None:
    """Token counts outside bigint range are garbage from upstream; store NULL rather than fail the batch."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if value is None or isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if _INT64_MIN <= value <= _INT64_MAX else None


# ------------------------------------------------------------------------------------------------
# Output hygiene: what a client controls must not steer an operator's terminal or spreadsheet, and
# credentials carried in URLs must not reach logs or exports.

# Escape sequences are removed whole (their parameters would otherwise remain as text): CSI (ESC [ or
# the 8-bit CSI 0x9B, e.g. colours, cursor moves, screen clears), OSC (ESC ] or 0x9D, e.g. window
# titles, hyperlinks, clipboard writes; ended by BEL or ST, or by the end of the text), DCS/SOS/PM/APC
# strings (ESC P/X/^/_ or 0x90/0x98/0x9E/0x9F, ended by ST) and the two- and three-byte escapes.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|(?:\x1b[PX^_]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*(?:\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"
)
# C0 controls except tab and newline, DEL, C1 controls, and the Unicode bidirectional overrides and
# isolates (they reorder what the terminal shows: "Trojan Source", CVE-2021-42574).
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def strip_terminal_controls(value: str) -> str:
    """``value`` without ANSI escape sequences and control characters (tab and newline are kept)."""
    if not value:
        return value
    return _CONTROL_CHARS.sub("", _ESCAPE_SEQUENCE.sub("", value))


# OWASP "CSV injection": a cell starting with one of these is read as a formula by spreadsheets.
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading formula character gets an apostrophe before it."""
    return "'" + value if value.startswith(CSV_FORMULA_PREFIXES) else value


# Query (and fragment) parameters whose value is a credential. Names are compared lower-cased, with
# "-" read as "_"; names ending in one of SENSITIVE_PARAM_SUFFIXES count too (openai_api_key, id_token).
SENSITIVE_PARAMS = frozenset(
    {
        "key",
        "api_key",
        "apikey",
        "x_api_key",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth",
        "authorization",
        "sig",
        "signature",
        "password",
        "passwd",
        "pwd",
        "pass",
        "secret",
        "client_secret",
        "code",
        "x_amz_signature",
        "x_amz_credential",
        "x_amz_security_token",
        "x_goog_signature",
        "x_goog_credential",
    }
)
SENSITIVE_PARAM_SUFFIXES = ("_key", "_token", "_secret", "_password", "_signature")
REDACTED = "REDACTED"
_MAX_URL_DEPTH = 3  # URLs nested in parameters (legacy ?target_url=...) are redacted this deep
_URL_IN_TEXT = re.compile(r"""[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>`]+""")
_PARAM_IN_TEXT = re.compile(r"(?<![A-Za-z0-9_\-])([A-Za-z0-9_\-]+)=([^&\s#\"'<>`]*)")


def _sensitive(name: str) -> bool:
    n = unquote_plus(name).strip().lower().replace("-", "_")
    return n in SENSITIVE_PARAMS or n.endswith(SENSITIVE_PARAM_SUFFIXES)


def _redact_params(params: str, depth: int) -> str:
    """``a=1&key=s`` -> ``a=1&key=REDACTED``; untouched parameters keep their exact spelling."""
    out = []
    for part in params.split("&"):
        name, eq, value = part.partition("=")
        if eq and _sensitive(name):
            part = f"{name}={REDACTED}"
        elif eq and value:
            decoded = unquote_plus(value)
            if "://" in decoded or ("?" in decoded and "=" in decoded):
                inner = _redact(decoded, depth + 1)
                if inner != decoded:
                    part = f"{name}={inner if decoded == value else quote(inner, safe='')}"
        out.append(part)
    return "&".join(out)


def _redact(url: str, depth: int) -> str:
    if depth > _MAX_URL_DEPTH:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the host: redact what looks like parameters
        return _PARAM_IN_TEXT.sub(lambda m: f"{m[1]}={REDACTED}" if _sensitive(m[1]) else m[0], url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = _redact_params(parts.query, depth) if parts.query else parts.query
    fragment = _redact_params(parts.fragment, depth) if "=" in parts.fragment else parts.fragment
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url  # nothing to hide: the caller gets its exact string back
    rebuilt = parts._replace(netloc=netloc, query=query, fragment=fragment)
    out = urlunsplit(rebuilt)
    # urlunsplit drops an empty "?" or "#"; keep the original shape
    if parts.query == "" and "?" in url.split("#", 1)[0] and "?" not in out.split("#", 1)[0]:
        out = out.replace("#", "?#", 1) if "#" in out else out + "?"
    return out


def redact_url(url: str) -> str:
    """``url`` with credentials removed: userinfo (``user:pass@``) and the values of credential query
    and fragment parameters (``key``, ``api_key``, ``token``, ``access_token``, ``sig``, ``signature``,
    ``password``, ``*_key``, ``*_token``, ...) become ``REDACTED``. URLs nested in a parameter (the
    legacy ``/?target_url=...``) are redacted too. Works on absolute URLs and on paths with a query
    (``/v1/models?key=...``); anything else is returned unchanged. Never raises.
    """
    if not url or ("?" not in url and "@" not in url and "#" not in url):
        return url
    return _redact(url, 0)


def redact_urls_in_text(text: str) -> str:
    """Free text (an error message, a log line) with every URL in it passed through :func:`redact_url`."""
    if not text or "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m[0]), text)
