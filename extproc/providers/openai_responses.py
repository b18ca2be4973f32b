"""OpenAI Responses API (``/v1/responses``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from extproc.providers.base import Folded, RequestView, ToolCall
from extproc.providers.jsonshape import as_dict, as_int, as_list, as_str, clone, error_message, join_texts, text_of
from extproc.providers.renaming import Slot, rename_slots, slot, slot_names
from extproc.providers.sse import RestoreFn, SSEStreamProcessor
from extproc.providers.usage import responses_usage

if TYPE_CHECKING:
    from extproc.toolnames import ToolNameCodec

_NAMED_TOOL_TYPES = ("function", "custom")  # web_search, file_search, mcp... have no client name
_CALL_ITEM_TYPES = ("function_call", "custom_tool_call")
_SYSTEM_ROLES = ("system", "developer")
_FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")
_ITEM_EVENTS = ("response.output_item.added", "response.output_item.done")
_PAYLOAD_KEY = {"function_call": "arguments", "custom_tool_call": "input"}


def _named_tool_slots(tools: Any) -> list[Slot]:
    slots: list[Slot] = []
    for tool in as_list(tools):
        tool = as_dict(tool)
        if tool.get("type") in _NAMED_TOOL_TYPES:
            slots += slot(tool)
    return slots


def _call_item_slots(items: Any) -> list[Slot]:
    slots: list[Slot] = []
    for item in as_list(items):
        item = as_dict(item)
        if item.get("type") in _CALL_ITEM_TYPES:
            slots += slot(item)
    return slots


def _tool_choice_slots(choice: Any) -> list[Slot]:
    choice = as_dict(choice)
    if choice.get("type") == "allowed_tools":
        return _named_tool_slots(choice.get("tools"))
    return slot(choice) if choice.get("type") in _NAMED_TOOL_TYPES else []


def _is_message(item: dict) -> bool:
    return item.get("type", "message") == "message" and "role" in item


def finish_reason_of(body: dict) -> str | None:
    status = as_str(body.get("status"))
    if status == "incomplete":
        return as_str(as_dict(body.get("incomplete_details")).get("reason")) or status
    return status


class ResponsesEndpoint:
    api = "responses"

    def parse_request(self, body: dict) -> RequestView:
        system: list[str | None] = [as_str(body.get("instructions"))]
        last_user: str | None = None
        first_user: str | None = None
        raw_input = body.get("input")
        if isinstance(raw_input, str):
            last_user = raw_input
        for item in as_list(raw_input):
            item = as_dict(item)
            if not _is_message(item):
                continue
            if item.get("role") in _SYSTEM_ROLES:
                system.append(text_of(item.get("content")))
            elif item.get("role") == "user":
                last_user = text_of(item.get("content"))
                first_user = last_user if first_user is None else first_user
        return RequestView(
            api=self.api,
            model=as_str(body.get("model")),
            stream=body.get("stream") is True,
            tool_names=slot_names(_named_tool_slots(body.get("tools"))),
            system=join_texts(system),
            last_user=last_user,
            first_user=first_user if first_user is not None else last_user,
            max_tokens=as_int(body.get("max_output_tokens")),
        )

    def alias_request(self, body: dict, codec: ToolNameCodec) -> bool:
        slots = _named_tool_slots(body.get("tools")) + _tool_choice_slots(body.get("tool_choice"))
        slots += _call_item_slots(body.get("input"))
        return rename_slots(slots, codec.encode)

    def restore_response(self, body: dict, codec: ToolNameCodec) -> bool:
        return rename_slots(_call_item_slots(body.get("output")), codec.decode)

    def fold(self, body: dict) -> Folded:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for item in as_list(body.get("output")):
            item = as_dict(item)
            kind = item.get("type")
            if kind == "message":
                for part in as_list(item.get("content")):
                    part = as_dict(part)
                    if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                        texts.append(part["text"])
            elif kind in _CALL_ITEM_TYPES and isinstance(item.get("name"), str):
                payload = item.get(_PAYLOAD_KEY[kind])
                calls.append(ToolCall(as_str(item.get("call_id")), item["name"], payload if isinstance(payload, str) else ""))
        return Folded(
            message=body,
            text="".join(texts),
            tool_calls=tuple(calls),
            finish_reason=finish_reason_of(body),
            usage=responses_usage(body.get("usage")),
            error=error_message(body),
        )

    def stream(self, codec: ToolNameCodec | None, *, drop_usage: bool = False) -> ResponsesStreamProcessor:
        return ResponsesStreamProcessor(self, codec)

    def ask_stream_usage(self, body: dict) -> bool:
        return False  # this API's streams report usage without being asked


@dataclass
class _ItemState:
    added: dict
    done: dict | None = None
    parts: dict[int, dict] = field(default_factory=dict)
    part_texts: dict[int, list[str]] = field(default_factory=dict)
    payload: list[str] = field(default_factory=list)

    def build(self) -> dict:
        if self.done is not None:
            return clone(self.done)
        item = clone(self.added)
        kind = item.get("type")
        payload_key = _PAYLOAD_KEY.get(kind) if isinstance(kind, str) else None
        if payload_key is not None and self.payload:
            item[payload_key] = "".join(self.payload)
        if self.parts or self.part_texts:
            content = []
            for index in sorted(set(self.parts) | set(self.part_texts)):
                part = clone(self.parts.get(index) or {"type": "output_text"})
                if index in self.part_texts:
                    text_key = "refusal" if part.get("type") == "refusal" else "text"
                    part[text_key] = "".join(self.part_texts[index])
                content.append(part)
            item["content"] = content
        return item


class ResponsesStreamProcessor(SSEStreamProcessor):
    """Takes the response from ``response.completed`` (or incomplete/failed) when it
    arrives; otherwise assembles it from the item and delta events seen so far.

    Observed objects are kept by reference: rewrites work on clones, and the assembled
    response is cloned before anyone can edit it.
    """

    END_EVENTS = frozenset(_FINAL_EVENTS)

    def __init__(self, endpoint: ResponsesEndpoint, codec: ToolNameCodec | None) -> None:
        super().__init__(endpoint, codec)
        self._response: dict = {}
        self._final: dict | None = None
        self._items: dict[int, _ItemState] = {}

    def _observe(self, event: str | None, obj: dict) -> None:
        kind = obj.get("type", event)
        response = obj.get("response")
        if isinstance(response, dict):
            if kind in _FINAL_EVENTS:
                self._final = response
            else:
                self._response = response
        if kind == "error":
            self._error = as_str(obj.get("message")) or error_message(obj) or "error"
            return
        index = as_int(obj.get("output_index"))
        if index is None:
            return
        if kind == "response.output_item.added":
            self._items[index] = _ItemState(as_dict(obj.get("item")))
            return
        state = self._items.get(index)
        if state is None:
            state = self._items[index] = _ItemState({})
        self._add_to_item(kind, obj, state)

    @staticmethod
    def _add_to_item(kind: Any, obj: dict, state: _ItemState) -> None:
        content_index = as_int(obj.get("content_index"))
        if kind == "response.output_item.done":
            state.done = as_dict(obj.get("item"))
        elif kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
            if isinstance(obj.get("delta"), str):
                state.payload.append(obj["delta"])
        elif content_index is None:
            return
        elif kind in ("response.content_part.added", "response.content_part.done"):
            state.parts[content_index] = as_dict(obj.get("part"))
            if kind == "response.content_part.done":
                state.part_texts.pop(content_index, None)
        elif kind in ("response.output_text.delta", "response.refusal.delta") and isinstance(obj.get("delta"), str):
            state.part_texts.setdefault(content_index, []).append(obj["delta"])

    def _assembled(self) -> dict:
        if self._final is not None:
            return clone(self._final)
        response = clone(self._response) or {"object": "response"}
        if self._items:
            response["output"] = [state.build() for _, state in sorted(self._items.items())]
        return response

    def _restorer(self, event: str | None, obj: dict) -> RestoreFn | None:
        kind = obj.get("type", event)
        if kind in _ITEM_EVENTS and as_dict(obj.get("item")).get("type") in _CALL_ITEM_TYPES:
            return lambda o, codec: rename_slots(_call_item_slots([o["item"]]), codec.decode)
        if isinstance(obj.get("response"), dict) and as_list(obj["response"].get("output")):
            return lambda o, codec: self._endpoint.restore_response(o["response"], codec)
        return None
