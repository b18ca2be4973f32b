"""How stored bodies are shown: pretty JSON, a sent-vs-forwarded diff, the assistant's text and
tool calls. Provider JSON is read through the provider adapters (extproc.providers), never here.
Every string that leaves this module has been through :func:`ui.redact.mask_secrets`.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

from intelligence.records import Body
from ui.redact import mask_secrets

_PROVIDER_PREFIXES = ("openai", "anthropic", "openrouter")
_MAX_SHOWN = 200_000  # characters of one body rendered; a 10 MB image body would freeze the browser


@dataclass(frozen=True, slots=True)
class ToolCallView:
    index: int
    client_name: str | None  # as the client saw it (original)
    upstream_name: str | None  # as the provider produced it (alias)
    arguments: str


def body_text(body: Body | None) -> str:
    """The body as display text: indented JSON when it parsed, else its text; masked and capped."""
    if body is None:
        return ""
    if body.json is not None:
        text = json.dumps(body.json, indent=2, ensure_ascii=False, sort_keys=True)
    else:
        text = body.text or ""
    if len(text) > _MAX_SHOWN:
        text = text[:_MAX_SHOWN] + f"\n... ({len(text) - _MAX_SHOWN} more characters not shown)"
    return mask_secrets(text)


def body_diff(sent: Body | None, forwarded: Body | None) -> str:
    """A unified diff from the request as the client sent it to the request as forwarded upstream."""
    a, b = body_text(sent).splitlines(), body_text(forwarded).splitlines()
    if a == b:
        return ""
    return "\n".join(difflib.unified_diff(a, b, "sent by client", "forwarded upstream", lineterm="", n=3))


def _endpoint(path: str | None):
    """The provider adapter for a gateway path (prefix routes carry the provider as first segment)."""
    from extproc.providers.registry import endpoint_for

    if not path:
        return None
    ep = endpoint_for(path)
    if ep is None:
        parts = path.split("/", 2)
        if len(parts) == 3 and parts[1] in _PROVIDER_PREFIXES:
            ep = endpoint_for("/" + parts[2])
    return ep


def _fold(path: str | None, body: Body | None):
    if body is None or not isinstance(body.json, dict):
        return None
    ep = _endpoint(path)
    if ep is None:
        return None
    try:
        return ep.fold(body.json)
    except Exception:  # noqa: BLE001 - an odd body is shown raw instead
        return None


def assistant_text(path: str | None, body: Body | None) -> str:
    """The reply text of a response body (reassembled already if it was streamed)."""
    folded = _fold(path, body)
    if folded is None:
        return ""
    return mask_secrets(folded.text or "")


def tool_calls(path: str | None, client_body: Body | None, upstream_body: Body | None) -> list[ToolCallView]:
    """Tool calls of a response, pairing the name the client got with the name the provider used."""
    client = _fold(path, client_body)
    upstream = _fold(path, upstream_body)
    c_calls = list(client.tool_calls) if client else []
    u_calls = list(upstream.tool_calls) if upstream else []
    views = []
    for i in range(max(len(c_calls), len(u_calls))):
        c = c_calls[i] if i < len(c_calls) else None
        u = u_calls[i] if i < len(u_calls) else None
        views.append(
            ToolCallView(
                index=i,
                client_name=c.name if c else None,
                upstream_name=u.name if u else None,
                arguments=mask_secrets((c or u).arguments if (c or u) else ""),
            )
        )
    return views
