"""How stored bodies are shown: pretty JSON, a sent-vs-forwarded diff, the assistant's text and tool calls.

The reply text and tool calls come from the provider-neutral summary the gateway records with each
exchange (``ExchangeRecord.response_text`` / ``tool_calls``, migration 0013): the provider adapters
read provider JSON once, in the sidecar, and nothing here parses it. Exchanges recorded before the
summary existed have none; the pages then show the raw body instead.
Every string that leaves this module has been through :func:`ui.redact.mask_secrets`.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from intelligence.records import Body
from ui.redact import mask_secrets

_MAX_SHOWN = 200_000  # characters of one body rendered; a 10 MB image body would freeze the browser


@dataclass(frozen=True, slots=True)
class ToolCallView:
    index: int
    client_name: str | None  # as the client saw it (original)
    upstream_name: str | None  # as the provider produced it (alias)
    arguments: str


def body_text(body: Body | None, limit: int = _MAX_SHOWN) -> str:
    """The body as display text: indented JSON when it parsed, else its text; masked and capped."""
    if body is None:
        return ""
    if body.json is not None:
        text = json.dumps(body.json, indent=2, ensure_ascii=False, sort_keys=True)
    else:
        text = body.text or ""
    if len(text) > limit:
        text = text[:limit] + f"\n... ({len(text) - limit} more characters not shown)"
    return mask_secrets(text)


def body_diff(sent: Body | None, forwarded: Body | None) -> str:
    """A unified diff from the request as the client sent it to the request as forwarded upstream."""
    a, b = body_text(sent).splitlines(), body_text(forwarded).splitlines()
    if a == b:
        return ""
    return "\n".join(difflib.unified_diff(a, b, "sent by client", "forwarded upstream", lineterm="", n=3))


def summarised(response_text: str | None, calls: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> bool:
    """Whether an exchange carries the response summary (rows recorded before it existed do not)."""
    return response_text is not None or bool(calls)


def assistant_text(response_text: str | None) -> str:
    """The reply text as the client got it (reassembled already if it was streamed), masked; "" when none."""
    return mask_secrets(response_text or "")


def tool_calls(calls: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[ToolCallView]:
    """Tool calls of a response: the name the client got next to the name the provider used."""
    views = []
    for i, c in enumerate(calls):
        if not isinstance(c, dict):
            continue
        args = c.get("arguments")
        views.append(
            ToolCallView(
                index=i,
                client_name=_name(c.get("name")),
                upstream_name=_name(c.get("upstream_name")),
                arguments=mask_secrets(args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)),
            )
        )
    return views


def reply_preview(response_text: str | None, calls: tuple[dict[str, Any], ...], response: Body | None, limit: int = 2000) -> str:
    """One turn's answer in a conversation view: the text and the tools it called, or (no summary) the raw body."""
    if summarised(response_text, calls):
        names = [v.client_name for v in tool_calls(calls) if v.client_name]
        return "\n".join(filter(None, [assistant_text(response_text), ("→ calls " + ", ".join(names)) if names else ""]))
    return body_text(response, limit=limit)


def _name(value: Any) -> str | None:
    return mask_secrets(str(value)) if value not in (None, "") else None
