"""Provider-neutral views of requests and responses, and the adapter protocols.

Only the modules of this package know provider JSON shapes; the sidecar talks to
them through :class:`Endpoint` and :class:`StreamProcessor` and reads the plain
values defined here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from intelligence.records import Usage

if TYPE_CHECKING:
    from extproc.toolnames import ToolNameCodec


@dataclass(frozen=True)
class ToolCall:
    id: str | None
    name: str
    arguments: str  # JSON text, joined from deltas when streamed


@dataclass(frozen=True)
class RequestView:
    api: str  # chat | responses | embeddings | messages | ollama_chat | ollama_generate | completions
    model: str | None
    stream: bool
    tool_names: tuple[str, ...]  # declared tool names as the client sent them
    system: str | None
    last_user: str | None
    max_tokens: int | None
    first_user: str | None = None  # the conversation's opening user turn: identifies a session across turns
    fallback_models: tuple[str, ...] = ()  # further models the provider may use (OpenRouter's `models` list)

    @property
    def models(self) -> tuple[str, ...]:
        """Every model this request may reach: a key's model scope must cover all of them."""
        return ((self.model,) if self.model else ()) + self.fallback_models


@dataclass(frozen=True)
class Folded:
    """A complete response, parsed from JSON or reassembled from a stream."""

    message: dict
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    # A stream that ended without its API's end event ([DONE], message_stop, response.completed,
    # Ollama's done line): the provider cut it short. Always False for a parsed (non-streamed) body.
    unterminated: bool = False


class StreamProcessor(Protocol):
    def feed(self, chunk: bytes) -> bytes:
        """Bytes to send to the client now (possibly rewritten); may be b""."""
        ...

    def end(self) -> bytes:
        """Flush whatever is held at end of stream."""
        ...

    def result(self) -> Folded:
        """Reassembled response; best-effort if called before end()."""
        ...


class Endpoint(Protocol):
    api: str

    def parse_request(self, body: dict) -> RequestView: ...

    def alias_request(self, body: dict, codec: ToolNameCodec) -> bool: ...

    def restore_response(self, body: dict, codec: ToolNameCodec) -> bool: ...

    def fold(self, body: dict) -> Folded: ...

    def stream(self, codec: ToolNameCodec | None, *, drop_usage: bool = False) -> StreamProcessor:
        """The decoder of a streamed response; ``drop_usage`` leaves out the usage-only event that
        :meth:`ask_stream_usage` asked for (the client did not)."""
        ...

    def ask_stream_usage(self, body: dict) -> bool:
        """Make a streamed request report token usage when the API only does so on request;
        True when ``body`` changed (False for APIs whose streams always carry usage)."""
        ...
