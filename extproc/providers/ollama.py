"""Ollama native API (``/api/chat``, ``/api/generate``): NDJSON streams, streaming by default."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from extproc.providers.base import Folded, RequestView, ToolCall
from extproc.providers.jsonshape import as_dict, as_int, as_list, as_str, clone, dumps, error_message
from extproc.providers.ndjson import NDJSONStreamProcessor
from extproc.providers.openai_chat import first_user_text, system_and_last_user
from extproc.providers.renaming import Slot, rename_slots, slot, slot_names
from extproc.providers.usage import ollama_usage

if TYPE_CHECKING:
    from extproc.toolnames import ToolNameCodec


def _streams(body: dict) -> bool:
    # Ollama streams unless told not to; an absent or null "stream" means true.
    return body.get("stream") is not False


def _max_tokens(body: dict) -> int | None:
    return as_int(as_dict(body.get("options")).get("num_predict"))


def _function_slots(entries: Any) -> list[Slot]:
    slots: list[Slot] = []
    for entry in as_list(entries):
        slots += slot(as_dict(entry).get("function"))
    return slots


def _declared_slots(body: dict) -> list[Slot]:
    return _function_slots(body.get("tools"))


def _tool_calls_of(message: dict) -> tuple[ToolCall, ...]:
    calls: list[ToolCall] = []
    for tool_call in as_list(message.get("tool_calls")):
        tool_call = as_dict(tool_call)
        function = as_dict(tool_call.get("function"))
        if isinstance(function.get("name"), str):
            arguments = function.get("arguments")
            text = arguments if isinstance(arguments, str) else dumps(arguments if arguments is not None else {})
            calls.append(ToolCall(as_str(tool_call.get("id")), function["name"], text))
    return tuple(calls)


class _OllamaEndpoint:
    api = ""

    def alias_request(self, body: dict, codec: ToolNameCodec) -> bool:
        return False

    def restore_response(self, body: dict, codec: ToolNameCodec) -> bool:
        return False


class OllamaChatEndpoint(_OllamaEndpoint):
    api = "ollama_chat"

    def parse_request(self, body: dict) -> RequestView:
        system, last_user = system_and_last_user(body.get("messages"))
        return RequestView(
            api=self.api,
            model=as_str(body.get("model")),
            stream=_streams(body),
            tool_names=slot_names(_declared_slots(body)),
            system=system,
            last_user=last_user,
            first_user=first_user_text(body.get("messages")),
            max_tokens=_max_tokens(body),
        )

    def alias_request(self, body: dict, codec: ToolNameCodec) -> bool:
        slots = _declared_slots(body)
        for message in as_list(body.get("messages")):
            message = as_dict(message)
            slots += _function_slots(message.get("tool_calls"))
            if message.get("role") == "tool":
                slots += slot(message, "tool_name")
        return rename_slots(slots, codec.encode)

    def restore_response(self, body: dict, codec: ToolNameCodec) -> bool:
        return rename_slots(_function_slots(as_dict(body.get("message")).get("tool_calls")), codec.decode)

    def fold(self, body: dict) -> Folded:
        message = as_dict(body.get("message"))
        return Folded(
            message=body,
            text=as_str(message.get("content")) or "",
            tool_calls=_tool_calls_of(message),
            finish_reason=as_str(body.get("done_reason")),
            usage=ollama_usage(body),
            error=error_message(body),
        )

    def stream(self, codec: ToolNameCodec | None, *, drop_usage: bool = False) -> OllamaStreamProcessor:
        return OllamaStreamProcessor(self, codec, content_key="message")

    def ask_stream_usage(self, body: dict) -> bool:
        return False  # this API's streams report usage without being asked


class OllamaGenerateEndpoint(_OllamaEndpoint):
    api = "ollama_generate"

    def parse_request(self, body: dict) -> RequestView:
        return RequestView(
            api=self.api,
            model=as_str(body.get("model")),
            stream=_streams(body),
            tool_names=(),
            system=as_str(body.get("system")),
            last_user=as_str(body.get("prompt")),
            max_tokens=_max_tokens(body),
        )

    def fold(self, body: dict) -> Folded:
        return Folded(
            message=body,
            text=as_str(body.get("response")) or "",
            finish_reason=as_str(body.get("done_reason")),
            usage=ollama_usage(body),
            error=error_message(body),
        )

    def stream(self, codec: ToolNameCodec | None, *, drop_usage: bool = False) -> OllamaStreamProcessor:
        return OllamaStreamProcessor(self, None, content_key=None)

    def ask_stream_usage(self, body: dict) -> bool:
        return False  # this API's streams report usage without being asked


class OllamaStreamProcessor(NDJSONStreamProcessor):
    """Joins the per-line pieces; counts and done_reason come from the ``done`` line.

    ``content_key`` is "message" for /api/chat (pieces inside a message object) and None
    for /api/generate (pieces at top level under "response").
    """

    def __init__(self, endpoint: _OllamaEndpoint, codec: ToolNameCodec | None, content_key: str | None) -> None:
        super().__init__(endpoint, codec)
        self._content_key = content_key
        self._meta: dict[str, Any] = {}  # top-level fields, latest wins
        self._role: str | None = None
        self._content: list[str] = []
        self._thinking: list[str] = []
        self._tool_calls: list[Any] = []

    def _observe(self, obj: dict) -> None:
        message = error_message(obj)
        if message is not None:
            self._error = message
            return
        for key, value in obj.items():
            if key not in ("message", "response", "thinking"):
                self._meta[key] = value
        source = as_dict(obj.get(self._content_key)) if self._content_key else obj
        if isinstance(source.get("role"), str):
            self._role = source["role"]
        text = source.get("content" if self._content_key else "response")
        if isinstance(text, str):
            self._content.append(text)
        if isinstance(source.get("thinking"), str):
            self._thinking.append(source["thinking"])
        self._tool_calls += as_list(source.get("tool_calls"))

    def _may_carry_names(self, obj: dict) -> bool:
        return bool(as_dict(obj.get("message")).get("tool_calls"))

    def _assembled(self) -> dict:
        out: dict[str, Any] = clone(self._meta)
        if self._content_key is None:
            out["response"] = "".join(self._content)
            if self._thinking:
                out["thinking"] = "".join(self._thinking)
            return out
        message: dict[str, Any] = {"role": self._role or "assistant", "content": "".join(self._content)}
        if self._thinking:
            message["thinking"] = "".join(self._thinking)
        if self._tool_calls:
            message["tool_calls"] = clone(self._tool_calls)
        out["message"] = message
        return out
