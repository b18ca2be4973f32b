"""OpenAI embeddings (``/v1/embeddings``): never streamed, no tools."""

from __future__ import annotations

from typing import TYPE_CHECKING

from extproc.providers.base import Folded, RequestView
from extproc.providers.jsonshape import as_str, error_message
from extproc.providers.openai_completions import prompt_text
from extproc.providers.usage import openai_usage

if TYPE_CHECKING:
    from extproc.toolnames import ToolNameCodec


class EmbeddingsEndpoint:
    api = "embeddings"

    def parse_request(self, body: dict) -> RequestView:
        return RequestView(
            api=self.api,
            model=as_str(body.get("model")),
            stream=False,
            tool_names=(),
            system=None,
            last_user=prompt_text(body.get("input")),
            max_tokens=None,
        )

    def alias_request(self, body: dict, codec: ToolNameCodec) -> bool:
        return False

    def restore_response(self, body: dict, codec: ToolNameCodec) -> bool:
        return False

    def fold(self, body: dict) -> Folded:
        return Folded(message=body, usage=openai_usage(body.get("usage")), error=error_message(body))

    def stream(self, codec: ToolNameCodec | None, *, drop_usage: bool = False) -> PassThroughProcessor:
        return PassThroughProcessor(self)

    def ask_stream_usage(self, body: dict) -> bool:
        return False  # this API's streams report usage without being asked


class PassThroughProcessor:
    """For bodies that are not event streams: bytes go through, nothing is assembled.

    Embeddings are one JSON document; the sidecar folds it with ``fold`` when buffered.
    Holding it here would mean buffering the whole body, which a stream processor must not.
    """

    def __init__(self, endpoint: EmbeddingsEndpoint) -> None:
        self._endpoint = endpoint

    def feed(self, chunk: bytes) -> bytes:
        return bytes(chunk)

    def end(self) -> bytes:
        return b""

    def result(self) -> Folded:
        return Folded(message={})
