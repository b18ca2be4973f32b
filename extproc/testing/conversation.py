"""What the fake "model" answers, independent of any provider's wire format.

Each dialect module reduces its request to a :class:`Prompt` (the text to echo,
whether the last turn asks for a tool, the declared tool names, a word count) and
renders the :class:`Answer` that :func:`answer` derives from it.
"""

from __future__ import annotations

import base64
import json
import random
import re
import struct
from dataclasses import dataclass
from typing import Any

from .switches import Switches

ECHO_LIMIT = 200
TOOL_TRIGGER = "call tool"
_WORD_PIECES = re.compile(r"\s*\S+\s*")


@dataclass(frozen=True, slots=True)
class Prompt:
    echo_text: str
    # True only when the conversation ends with a user turn that says "call tool":
    # after a tool result the fake answers in text, so agent loops terminate.
    asks_for_tool: bool
    tool_names: tuple[str, ...]
    words: int


@dataclass(frozen=True, slots=True)
class ToolCall:
    call_id: str
    name: str
    arguments: str  # JSON text, exactly as the OpenAI wire format carries it

    @property
    def input(self) -> dict[str, Any]:
        return json.loads(self.arguments)


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    tool_calls: tuple[ToolCall, ...]
    finish: str  # stop | length | content_filter | tool_calls
    prompt_words: int
    completion_words: int


def answer(prompt: Prompt, switches: Switches, *, call_id_prefix: str) -> Answer:
    count = _tool_call_count(prompt, switches)
    if count:
        arguments = json.dumps({"q": prompt.echo_text}, ensure_ascii=False)
        calls = tuple(
            ToolCall(call_id=f"{call_id_prefix}_{i}", name=prompt.tool_names[i % len(prompt.tool_names)], arguments=arguments)
            for i in range(count)
        )
        return Answer(
            text="",
            tool_calls=calls,
            finish="tool_calls",
            prompt_words=prompt.words,
            completion_words=count * count_words(arguments),
        )
    text = switches.reply if switches.reply is not None else "echo: " + prompt.echo_text[:ECHO_LIMIT]
    return Answer(
        text=text,
        tool_calls=(),
        finish=switches.finish,
        prompt_words=prompt.words,
        completion_words=count_words(text),
    )


def _tool_call_count(prompt: Prompt, switches: Switches) -> int:
    if not prompt.tool_names:
        return 0
    if switches.tool_calls is not None:
        return switches.tool_calls
    return 1 if prompt.asks_for_tool else 0


def asks_for_tool(text: str) -> bool:
    return TOOL_TRIGGER in text.lower()


def count_words(text: str) -> int:
    return len(text.split())


def text_of(content: Any) -> str:
    """Text of a message content: a string, or the ``text`` of its parts (text, input_text, output_text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def tool_names(tools: Any) -> tuple[str, ...]:
    """Names of function tools, in declaration order, from any dialect's ``tools`` list.

    OpenAI chat nests the name under ``function``; Responses, Anthropic and
    Ollama-native carry it at top level. Built-in tools without a name are skipped.
    """
    if not isinstance(tools, list):
        return ()
    names: list[str] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else tool.get("name")
        if isinstance(name, str) and name:
            names.append(name)
    return tuple(names)


def word_pieces(text: str) -> list[str]:
    """Split text into word-sized deltas whose concatenation is the text."""
    return _WORD_PIECES.findall(text) or ([text] if text else [])


def split_in(text: str, parts: int) -> list[str]:
    """Split text into up to ``parts`` slices (for tool arguments streamed over several deltas)."""
    if not text:
        return [""]
    step = -(-len(text) // parts)
    return [text[i : i + step] for i in range(0, len(text), step)]


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A unit vector that depends only on the text (same text, same vector)."""
    rng = random.Random(text)
    values = [rng.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


def embedding_base64(vector: list[float]) -> str:
    # The OpenAI SDK asks for base64 by default and decodes little-endian float32.
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
