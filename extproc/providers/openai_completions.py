"""OpenAI legacy text completions (``/v1/completions``): prompt in, text out, no tools."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from extproc.providers.base import Folded, RequestView
from extproc.providers.jsonshape import as_dict, as_int, as_list, as_str, clone, error_message
from extproc.providers.openai_chat import ask_openai_stream_usage, first_choice, usage_only_chunk
from extproc.providers.sse import SSEStreamProcessor
from extproc.providers.usage import openai_usage

if TYPE_CHECKING:
    from extproc.toolnames import ToolNameCodec


def prompt_text(prompt: Any) -> str | None:
    """A prompt is a string or a batch of strings (token-id prompts have no text)."""
    if isinstance(prompt, str):
        return prompt
    texts = [p for p in as_list(prompt) if isinstance(p, str)]
    return "\n".join(texts) if texts else None


class CompletionsEndpoint:
    api = "completions"

    def parse_request(self, body: dict) -> RequestView:
        return RequestView(
            api=self.api,
            model=as_str(body.get("model")),
            stream=body.get("stream") is True,
            tool_names=(),
            system=None,
            last_user=prompt_text(body.get("prompt")),
            max_tokens=as_int(body.get("max_tokens")),
            fallback_models=tuple(str(m) for m in as_list(body.get("models"))),
        )

    def alias_request(self, body: dict, codec: ToolNameCodec) -> bool:
        return False

    def restore_response(self, body: dict, codec: ToolNameCodec) -> bool:
        return False

    def fold(self, body: dict) -> Folded:
        choice = first_choice(body)
        return Folded(
            message=body,
            text=as_str(choice.get("text")) or "",
            finish_reason=as_str(choice.get("finish_reason")),
            usage=openai_usage(body.get("usage")),
            error=error_message(body),
        )

    def stream(self, codec: ToolNameCodec | None, *, drop_usage: bool = False) -> CompletionsStreamProcessor:
        return CompletionsStreamProcessor(self, codec, drop_usage=drop_usage)

    def ask_stream_usage(self, body: dict) -> bool:
        return ask_openai_stream_usage(body)


class CompletionsStreamProcessor(SSEStreamProcessor):
    def __init__(self, endpoint: CompletionsEndpoint, codec: ToolNameCodec | None, *, drop_usage: bool = False) -> None:
        super().__init__(endpoint, codec, drop_usage=drop_usage)
        self._head: dict[str, Any] = {}
        self._texts: dict[int, list[str]] = {}
        self._finish: dict[int, str] = {}
        self._usage: dict | None = None

    def _usage_only(self, obj: dict) -> bool:
        return usage_only_chunk(obj)

    def _observe(self, event: str | None, obj: dict) -> None:
        message = error_message(obj)
        if message is not None:
            self._error = message
        for key in ("id", "created", "model", "system_fingerprint"):
            if isinstance(obj.get(key), (str, int)):
                self._head.setdefault(key, obj[key])
        if isinstance(obj.get("usage"), dict):
            self._usage = obj["usage"]
        for pos, choice in enumerate(as_list(obj.get("choices"))):
            choice = as_dict(choice)
            index = as_int(choice.get("index"))
            index = pos if index is None else index
            texts = self._texts.setdefault(index, [])
            if isinstance(choice.get("text"), str):
                texts.append(choice["text"])
            if isinstance(choice.get("finish_reason"), str):
                self._finish[index] = choice["finish_reason"]

    def _assembled(self) -> dict:
        out: dict[str, Any] = {"id": self._head.get("id"), "object": "text_completion"}
        out["created"] = self._head.get("created")
        out["model"] = self._head.get("model")
        out["choices"] = [
            {"index": index, "text": "".join(texts), "finish_reason": self._finish.get(index)}
            for index, texts in sorted(self._texts.items())
        ]
        if self._usage is not None:
            out["usage"] = clone(self._usage)
        if "system_fingerprint" in self._head:
            out["system_fingerprint"] = self._head["system_fingerprint"]
        return out
