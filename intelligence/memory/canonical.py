"""The canonical text of a request: what pattern memory embeds and hashes.

Only three things describe what a caller wants: the last user turn (the intent), the start of the
system prompt (which application or role asks), and the names of the tools offered (what the
model may do). Earlier turns, assistant replies, tool results, sampling parameters and the model
name are left out: they describe the conversation so far, not the request's kind, and would make
two identical questions look different. The user turn comes first because the embedding model
truncates its input (256 word pieces for all-MiniLM-L6-v2): when something must be cut, it is the
system prompt, never the intent. See docs/patterns.md.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

# A system prompt is mostly boilerplate shared by every request of an application; its opening
# names the role, and more of it would let one app's prompt outweigh the user's words.
SYSTEM_CHARS = 200
# Well past the model's 256 word pieces, so the model, not this cut, decides what it reads; the
# cap only keeps a pasted document from being hashed and shipped to the model in full.
USER_CHARS = 2000
MAX_TOOLS = 16

_WS = re.compile(r"\s+")


def _clean(text: str | None, limit: int) -> str:
    if not text:
        return ""
    return _WS.sub(" ", text).strip()[:limit].rstrip()


@dataclass(frozen=True, slots=True)
class CanonicalPrompt:
    text: str  # what is embedded; "" when the request carries nothing to embed
    hash: str  # sha256 hex of text: equal texts share an embedding and a pattern

    @property
    def empty(self) -> bool:
        return not self.text


def canonical_prompt(
    prompt_user: str | None, prompt_system: str | None = None, tool_names: Iterable[str] = ()
) -> CanonicalPrompt:
    """Build the canonical text.

    Template (lines present only when the part is)::

        <last user turn, whitespace collapsed, <= 2000 chars>
        system: <system prompt, whitespace collapsed, first 200 chars>
        tools: <sorted unique tool names, comma-separated, at most 16>
    """
    parts: list[str] = []
    user = _clean(prompt_user, USER_CHARS)
    if user:
        parts.append(user)
    system = _clean(prompt_system, SYSTEM_CHARS)
    if system:
        parts.append(f"system: {system}")
    tools = sorted({t.strip() for t in tool_names if t and t.strip()})[:MAX_TOOLS]
    if tools:
        parts.append("tools: " + ", ".join(tools))
    text = "\n".join(parts)
    return CanonicalPrompt(text=text, hash=hashlib.sha256(text.encode("utf-8")).hexdigest())
