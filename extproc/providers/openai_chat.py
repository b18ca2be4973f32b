"""OpenAI Chat Completions (``/v1/chat/completions``), also spoken by OpenRouter,
Ollama's OpenAI-compatible API and most other gateways."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from extproc.providers.base import Folded, RequestView, ToolCall
from extproc.providers.jsonshape import (
    as_dict,
    as_int,
    as_list,
    as_str,
    clone,
    dumps,
    error_message,
    join_texts,
    text_of,
)
from extproc.providers.renaming import Slot, rename_slots, slot, slot_names
from extproc.providers.sse import SSEEvent, SSEStreamProcessor
from extproc.providers.usage import openai_usage

if TYPE_CHECKING:
    from extproc.toolnames import ToolNameCodec

_SYSTEM_ROLES = ("system", "developer")
_TOOL_KINDS = ("function", "custom")  # chat tool types that carry a client-chosen name


def _tool_definition_slots(tool: Any) -> list[Slot]:
    tool = as_dict(tool)
    kind = tool.get("type", "function")
    return slot(tool.get(kind)) if kind in _TOOL_KINDS else []


def declared_tool_slots(body: dict) -> list[Slot]:
    slots: list[Slot] = []
    for tool in as_list(body.get("tools")):
        slots += _tool_definition_slots(tool)
    for function in as_list(body.get("functions")):  # legacy function calling
        slots += slot(function)
    return slots


def _tool_choice_slots(body: dict) -> list[Slot]:
    choice = as_dict(body.get("tool_choice"))
    if choice.get("type") == "allowed_tools":
        slots: list[Slot] = []
        for tool in as_list(as_dict(choice.get("allowed_tools")).get("tools")):
            slots += _tool_definition_slots(tool)
        return slots
    return _tool_definition_slots(choice) if choice else []


def _call_slots(tool_call: Any) -> list[Slot]:
    tool_call = as_dict(tool_call)
    kind = tool_call.get("type", "function")
    return slot(tool_call.get(kind)) if kind in _TOOL_KINDS else []


def _message_call_slots(message: dict) -> list[Slot]:
    slots: list[Slot] = []
    for tool_call in as_list(message.get("tool_calls")):
        slots += _call_slots(tool_call)
    slots += slot(message.get("function_call"))
    return slots


def history_slots(messages: Any) -> list[Slot]:
    slots: list[Slot] = []
    for message in as_list(messages):
        message = as_dict(message)
        slots += _message_call_slots(message)
        if message.get("role") in ("function", "tool"):
            slots += slot(message)
    return slots


def system_and_last_user(messages: Any) -> tuple[str | None, str | None]:
    system: list[str | None] = []
    last_user: str | None = None
    for message in as_list(messages):
        message = as_dict(message)
        role = message.get("role")
        if role in _SYSTEM_ROLES:
            system.append(text_of(message.get("content")))
        elif role == "user":
            last_user = text_of(message.get("content"))
    return join_texts(system), last_user


def first_user_text(messages: Any) -> str | None:
    for message in as_list(messages):
        message = as_dict(message)
        if message.get("role") == "user":
            return text_of(message.get("content"))
    return None


def first_choice(body: dict) -> dict:
    choices = [c for c in as_list(body.get("choices")) if isinstance(c, dict)]
    if not choices:
        return {}
    return min(choices, key=lambda c: as_int(c.get("index")) or 0)


def _arguments_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None else dumps(value)


def tool_calls_of(message: dict) -> tuple[ToolCall, ...]:
    calls: list[ToolCall] = []
    for tool_call in as_list(message.get("tool_calls")):
        tool_call = as_dict(tool_call)
        kind = tool_call.get("type", "function")
        inner = as_dict(tool_call.get(kind))
        name = as_str(inner.get("name"))
        if name is None:
            continue
        payload = inner.get("input") if kind == "custom" else inner.get("arguments")
        calls.append(ToolCall(as_str(tool_call.get("id")), name, _arguments_text(payload)))
    legacy = as_dict(message.get("function_call"))
    if isinstance(legacy.get("name"), str):
        calls.append(ToolCall(None, legacy["name"], _arguments_text(legacy.get("arguments"))))
    return tuple(calls)


class ChatEndpoint:
    api = "chat"

    def parse_request(self, body: dict) -> RequestView:
        system, last_user = system_and_last_user(body.get("messages"))
        max_tokens = as_int(body.get("max_completion_tokens"))
        return RequestView(
            api=self.api,
            model=as_str(body.get("model")),
            stream=body.get("stream") is True,
            tool_names=slot_names(declared_tool_slots(body)),
            system=system,
            last_user=last_user,
            first_user=first_user_text(body.get("messages")),
            max_tokens=max_tokens if max_tokens is not None else as_int(body.get("max_tokens")),
            fallback_models=tuple(str(m) for m in as_list(body.get("models"))),
        )

    def alias_request(self, body: dict, codec: ToolNameCodec) -> bool:
        slots = declared_tool_slots(body) + _tool_choice_slots(body) + slot(body.get("function_call"))
        slots += history_slots(body.get("messages"))
        return rename_slots(slots, codec.encode)

    def restore_response(self, body: dict, codec: ToolNameCodec) -> bool:
        slots: list[Slot] = []
        for choice in as_list(body.get("choices")):
            slots += _message_call_slots(as_dict(as_dict(choice).get("message")))
        return rename_slots(slots, codec.decode)

    def fold(self, body: dict) -> Folded:
        choice = first_choice(body)
        message = as_dict(choice.get("message"))
        return Folded(
            message=body,
            text=text_of(message.get("content")) or "",
            tool_calls=tool_calls_of(message),
            finish_reason=as_str(choice.get("finish_reason")),
            usage=openai_usage(body.get("usage")),
            error=error_message(body),
        )

    def stream(self, codec: ToolNameCodec | None, *, drop_usage: bool = False) -> ChatStreamProcessor:
        return ChatStreamProcessor(self, codec, drop_usage=drop_usage)

    def ask_stream_usage(self, body: dict) -> bool:
        return ask_openai_stream_usage(body)


def ask_openai_stream_usage(body: dict) -> bool:
    """OpenAI streams report usage only with ``stream_options.include_usage``: ask for it."""
    if body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return False
    body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return True


def usage_only_chunk(obj: dict) -> bool:
    """The final chunk `include_usage` adds: usage, and an empty choices list."""
    return bool(obj.get("usage")) and not obj.get("choices")


# -- streaming --------------------------------------------------------------------------


@dataclass
class _CallState:
    id: str | None = None
    kind: str | None = None
    name: list[str] = field(default_factory=list)
    payload: list[str] = field(default_factory=list)


@dataclass
class _ChoiceState:
    role: str | None = None
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, _CallState] = field(default_factory=dict)
    function_call: _CallState | None = None
    finish_reason: str | None = None


_HEAD_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")


class ChatAssembler:
    """Folds ``chat.completion.chunk`` objects into one ``chat.completion``."""

    def __init__(self) -> None:
        self._head: dict[str, Any] = {}
        self._choices: dict[int, _ChoiceState] = {}
        self._usage: dict | None = None

    def add(self, chunk: dict) -> None:
        for key in _HEAD_FIELDS:
            if chunk.get(key) is not None and isinstance(chunk[key], (str, int, float)):
                self._head.setdefault(key, chunk[key])
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for pos, choice in enumerate(as_list(chunk.get("choices"))):
            choice = as_dict(choice)
            index = as_int(choice.get("index"))
            state = self._choices.setdefault(pos if index is None else index, _ChoiceState())
            self._add_delta(state, as_dict(choice.get("delta")))
            if isinstance(choice.get("finish_reason"), str):
                state.finish_reason = choice["finish_reason"]

    @staticmethod
    def _add_delta(state: _ChoiceState, delta: dict) -> None:
        if isinstance(delta.get("role"), str):
            state.role = delta["role"]
        for key, parts in (("content", state.content), ("refusal", state.refusal)):
            if isinstance(delta.get(key), str):
                parts.append(delta[key])
        for key in ("reasoning_content", "reasoning"):
            if isinstance(delta.get(key), str):
                state.reasoning.append(delta[key])
        for pos, tool_call in enumerate(as_list(delta.get("tool_calls"))):
            tool_call = as_dict(tool_call)
            index = as_int(tool_call.get("index"))
            call = state.calls.setdefault(pos if index is None else index, _CallState())
            if isinstance(tool_call.get("id"), str):
                call.id = tool_call["id"]
            if isinstance(tool_call.get("type"), str):
                call.kind = tool_call["type"]
            for kind, payload_key in (("function", "arguments"), ("custom", "input")):
                inner = as_dict(tool_call.get(kind))
                if inner:
                    call.kind = call.kind or kind
                if isinstance(inner.get("name"), str):
                    call.name.append(inner["name"])
                if isinstance(inner.get(payload_key), str):
                    call.payload.append(inner[payload_key])
        legacy = as_dict(delta.get("function_call"))
        if legacy:
            call = state.function_call = state.function_call or _CallState()
            if isinstance(legacy.get("name"), str):
                call.name.append(legacy["name"])
            if isinstance(legacy.get("arguments"), str):
                call.payload.append(legacy["arguments"])

    def message(self) -> dict:
        out: dict[str, Any] = {"id": self._head.get("id"), "object": "chat.completion"}
        for key in ("created", "model"):
            out[key] = self._head.get(key)
        out["choices"] = [self._choice(index, state) for index, state in sorted(self._choices.items())]
        if self._usage is not None:
            out["usage"] = clone(self._usage)
        for key in ("system_fingerprint", "service_tier"):
            if key in self._head:
                out[key] = self._head[key]
        return out

    @staticmethod
    def _choice(index: int, state: _ChoiceState) -> dict:
        message: dict[str, Any] = {
            "role": state.role or "assistant",
            "content": "".join(state.content) if state.content else None,
        }
        if state.refusal:
            message["refusal"] = "".join(state.refusal)
        if state.reasoning:
            message["reasoning_content"] = "".join(state.reasoning)
        if state.calls:
            message["tool_calls"] = [_call_message(index, call) for index, call in sorted(state.calls.items())]
        if state.function_call is not None:
            message["function_call"] = {
                "name": "".join(state.function_call.name),
                "arguments": "".join(state.function_call.payload),
            }
        return {"index": index, "message": message, "finish_reason": state.finish_reason}


def _call_message(index: int, call: _CallState) -> dict:
    kind = call.kind or "function"
    payload_key = "input" if kind == "custom" else "arguments"
    return {
        "id": call.id,
        "type": kind,
        kind: {"name": "".join(call.name), payload_key: "".join(call.payload)},
    }


_StreamKey = tuple[int, int | str]  # (choice index, tool-call index or "function_call")
_NamePath = tuple[int, int | None, str]  # (choice position, tool-call position, container key)


@dataclass(frozen=True)
class _NameFragment:
    key: _StreamKey
    path: _NamePath
    text: str
    has_payload: bool  # arguments/input started in the same delta: the name is complete


def _name_fragments(chunk: dict) -> list[_NameFragment]:
    fragments: list[_NameFragment] = []
    for choice_pos, choice in enumerate(as_list(chunk.get("choices"))):
        choice = as_dict(choice)
        choice_index = as_int(choice.get("index"))
        choice_index = choice_pos if choice_index is None else choice_index
        delta = as_dict(choice.get("delta"))
        for call_pos, tool_call in enumerate(as_list(delta.get("tool_calls"))):
            tool_call = as_dict(tool_call)
            call_index = as_int(tool_call.get("index"))
            for kind, payload_key in (("function", "arguments"), ("custom", "input")):
                inner = as_dict(tool_call.get(kind))
                if isinstance(inner.get("name"), str):
                    fragments.append(
                        _NameFragment(
                            (choice_index, call_pos if call_index is None else call_index),
                            (choice_pos, call_pos, kind),
                            inner["name"],
                            bool(inner.get(payload_key)),
                        )
                    )
        legacy = as_dict(delta.get("function_call"))
        if isinstance(legacy.get("name"), str):
            fragments.append(
                _NameFragment(
                    (choice_index, "function_call"),
                    (choice_pos, None, "function_call"),
                    legacy["name"],
                    bool(legacy.get("arguments")),
                )
            )
    return fragments


def _may_name_tools(data: str | None) -> bool:
    # Cheap text test so that plain content chunks skip the structural walk.
    return data is not None and ("tool_calls" in data or "function_call" in data)


def _name_container(chunk: dict, path: _NamePath) -> dict:
    choice_pos, call_pos, key = path
    delta = chunk["choices"][choice_pos]["delta"]
    return delta[key] if call_pos is None else delta["tool_calls"][call_pos][key]


def _choice_indexes(chunk: dict | None) -> set[int] | None:
    """Choice indexes a chunk speaks for; None if it is not a per-choice chunk."""
    if chunk is None:
        return None
    indexes = set()
    for pos, choice in enumerate(as_list(chunk.get("choices"))):
        index = as_int(as_dict(choice).get("index"))
        indexes.add(pos if index is None else index)
    return indexes or None


@dataclass
class _HeldEvent:
    event: SSEEvent
    chunk: dict | None
    lone_fragments: list[_NamePath] = field(default_factory=list)  # names restored on their own


@dataclass
class _PendingName:
    parts: list[tuple[int, _NamePath, str]] = field(default_factory=list)  # (held position, path, text)
    complete: bool = False

    @property
    def text(self) -> str:
        return "".join(text for _, _, text in self.parts)


class ChatStreamProcessor(SSEStreamProcessor):
    """Chat chunks: reassembly plus name restoring for names split over deltas.

    A name that is a complete known alias is restored at once. A fragment that could
    still grow holds the events from there on until the call moves on (arguments start,
    another call or choice speaks, the choice finishes, the stream ends); then the whole
    name goes into the first fragment's delta and the later fragments are dropped.
    """

    def __init__(self, endpoint: ChatEndpoint, codec: ToolNameCodec | None, *, drop_usage: bool = False) -> None:
        super().__init__(endpoint, codec, drop_usage=drop_usage)
        self._assembler = ChatAssembler()
        self._held: list[_HeldEvent] = []
        self._pending: dict[_StreamKey, _PendingName] = {}
        self._finished_names: set[_StreamKey] = set()

    def _observe(self, event: str | None, obj: dict) -> None:
        message = error_message(obj)
        if message is not None:
            self._error = message
        self._assembler.add(obj)

    def _assembled(self) -> dict:
        return self._assembler.message()

    def _usage_only(self, obj: dict) -> bool:
        return usage_only_chunk(obj)

    def _rewrite_event(self, ev: SSEEvent) -> bytes:
        chunk = self._observe_event(ev)
        if self._drop_usage and chunk is not None and usage_only_chunk(chunk):
            return b""
        fragments = _name_fragments(chunk) if chunk is not None and _may_name_tools(ev.data) else []
        if not fragments and not self._held:
            return ev.raw
        assert self._codec is not None
        held = _HeldEvent(ev, chunk)
        self._held.append(held)
        spoken: set[_StreamKey] = set()
        for fragment in fragments:
            if fragment.key in self._finished_names:
                held.lone_fragments.append(fragment.path)
                continue
            pending = self._pending.setdefault(fragment.key, _PendingName())
            pending.parts.append((len(self._held) - 1, fragment.path, fragment.text))
            pending.complete = pending.complete or fragment.has_payload
            spoken.add(fragment.key)
        choices = _choice_indexes(chunk)
        for key, pending in self._pending.items():
            if pending.complete:
                continue
            if key in spoken:
                pending.complete = self._codec.is_complete_alias(pending.text)
            elif ev.data is None:
                continue  # comments and keep-alives say nothing about the call
            elif choices is None or key[0] in choices:
                pending.complete = True
        if all(pending.complete for pending in self._pending.values()):
            return self._release_held()
        return b""

    def _release_held(self) -> bytes:
        if not self._held:
            return b""
        assert self._codec is not None
        edits: dict[int, list[tuple[_NamePath, str | None]]] = defaultdict(list)
        for key, pending in self._pending.items():
            full = pending.text
            original = self._codec.decode(full)
            if original != full:
                for n, (held_pos, path, _) in enumerate(pending.parts):
                    edits[held_pos].append((path, original if n == 0 else None))
            self._finished_names.add(key)
        out: list[bytes] = []
        for held_pos, held in enumerate(self._held):
            for path in held.lone_fragments:
                assert held.chunk is not None
                text = _name_container(held.chunk, path)["name"]
                if self._codec.decode(text) != text:
                    edits[held_pos].append((path, self._codec.decode(text)))
            if held_pos not in edits:
                out.append(held.event.raw)
                continue
            chunk = clone(held.chunk)
            assert chunk is not None
            for path, name in edits[held_pos]:
                container = _name_container(chunk, path)
                if name is None:
                    del container["name"]
                else:
                    container["name"] = name
            out.append(held.event.with_data(dumps(chunk)))
        self._held.clear()
        self._pending.clear()
        return b"".join(out)
