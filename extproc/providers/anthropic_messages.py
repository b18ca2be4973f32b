"""Anthropic Messages API (``/v1/messages``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from extproc.providers.base import Folded, RequestView, ToolCall
from extproc.providers.jsonshape import as_dict, as_int, as_list, as_str, clone, error_message, text_of
from extproc.providers.renaming import Slot, rename_slots, slot, slot_names
from extproc.providers.sse import RestoreFn, SSEStreamProcessor
from extproc.providers.usage import anthropic_usage

if TYPE_CHECKING:
    from extproc.toolnames import ToolNameCodec

_CLIENT_TOOL_TYPES = (None, "custom")  # other typed tools (bash_*, web_search_*) are Anthropic's own


def _is_client_tool(tool: dict) -> bool:
    return tool.get("type") in _CLIENT_TOOL_TYPES


def _declared_slots(body: dict) -> list[Slot]:
    slots: list[Slot] = []
    for tool in as_list(body.get("tools")):
        tool = as_dict(tool)
        if _is_client_tool(tool):
            slots += slot(tool)
    return slots


def _builtin_names(body: dict) -> set[str]:
    """Names fixed by Anthropic (server tools, bash, text editor): never aliased."""
    return {
        tool["name"]
        for tool in as_list(body.get("tools"))
        if isinstance(tool, dict) and not _is_client_tool(tool) and isinstance(tool.get("name"), str)
    }


def _tool_use_slots(content: Any) -> list[Slot]:
    slots: list[Slot] = []
    for block in as_list(content):
        block = as_dict(block)
        if block.get("type") == "tool_use":
            slots += slot(block)
    return slots


def _tool_input_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class MessagesEndpoint:
    api = "messages"

    def parse_request(self, body: dict) -> RequestView:
        last_user = first_user = None
        for message in as_list(body.get("messages")):
            message = as_dict(message)
            if message.get("role") == "user":
                last_user = text_of(message.get("content"))
                first_user = last_user if first_user is None else first_user
        return RequestView(
            api=self.api,
            model=as_str(body.get("model")),
            stream=body.get("stream") is True,
            tool_names=slot_names(_declared_slots(body)),
            system=text_of(body.get("system")),
            last_user=last_user,
            first_user=first_user,
            max_tokens=as_int(body.get("max_tokens")),
        )

    def alias_request(self, body: dict, codec: ToolNameCodec) -> bool:
        builtin = _builtin_names(body)
        slots = _declared_slots(body)
        choice = as_dict(body.get("tool_choice"))
        if choice.get("type") == "tool":
            slots += slot(choice)
        for message in as_list(body.get("messages")):
            slots += _tool_use_slots(as_dict(message).get("content"))
        return rename_slots([(container, key) for container, key in slots if container[key] not in builtin], codec.encode)

    def restore_response(self, body: dict, codec: ToolNameCodec) -> bool:
        return rename_slots(_tool_use_slots(body.get("content")), codec.decode)

    def fold(self, body: dict) -> Folded:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in as_list(body.get("content")):
            block = as_dict(block)
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif block.get("type") == "tool_use" and isinstance(block.get("name"), str):
                calls.append(ToolCall(as_str(block.get("id")), block["name"], _tool_input_text(block.get("input"))))
        return Folded(
            message=body,
            text="".join(texts),
            tool_calls=tuple(calls),
            finish_reason=as_str(body.get("stop_reason")),
            usage=anthropic_usage(body.get("usage")),
            error=error_message(body),
        )

    def stream(self, codec: ToolNameCodec | None, *, drop_usage: bool = False) -> MessagesStreamProcessor:
        return MessagesStreamProcessor(self, codec)

    def ask_stream_usage(self, body: dict) -> bool:
        return False  # this API's streams report usage without being asked


def _text_field(block: dict, key: str) -> str:
    value = block.get(key)
    return value if isinstance(value, str) else ""


@dataclass
class _Block:
    start: dict
    texts: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    signature: list[str] = field(default_factory=list)
    partial_json: list[str] = field(default_factory=list)
    citations: list[Any] = field(default_factory=list)

    def build(self) -> dict:
        block = clone(self.start)
        if self.texts:
            block["text"] = _text_field(block, "text") + "".join(self.texts)
        if self.thinking:
            block["thinking"] = _text_field(block, "thinking") + "".join(self.thinking)
        if self.signature:
            block["signature"] = _text_field(block, "signature") + "".join(self.signature)
        if self.citations:
            block["citations"] = as_list(block.get("citations")) + clone(self.citations)
        if self.partial_json:
            joined = "".join(self.partial_json)
            try:
                block["input"] = json.loads(joined) if joined.strip() else {}
            except ValueError:
                block["input"] = joined  # cut-off stream: keep what arrived rather than nothing
        return block


_DELTA_FIELDS = {
    "text_delta": ("text", "texts"),
    "thinking_delta": ("thinking", "thinking"),
    "signature_delta": ("signature", "signature"),
    "input_json_delta": ("partial_json", "partial_json"),
}


class MessagesStreamProcessor(SSEStreamProcessor):
    END_EVENTS = frozenset({"message_stop"})

    # Observed objects are kept by reference: rewrites work on clones, and the
    # assembled message is cloned before anyone can edit it.
    def __init__(self, endpoint: MessagesEndpoint, codec: ToolNameCodec | None) -> None:
        super().__init__(endpoint, codec)
        self._message: dict = {}
        self._blocks: dict[int, _Block] = {}
        self._stop: dict[str, Any] = {}
        self._usage: dict[str, Any] = {}

    def _observe(self, event: str | None, obj: dict) -> None:
        kind = obj.get("type", event)
        if kind == "message_start":
            self._message = as_dict(obj.get("message"))
            self._merge_usage(self._message.get("usage"))
        elif kind == "content_block_start":
            index = as_int(obj.get("index"))
            if index is not None:
                self._blocks[index] = _Block(as_dict(obj.get("content_block")))
        elif kind == "content_block_delta":
            self._add_delta(as_int(obj.get("index")), as_dict(obj.get("delta")))
        elif kind == "message_delta":
            delta = as_dict(obj.get("delta"))
            for key in ("stop_reason", "stop_sequence"):
                if key in delta:
                    self._stop[key] = delta[key]
            self._merge_usage(obj.get("usage"))
        elif kind == "error":
            self._error = error_message(obj) or "error"

    def _merge_usage(self, usage: Any) -> None:
        # message_delta repeats cumulative counts; a null there must not erase message_start's.
        for key, value in as_dict(usage).items():
            if value is not None:
                self._usage[key] = value

    def _add_delta(self, index: int | None, delta: dict) -> None:
        if index is None:
            return
        block = self._blocks.get(index)
        if block is None:  # delta without a start: keep the content anyway
            block = self._blocks[index] = _Block({"type": "tool_use" if "partial_json" in delta else "text"})
        kind = delta.get("type")
        if kind == "citations_delta" and "citation" in delta:
            block.citations.append(delta["citation"])
        elif isinstance(kind, str) and kind in _DELTA_FIELDS:
            key, parts = _DELTA_FIELDS[kind]
            if isinstance(delta.get(key), str):
                getattr(block, parts).append(delta[key])

    def _assembled(self) -> dict:
        message = clone(self._message) or {"type": "message", "role": "assistant"}
        if self._blocks or not isinstance(message.get("content"), list):
            message["content"] = [block.build() for _, block in sorted(self._blocks.items())]
        message.update(clone(self._stop))
        if self._usage:
            message["usage"] = clone(self._usage)
        return message

    def _restorer(self, event: str | None, obj: dict) -> RestoreFn | None:
        kind = obj.get("type", event)
        if kind == "content_block_start" and as_dict(obj.get("content_block")).get("type") == "tool_use":
            return lambda o, codec: rename_slots(slot(o["content_block"]), codec.decode)
        if kind == "message_start" and as_dict(obj.get("message")).get("content"):
            return lambda o, codec: self._endpoint.restore_response(o["message"], codec)
        return None
