"""`llmproxy tail` never lets a client drive the operator's terminal: escape sequences and control
characters in anything a client controls (model, path, prompt, tool names, error text) are stripped
from what it prints, and credentials in the path's query string are redacted."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from extproc.cli import main
from extproc.cli.tail import render
from intelligence.records import Body, ExchangeRecord
from intelligence.store.repositories import ExchangeRepository
from intelligence.store.sanitize import strip_terminal_controls
from tests.intelligence.factories import make_record

# What a hostile client might send: colour, clear screen, cursor up + erase line (hides the previous
# line), a window title (OSC 0), a hyperlink (OSC 8), a clipboard write (OSC 52), an 8-bit CSI, a
# DCS string, BEL, backspaces, a carriage return that overwrites the line, NUL, DEL, a bidi override.
HOSTILE = (
    "\x1b[31mred\x1b[0m \x1b[2J\x1b[H\x1b[1A\x1b[2K \x1b]0;owned\x07 \x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\ "
    "\x1b]52;c;ZWNobyBwd25lZA==\x07 \x9b31m\x90qdcs\x9c \x07\x08\x08 fake\rline \x00\x7f \u202eevil\u202c"
)
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def hostile_record(**overrides) -> ExchangeRecord:
    prompt = {"model": "gpt-4o\x1b[8m", "messages": [{"role": "user", "content": "hi " + HOSTILE}], "tools": []}
    return make_record(
        model="gpt-4o" + HOSTILE,
        method="POST\x1b[2J",
        path="/openai/v1/chat/completions\x1b]0;t\x07?key=sk-live-123&api_key=abc&x=1",
        request_client=Body(json=prompt, size=100),
        response_client=Body(text="data: " + HOSTILE + "\n\n", size=50),
        response_upstream=Body(text="\x9b2J raw " + HOSTILE, size=50),
        tool_names=("get\x1b[5mweather",),
        error="upstream said " + HOSTILE + " at https://user:pw@up.example/v1?token=t0k",
        streamed=True,
        **overrides,
    )


def assert_clean(out: str) -> None:
    assert "\x1b" not in out and "\x9b" not in out and "\x9d" not in out
    assert not CONTROL.search(out), repr(CONTROL.search(out))
    # the text around the sequences survives, so the operator still sees what was sent
    assert "red" in out and "click" in out and "evil" in out and "fake" in out and "line" in out
    assert "sk-live-123" not in out and "api_key=abc" not in out and "key=REDACTED" in out
    assert "user:pw" not in out and "t0k" not in out


@pytest.mark.parametrize("raw", [False, True])
def test_render_strips_escape_sequences_and_controls(raw: bool) -> None:
    rec = hostile_record()
    out = render(rec, tools="all", raw=raw)
    assert_clean(out)
    assert "\n>>> request\n" in out and "gpt-4o" in out  # layout (newlines) kept
    # the bodies' own newlines and tabs are not controls for this purpose
    assert strip_terminal_controls("a\tb\nc") == "a\tb\nc"


def test_strip_terminal_controls_removes_whole_sequences() -> None:
    assert strip_terminal_controls("\x1b[1;31mbold red\x1b[0m") == "bold red"
    assert strip_terminal_controls("\x1b]0;title\x07x") == "x"
    assert strip_terminal_controls("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\") == "link"
    assert strip_terminal_controls("a\x1b(0b\x1bMc\x1b7d") == "abcd"  # charset switch, reverse index, save cursor
    assert strip_terminal_controls("\x9b2Jx\x9d0;t\x9cy") == "xy"  # 8-bit CSI and OSC ... ST
    assert strip_terminal_controls("unterminated \x1b]0;never ends") == "unterminated "
    assert strip_terminal_controls("über ✓ 😀") == "über ✓ 😀"


async def _insert(engine: AsyncEngine, rec: ExchangeRecord) -> None:
    async with async_sessionmaker(engine).begin() as s:
        await ExchangeRepository(s).insert_batch([rec])


async def test_tail_from_the_database_prints_no_control_characters(
    cli_db: tuple[str, AsyncEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = cli_db
    now = datetime.now(UTC)
    await _insert(engine, hostile_record(started_at=now - timedelta(seconds=5)))

    def tail() -> None:
        with pytest.raises(SystemExit) as exc:
            main(["tail", "--database-url", url, "--history", "1", "--count", "1", "--tools", "all"])
        assert exc.value.code == 0

    task = asyncio.create_task(asyncio.to_thread(tail))
    # The command LISTENs before it prints history; an exchange recorded before that is not announced
    # to it, so keep recording one until a live one has been printed (bounded).
    for i in range(40):
        await _insert(engine, hostile_record(started_at=now + timedelta(seconds=i)))
        done, _ = await asyncio.wait([task], timeout=0.5)
        if done:
            break
    await asyncio.wait_for(task, 10)
    out = capsys.readouterr().out
    assert out.count(">>> request") == 2  # the history entry and one live exchange
    assert_clean(out)
