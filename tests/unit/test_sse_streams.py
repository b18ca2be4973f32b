"""Stream processors over captured-style provider streams.

Each fixture ``X`` is what the provider sends once tool names were aliased; ``X.client``
(when present) is what the client must receive. Every stream is split at every byte
boundary and into random chunkings; output and reassembly must not depend on the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.providers.base import Folded, ToolCall
from extproc.providers.registry import endpoint_for
from extproc.toolnames import ToolNameCodec
from intelligence.records import Usage

FIXTURES = Path(__file__).parent / "fixtures"
CHAT = "/v1/chat/completions"

# The client's declared tools, in the order the sidecar registers them.
DECLARED = ("github.search_issues", "get_weather", "filesystem:read_file", "calendar.create event")


@dataclass(frozen=True)
class StreamCase:
    fixture: str
    path: str
    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str | None
    usage: Usage

    @property
    def upstream(self) -> bytes:
        return (FIXTURES / self.fixture).read_bytes()

    @property
    def client(self) -> bytes:
        stem, ext = self.fixture.rsplit(".", 1)
        client = FIXTURES / f"{stem}.client.{ext}"
        return client.read_bytes() if client.exists() else self.upstream


CASES = [
    StreamCase(
        "openai_chat_text.sse",
        CHAT,
        "Bonjour! Le café coûte 3 € — 日本語 ok 👍.",
        (),
        "stop",
        Usage(21, 17, 38, 0, 0),
    ),
    StreamCase(
        "openai_chat_tools.sse",
        CHAT,
        "",
        (
            ToolCall("call_Qx1", "github.search_issues", '{"repo": "llmproxy/llmproxy", "query": "crash on é"}'),
            ToolCall("call_Wz2", "get_weather", '{"city": "Paris"}'),
        ),
        "tool_calls",
        Usage(140, 52, 192, 64, 8),
    ),
    StreamCase(
        "openai_chat_split_name.sse",
        CHAT,
        "",
        (ToolCall("call_S1", "calendar.create event", '{"title":"standup"}'),),
        "tool_calls",
        Usage(),
    ),
    StreamCase(
        "anthropic_tools.sse",
        "/v1/messages",
        "I'll read the file for you — 一瞬お待ちください.",
        (ToolCall("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "filesystem:read_file", '{"path": "/etc/llmproxy/cönfig.yaml"}'),),
        "tool_use",
        Usage(472, 89, 561, 128, None),
    ),
    StreamCase(
        "responses_tools.sse",
        "/v1/responses",
        "Let me check the issues — ça arrive.",
        (ToolCall("call_12345xyz", "github.search_issues", '{"repo":"llmproxy","query":"panic"}'),),
        "completed",
        Usage(75, 40, 115, 32, 12),
    ),
    StreamCase(
        "ollama_chat_tools.ndjson",
        "/api/chat",
        "Je vérifie la météo ☀",
        (
            ToolCall(None, "calendar.create event", '{"title":"météo","day":3}'),
            ToolCall(None, "get_weather", '{"city":"Lyon"}'),
        ),
        "stop",
        Usage(26, 282, 308),
    ),
    StreamCase("ollama_generate.ndjson", "/api/generate", "Le ciel est bleu ✨", (), "stop", Usage(26, 298, 324)),
]
IDS = [case.fixture for case in CASES]


def codec() -> ToolNameCodec:
    return ToolNameCodec(DECLARED)


def run(case: StreamCase, data: bytes, names: ToolNameCodec | None, cuts: list[int]) -> tuple[bytes, Folded]:
    endpoint = endpoint_for(case.path)
    assert endpoint is not None
    processor = endpoint.stream(names)
    out: list[bytes] = []
    previous = 0
    for cut in sorted(cuts) + [len(data)]:
        out.append(processor.feed(data[previous:cut]))
        previous = cut
    out.append(processor.feed(b""))
    out.append(processor.end())
    return b"".join(out), processor.result()


def test_fixture_aliases_are_what_the_codec_produces() -> None:
    # The fixtures hard-code aliases; if the alias scheme changes they must be regenerated.
    names = codec()
    assert names.encode("github.search_issues") == "github_search_issues_25c7629b"
    assert names.encode("filesystem:read_file") == "filesystem_read_file_ae21077f"
    assert names.encode("calendar.create event") == "calendar_create_event_549e415f"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rewrite_restores_names_and_reassembles(case: StreamCase) -> None:
    out, folded = run(case, case.upstream, codec(), [])
    assert out == case.client
    assert folded.text == case.text
    assert folded.tool_calls == case.tool_calls
    assert folded.finish_reason == case.finish_reason
    assert folded.usage == case.usage
    assert folded.error is None


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("names", [None, ToolNameCodec(["get_weather"])], ids=["no-codec", "inactive-codec"])
def test_passthrough_returns_every_chunk_unchanged_at_once(case: StreamCase, names: ToolNameCodec | None) -> None:
    # A provider that accepts the original names: nothing to rewrite, zero added latency.
    data = case.client
    endpoint = endpoint_for(case.path)
    assert endpoint is not None
    processor = endpoint.stream(names)
    for i in range(0, len(data), 97):
        chunk = data[i : i + 97]
        assert processor.feed(chunk) == chunk
    assert processor.end() == b""
    folded = processor.result()
    assert (folded.text, folded.tool_calls, folded.finish_reason, folded.usage) == (
        case.text,
        case.tool_calls,
        case.finish_reason,
        case.usage,
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rewrite_split_at_every_byte_boundary(case: StreamCase) -> None:
    data, expected = case.upstream, case.client
    _, reference = run(case, data, codec(), [])
    for cut in range(len(data) + 1):
        out, folded = run(case, data, codec(), [cut])
        assert out == expected, f"split at byte {cut}"
        assert folded == reference, f"split at byte {cut}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_passthrough_every_byte_boundary_in_strided_chunks(case: StreamCase) -> None:
    # Chunks of a fixed size at every offset put a chunk boundary on every byte.
    data = case.upstream
    _, reference = run(case, data, None, [])
    size = 61
    for offset in range(size):
        cuts = list(range(offset, len(data), size))
        out, folded = run(case, data, None, cuts)
        assert out == data
        assert folded == reference, f"offset {offset}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_random_chunkings(case: StreamCase, data: st.DataObject) -> None:
    stream = case.upstream
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=40))
    rewriting = data.draw(st.booleans())
    names = codec() if rewriting else None
    _, reference = run(case, stream, names, [])
    out, folded = run(case, stream, names, cuts)
    assert out == (case.client if rewriting else stream)
    assert folded == reference


SSE_CASES = [case for case in CASES if case.fixture.endswith(".sse")]


@pytest.mark.parametrize("case", SSE_CASES, ids=[c.fixture for c in SSE_CASES])
@pytest.mark.parametrize("newline", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_other_line_endings(case: StreamCase, newline: bytes) -> None:
    # Compact JSON holds no raw newline, so only line endings are converted here.
    data = case.upstream.replace(b"\n", newline)
    _, reference = run(case, case.upstream, codec(), [])
    for cuts in ([], list(range(3, len(data), 53))):
        out, folded = run(case, data, codec(), cuts)
        assert out == case.client.replace(b"\n", newline)
        assert folded == reference


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_result_mid_stream_is_best_effort(case: StreamCase) -> None:
    # The client may vanish: result() before end() must not raise and holds a prefix.
    endpoint = endpoint_for(case.path)
    assert endpoint is not None
    processor = endpoint.stream(codec())
    processor.feed(case.upstream[: len(case.upstream) // 2])
    folded = processor.result()
    assert case.text.startswith(folded.text)
    assert isinstance(folded.message, dict)
