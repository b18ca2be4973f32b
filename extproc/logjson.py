"""Structured logs: one JSON object per line, secrets masked. ``LLMPROXY_LOG_FORMAT=json`` turns it on.

Each line carries ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``message`` and, when
known, ``request_id`` (from :data:`request_id_var`, or ``extra={"request_id": ...}``), plus ``exception``
for a logged traceback. Messages and tracebacks pass through the project's secret masker
(:func:`intelligence.detectors.secrets.redact_secrets`: API keys, tokens, passwords in URLs become
``<OPENAI_API_KEY>``, ``<BASIC_AUTH_CREDENTIALS>``, ...). The gateway never logs prompts; as a second
line of defence, ``extra`` fields are limited to :data:`EXTRA_FIELDS` (scalars only) and a message is cut at
:data:`MAX_MESSAGE_CHARS`.

Entrypoints call :func:`configure_logging` instead of ``logging.basicConfig``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import IO, Any

FORMAT_ENV = "LLMPROXY_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_MESSAGE_CHARS = 8192

# ``extra={...}`` keys copied into the JSON object (scalar values only). Anything else is dropped:
# a stray ``extra={"prompt": ...}`` never reaches the log.
EXTRA_FIELDS = frozenset(
    {
        "provider",
        "model",
        "status",
        "phase",
        "stage",
        "duration_ms",
        "session_id",
        "key_id",
        "rule",
        "policy",
        "component",
        "attempt",
        "count",
        "port",
    }
)

request_id_var: ContextVar[str | None] = ContextVar("llmproxy_request_id", default=None)


def set_request_id(request_id: str | None) -> Token:
    """Make ``request_id`` the current one (for this task/thread context); pass the token to :func:`reset_request_id`."""
    return request_id_var.set(request_id)


def reset_request_id(token: Token) -> None:
    request_id_var.reset(token)


@contextlib.contextmanager
def bound_request_id(request_id: str | None) -> Iterator[None]:
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


def _mask(text: str) -> str:
    try:
        from intelligence.detectors.secrets import redact_secrets
    except ImportError:  # pragma: no cover - the detector package ships with the project
        return text
    try:
        return redact_secrets(text)
    except Exception:  # noqa: BLE001 - masking must never lose the log line; say it could not be checked
        return "[log message withheld: secret masking failed]"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad %-format in a log call
            message = str(record.msg)
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + f"... [{len(message) - MAX_MESSAGE_CHARS} characters cut]"
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": _mask(message),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            doc["request_id"] = str(request_id)
        for key in EXTRA_FIELDS:
            value = record.__dict__.get(key)
            if isinstance(value, (str, int, float, bool)) and key not in doc:
                doc[key] = _mask(value) if isinstance(value, str) else value
        if record.exc_info:
            doc["exception"] = _mask(self.formatException(record.exc_info))
        elif record.exc_text:
            doc["exception"] = _mask(record.exc_text)
        if record.stack_info:
            doc["stack"] = _mask(self.formatStack(record.stack_info))
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)


def json_enabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    value = (env.get("LLMPROXY_LOG_FORMAT") or "text").strip().lower()
    if value not in ("json", "text"):
        raise ValueError(f"{FORMAT_ENV} must be json or text, not {value!r}")
    return value == "json"


def configure_logging(
    level: int = logging.INFO, *, stream: IO[str] | None = None, environ: Mapping[str, str] | None = None
) -> logging.Handler:
    """Replace the root logger's handlers with one writing to ``stream`` (default stderr).

    JSON lines when ``$LLMPROXY_LOG_FORMAT`` is ``json``; otherwise the project's usual text format.
    Returns the handler.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json_enabled(environ) else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
