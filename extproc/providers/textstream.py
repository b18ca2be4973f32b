"""Rewriting the *text* inside a streamed response, event by event: OpenAI Chat and Responses, Anthropic Messages.

Response-side redaction and the restoring of request placeholders work on text, but a streamed
response is SSE events whose JSON carries the text in small deltas. :class:`SSETextRewriter` decodes
the events, hands each delta to a per-slot :class:`TextFilter` (one slot per choice/content block
and field: a value split across deltas is seen by one filter, in order) and re-encodes only the
events whose text changed. A filter may hold text back (the start of a placeholder, a half-written
value); what it holds is emitted in a synthetic delta right before the event that closes its slot
(OpenAI: the chunk carrying the choice's ``finish_reason``, or ``[DONE]``; Anthropic:
``content_block_stop``, or ``message_stop``), so nothing is lost and the client sees ordinary deltas.

Slots rewritten: OpenAI ``delta.content``, ``delta.refusal`` and tool-call ``function.arguments``
(legacy ``function_call.arguments`` too); Anthropic ``text_delta.text`` and
``input_json_delta.partial_json``; OpenAI Responses ``output_text`` / ``refusal`` /
``function_call_arguments`` deltas, whose ``.done`` events and whole parts, items and the final
response (which repeat the text) go through the ``whole`` function instead. Tool arguments are
JSON text: filters get ``json_text=True`` so what they insert is JSON-escaped. Thinking/reasoning
deltas are left alone (Anthropic signs thinking blocks; a changed one would be refused when the
client sends it back).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from extproc.providers.jsonshape import as_dict, as_int, as_list, dumps, loads_object
from extproc.providers.sse import SSEDecoder, SSEEvent

STREAM_APIS = frozenset({"chat", "messages", "responses"})
WholeText = Callable[[str, bool], str]  # (complete text, is JSON text) -> rewritten: for "done" events

# Responses API: delta events and the field of their "done" event that repeats the whole text.
_RESPONSES_DELTAS = {
    "response.output_text.delta": ("text", "response.output_text.done", "text"),
    "response.refusal.delta": ("refusal", "response.refusal.done", "refusal"),
    "response.function_call_arguments.delta": ("arguments", "response.function_call_arguments.done", "arguments"),
}
_RESPONSES_DONE = {done: (field, key) for field, done, key in _RESPONSES_DELTAS.values()}
# Events that carry whole objects (a part, an item, the response) whose texts are rewritten whole.
_RESPONSES_WHOLE = {
    "response.content_part.added": "part",
    "response.content_part.done": "part",
    "response.output_item.added": "item",
    "response.output_item.done": "item",
    "response.created": "response",
    "response.in_progress": "response",
    "response.completed": "response",
    "response.incomplete": "response",
    "response.failed": "response",
}


class TextFilter(Protocol):
    def feed(self, text: str) -> str: ...

    def flush(self) -> str: ...

    @property
    def holding(self) -> bool:
        """Whether text is held back (a filter without this attribute is assumed to hold)."""
        ...


@dataclass(frozen=True, slots=True)
class Slot:
    """Where a text stream lives: (choice or block index, field, tool-call index or None)."""

    index: int
    field: str
    call: int | None = None

    @property
    def json_text(self) -> bool:
        return self.field in ("arguments", "partial_json")


FilterFactory = Callable[[Slot], TextFilter]


def supports(api: str | None) -> bool:
    return api in STREAM_APIS


class SSETextRewriter:
    """``feed(bytes) -> bytes`` / ``end() -> bytes`` over an SSE response of ``api`` (chat | messages)."""

    def __init__(
        self,
        api: str,
        make_filter: FilterFactory,
        *,
        relevant: Callable[[str | bytes], bool] | None = None,
        whole: WholeText | None = None,
    ) -> None:
        """``relevant(event data or raw chunk)``: False when no filter could change its text (e.g. no
        ``<`` for a placeholder restorer); such events pass without being parsed while no filter
        holds text. None: every event is parsed."""
        if api not in STREAM_APIS:
            raise ValueError(f"no streamed text rewriting for api {api!r}")
        if api == "responses" and whole is None:
            raise ValueError("the Responses API repeats whole texts in its done events: give `whole`")
        self._api = api
        self._whole = whole
        self._templates: dict[Slot, dict] = {}  # Responses: the last delta event of a slot, for synthetic ones
        self._anthropic = api == "messages"
        self._make = make_filter
        self._relevant = relevant
        self._decoder = SSEDecoder()
        self._filters: dict[Slot, TextFilter] = {}
        self._head: dict[str, Any] = {}  # OpenAI chunk fields repeated in a synthetic chunk
        self.changed_events = 0

    def feed(self, chunk: bytes) -> bytes:
        if (
            self._relevant is not None
            and self._decoder.pending == 0
            and chunk.endswith((b"\n\n", b"\r\n\r\n"))
            and not self._relevant(chunk)
            and not self._holding()
        ):
            return chunk  # whole events that nothing could change: not even decoded
        return b"".join(self._event(ev) for ev in self._decoder.feed(chunk))

    def end(self) -> bytes:
        out = b"".join(self._event(ev) for ev in self._decoder.end())
        return out + self._flush(lambda slot: True)

    # ------------------------------------------------------------------ events
    def _event(self, ev: SSEEvent) -> bytes:
        if ev.data is None:
            return ev.raw
        if ev.is_done:
            return self._flush(lambda slot: True) + ev.raw
        if self._relevant is not None and not self._relevant(ev.data) and not self._holding():
            return ev.raw  # the common case for a restorer: nothing to restore, nothing held
        obj = loads_object(ev.data)
        if obj is None:
            return ev.raw
        if self._anthropic:
            return self._anthropic_event(ev, obj)
        if self._api == "responses":
            return self._responses_event(ev, obj)
        return self._openai_event(ev, obj)

    def _holding(self) -> bool:
        return any(getattr(f, "holding", True) for f in self._filters.values())

    def _filter(self, slot: Slot) -> TextFilter:
        f = self._filters.get(slot)
        if f is None:
            f = self._filters[slot] = self._make(slot)
        return f

    def _rewrite(self, ev: SSEEvent, obj: dict, edits: list[tuple[dict, str, Slot]]) -> bytes:
        """Run each (container, key, slot) text through its filter; re-encode only when one changed."""
        changed = False
        for container, key, slot in edits:
            text = container[key]
            out = self._filter(slot).feed(text)
            if out != text:
                container[key] = out
                changed = True
        if not changed:
            return ev.raw
        self.changed_events += 1
        return ev.with_data(dumps(obj))

    # ------------------------------------------------------------------ OpenAI chat
    def _openai_event(self, ev: SSEEvent, obj: dict) -> bytes:
        for key in ("id", "object", "created", "model", "system_fingerprint"):
            if key in obj and key not in self._head:
                self._head[key] = obj[key]
        edits: list[tuple[dict, str, Slot]] = []
        finishing: set[int] = set()
        for pos, choice in enumerate(as_list(obj.get("choices"))):
            choice = as_dict(choice)
            index = as_int(choice.get("index"))
            index = pos if index is None else index
            delta = as_dict(choice.get("delta"))
            for key in ("content", "refusal"):
                if isinstance(delta.get(key), str):
                    edits.append((delta, key, Slot(index, key)))
            for cpos, call in enumerate(as_list(delta.get("tool_calls"))):
                call = as_dict(call)
                cindex = as_int(call.get("index"))
                inner = as_dict(call.get("function"))
                if isinstance(inner.get("arguments"), str):
                    edits.append((inner, "arguments", Slot(index, "arguments", cpos if cindex is None else cindex)))
            legacy = as_dict(delta.get("function_call"))
            if isinstance(legacy.get("arguments"), str):
                edits.append((legacy, "arguments", Slot(index, "arguments", -1)))
            if choice.get("finish_reason") is not None:
                finishing.add(index)
        out = self._rewrite(ev, obj, edits)
        if finishing:
            # the held text goes out before the chunk that ends its choice
            return self._flush(lambda slot: slot.index in finishing) + out
        return out

    def _openai_synthetic(self, slot: Slot, text: str) -> bytes:
        if slot.field == "arguments" and slot.call == -1:
            delta: dict[str, Any] = {"function_call": {"arguments": text}}
        elif slot.field == "arguments":
            delta = {"tool_calls": [{"index": slot.call, "function": {"arguments": text}}]}
        else:
            delta = {slot.field: text}
        chunk = {**self._head, "choices": [{"index": slot.index, "delta": delta, "finish_reason": None}]}
        return b"data: " + dumps(chunk).encode() + b"\n\n"

    # ------------------------------------------------------------------ Anthropic messages
    def _anthropic_event(self, ev: SSEEvent, obj: dict) -> bytes:
        kind = obj.get("type", ev.event)
        index = as_int(obj.get("index"))
        if kind == "content_block_delta" and index is not None:
            delta = as_dict(obj.get("delta"))
            dtype = delta.get("type")
            key = "text" if dtype == "text_delta" else "partial_json" if dtype == "input_json_delta" else None
            if key is not None and isinstance(delta.get(key), str):
                return self._rewrite(ev, obj, [(delta, key, Slot(index, key))])
            return ev.raw
        if kind == "content_block_stop" and index is not None:
            return self._flush(lambda slot: slot.index == index) + ev.raw
        if kind in ("message_delta", "message_stop"):
            return self._flush(lambda slot: True) + ev.raw
        return ev.raw

    def _anthropic_synthetic(self, slot: Slot, text: str) -> bytes:
        delta = (
            {"type": "text_delta", "text": text} if slot.field == "text" else {"type": "input_json_delta", "partial_json": text}
        )
        doc = {"type": "content_block_delta", "index": slot.index, "delta": delta}
        return b"event: content_block_delta\ndata: " + dumps(doc).encode() + b"\n\n"

    # ------------------------------------------------------------------ OpenAI Responses
    def _responses_slot(self, obj: dict, field: str) -> Slot:
        content = as_int(obj.get("content_index"))
        return Slot(as_int(obj.get("output_index")) or 0, field, -1 if content is None else content)

    def _responses_event(self, ev: SSEEvent, obj: dict) -> bytes:
        kind = obj.get("type", ev.event)
        if kind in _RESPONSES_DELTAS and isinstance(obj.get("delta"), str):
            slot = self._responses_slot(obj, _RESPONSES_DELTAS[kind][0])
            self._templates[slot] = {k: v for k, v in obj.items() if k not in ("delta", "sequence_number", "obfuscation")}
            return self._rewrite(ev, obj, [(obj, "delta", slot)])
        if kind in _RESPONSES_DONE:
            field, key = _RESPONSES_DONE[kind]
            slot = self._responses_slot(obj, field)
            held = self._flush(lambda s: s == slot)
            return held + self._rewrite_whole(ev, obj, key)
        if kind in _RESPONSES_WHOLE and isinstance(obj.get(_RESPONSES_WHOLE[kind]), (dict, list)):
            index = as_int(obj.get("output_index"))
            held = (
                self._flush(lambda s: True)
                if kind in ("response.completed", "response.incomplete", "response.failed")
                else self._flush(lambda s: s.index == index)
                if kind == "response.output_item.done"
                else b""
            )
            return held + self._rewrite_whole(ev, obj, _RESPONSES_WHOLE[kind])
        return ev.raw

    def _rewrite_whole(self, ev: SSEEvent, obj: dict, key: str) -> bytes:
        from intelligence.detectors.response import rewrite_response_texts

        assert self._whole is not None
        value = obj.get(key)
        if isinstance(value, str):
            new = self._whole(value, key == "arguments")
            if new == value:
                return ev.raw
            obj[key] = new
        elif not rewrite_response_texts(value, self._whole):
            return ev.raw
        self.changed_events += 1
        return ev.with_data(dumps(obj))

    def _responses_synthetic(self, slot: Slot, text: str) -> bytes:
        template = self._templates.get(slot, {})
        doc = {**template, "delta": text}
        name = template.get("type", "response.output_text.delta")
        return f"event: {name}\ndata: ".encode() + dumps(doc).encode() + b"\n\n"

    # ------------------------------------------------------------------ flushing
    def _flush(self, which: Callable[[Slot], bool]) -> bytes:
        out: list[bytes] = []
        for slot in [s for s in self._filters if which(s)]:
            text = self._filters.pop(slot).flush()
            if text:
                self.changed_events += 1
                if self._anthropic:
                    out.append(self._anthropic_synthetic(slot, text))
                elif self._api == "responses":
                    out.append(self._responses_synthetic(slot, text))
                else:
                    out.append(self._openai_synthetic(slot, text))
        return b"".join(out)


def may_hold_placeholder(data: str | bytes) -> bool:
    """Event data (or raw chunk) whose JSON could carry a placeholder: a ``<``, raw or JSON-escaped
    (some encoders write ``\\u003c``)."""
    if isinstance(data, bytes):
        return b"<" in data or b"\\u003c" in data or b"\\u003C" in data
    return "<" in data or "\\u003c" in data or "\\u003C" in data
