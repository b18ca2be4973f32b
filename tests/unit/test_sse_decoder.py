"""SSE and NDJSON framing: events are found whatever the chunking and line endings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.providers.ndjson import NDJSONDecoder
from extproc.providers.sse import SSEDecoder, SSEEvent

STREAM = (
    b": comment from the proxy\n"
    b"event: message_start\n"
    b"id: 7\n"
    b'data: {"a":1}\n'
    b"\n"
    b"data: first line\n"
    b"data:second line\n"
    b"retry: 100\n"
    b"\n"
    b"data: caf\xc3\xa9 \xf0\x9f\x91\x8d\n"
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)


def decode_all(data: bytes, cuts: list[int]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    previous = 0
    for cut in sorted(cuts) + [len(data)]:
        events += decoder.feed(data[previous:cut])
        previous = cut
    events += decoder.feed(b"")  # end of stream may arrive as an empty chunk
    return events + decoder.end()


def test_fields_comments_and_multiline_data() -> None:
    events = decode_all(STREAM, [])
    assert [e.event for e in events] == ["message_start", None, None, None]
    assert events[0].id == "7"
    assert events[0].data == '{"a":1}'
    assert events[1].data == "first line\nsecond line"  # "data:" without space keeps the value whole
    assert events[2].data == "café 👍"
    assert events[3].is_done and not events[0].is_done
    assert b"".join(e.raw for e in events) == STREAM


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_at_every_split(newline: bytes) -> None:
    data = STREAM.replace(b"\n", newline)
    expected = [(e.event, e.data, e.id) for e in decode_all(STREAM, [])]
    for cut in range(len(data) + 1):
        events = decode_all(data, [cut])
        assert [(e.event, e.data, e.id) for e in events] == expected, cut
        assert b"".join(e.raw for e in events) == data


def test_crlf_split_between_cr_and_lf_is_one_line_ending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\n\r") == []
    [event] = decoder.feed(b"\n")
    assert event.data == "x" and event.raw == b"data: x\r\n\r\n"
    assert decoder.pending == 0


def test_lone_cr_waits_for_the_next_byte_or_the_end() -> None:
    decoder = SSEDecoder()
    # The final CR could still become CRLF, so the event is complete only once we know.
    assert decoder.feed(b"data: x\r\r") == []
    assert decoder.feed(b"d") == [SSEEvent.from_lines([b"data: x\r"], b"\r")]
    decoder = SSEDecoder()
    assert decoder.feed(b"data: y\r") == []
    [event] = decoder.end()
    assert event.data == "y" and event.raw == b"data: y\r"


def test_unterminated_tail_is_flushed_at_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a":1}\n\ndata: {"b"') == [SSEEvent.from_lines([b'data: {"a":1}\n'], b"\n")]
    [tail] = decoder.end()
    assert tail.data == '{"b"' and tail.terminator == b""
    assert decoder.end() == []


def test_only_the_partial_event_is_held() -> None:
    decoder = SSEDecoder()
    big = b"data: " + b"x" * 10_000 + b"\n\n"
    for _ in range(50):
        decoder.feed(big)
    decoder.feed(b"data: par")
    assert decoder.pending == len(b"data: par")


def test_long_event_in_tiny_chunks_is_found_once() -> None:
    payload = b"data: " + "é".encode() * 5000 + b"\n\n"
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for i in range(0, len(payload), 7):
        events += decoder.feed(payload[i : i + 7])
    assert len(events) == 1 and events[0].data == "é" * 5000


def test_blank_keepalives_are_empty_events_that_keep_their_bytes() -> None:
    events = decode_all(b"\n\n: ping\n\n", [])
    assert [e.data for e in events] == [None, None, None]
    assert b"".join(e.raw for e in events) == b"\n\n: ping\n\n"


def test_field_without_colon_and_bad_utf8_do_not_raise() -> None:
    [event] = decode_all(b"data\nevent:\xff\n\n", [])
    assert event.data == "" and event.event == "\ufffd"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"event: e\ndata: old\n\n", b"event: e\ndata: new\n\n"),
        (b"id: 1\r\ndata: a\r\ndata: b\r\n\r\n", b"id: 1\r\ndata: new\r\n\r\n"),
        (b": c\rdata:old\r\r", b": c\rdata: new\r\r"),
        (b"data: old", b"data: new\n\n"),  # cut-off tail still leaves a well-formed event
    ],
)
def test_with_data_keeps_other_lines_and_line_endings(raw: bytes, expected: bytes) -> None:
    [event] = decode_all(raw, [])
    assert event.with_data("new") == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12), st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_property_any_chunking_gives_same_events(cuts: list[int], newline: bytes) -> None:
    data = STREAM.replace(b"\n", newline)
    cuts = [min(c, len(data)) for c in cuts]
    reference = decode_all(data, [])
    assert decode_all(data, cuts) == reference


# -- NDJSON -----------------------------------------------------------------------------

NDJSON = b'{"a":"caf\xc3\xa9"}\n{"b":2}\r\n\n{"c":3}'


def test_ndjson_lines_at_every_split() -> None:
    for cut in range(len(NDJSON) + 1):
        decoder = NDJSONDecoder()
        lines = decoder.feed(NDJSON[:cut]) + decoder.feed(NDJSON[cut:]) + decoder.end()
        assert lines == [b'{"a":"caf\xc3\xa9"}\n', b'{"b":2}\r\n', b"\n", b'{"c":3}'], cut
    assert NDJSONDecoder().end() == []
