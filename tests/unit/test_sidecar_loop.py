"""The sidecar's event-loop switch (LLMPROXY_SIDECAR_LOOP): asyncio by default, uvloop on request."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from extproc.__main__ import LOOP_ENV, event_loop_factory


def test_default_and_explicit_asyncio_use_asyncios_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOOP_ENV, raising=False)
    assert event_loop_factory() is None
    assert event_loop_factory(" AsyncIO ") is None
    monkeypatch.setenv(LOOP_ENV, "")
    assert event_loop_factory() is None


def test_an_unknown_loop_stops_the_sidecar_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOP_ENV, "trio")
    with pytest.raises(SystemExit, match="must be asyncio or uvloop, not 'trio'"):
        event_loop_factory()


def test_uvloop_when_installed_else_a_clear_refusal() -> None:
    if importlib.util.find_spec("uvloop") is None:
        with pytest.raises(SystemExit, match="uvloop is not installed"):
            event_loop_factory("uvloop")
        return
    factory = event_loop_factory("uvloop")
    assert factory is not None
    loop = factory()
    try:
        assert type(loop).__module__.startswith("uvloop")
        with asyncio.Runner(loop_factory=factory) as runner:
            assert runner.run(asyncio.sleep(0, result=7)) == 7
    finally:
        loop.close()
