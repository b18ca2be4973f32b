"""The stage runner: order, early answers, declared failure modes, completion exactly once."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest

from extproc.pipeline import Chunk, Failure, Pipeline
from extproc.stages import default_stages
from extproc.testing.pipeline import Driver, context, json_chunk, request_headers, response_headers
from extproc.wire import Immediate, Reply


class Probe:
    """A stage that logs every hook it sees, and may raise or answer where told."""

    failure: ClassVar[Failure] = Failure.OPEN

    def __init__(self, name: str, log: list[str], *, raise_in: str = "", answer_in: str = "", failure: Failure | None = None):
        self.name, self.log, self.raise_in, self.answer_in = name, log, raise_in, answer_in
        if failure is not None:
            self.failure = failure  # type: ignore[misc]

    async def _hook(self, phase: str) -> Immediate | None:
        self.log.append(f"{self.name}.{phase}")
        if phase == self.raise_in:
            raise RuntimeError(f"{self.name} broke")
        if phase == self.answer_in:
            return Immediate(status=418, body=b"{}")
        return None

    async def request_headers(self, ex):
        return await self._hook("request_headers")

    async def request_body(self, ex):
        return await self._hook("request_body")

    async def response_headers(self, ex):
        return await self._hook("response_headers")

    async def response_chunk(self, ex, chunk: Chunk):
        chunk.data = chunk.data + self.name.encode()
        return await self._hook("response_chunk")

    async def response_complete(self, ex):
        await self._hook("response_complete")


async def drive(stages, **kw):
    d = Driver(context(), stages)
    r = await d.round(request_headers("/openai/v1/chat/completions", **kw), json_chunk({"model": "m"}),
                      response=response_headers(), chunks=[b"x"])  # fmt: skip
    return d, r


async def test_every_phase_passes_the_stages_in_order_and_completes_once() -> None:
    log: list[str] = []
    d, r = await drive([Probe("a", log), Probe("b", log)])
    assert log == [
        "a.request_headers", "b.request_headers", "a.request_body", "b.request_body",
        "a.response_headers", "b.response_headers", "a.response_chunk", "b.response_chunk",
        "a.response_complete", "b.response_complete",
    ]  # fmt: skip
    assert isinstance(r.response_body[0], Reply) and r.response_body[0].body == b"xab"  # each stage rewrote the chunk
    await d.abort(r.ex, "late")  # already complete: nothing runs again
    assert log.count("a.response_complete") == 1 and d.pipeline.stats["exchanges"] == 1


async def test_an_answer_stops_the_phase_and_completes_the_exchange() -> None:
    log: list[str] = []
    d, r = await drive([Probe("a", log, answer_in="request_body"), Probe("b", log)])
    assert isinstance(r.answer, Immediate) and r.answer.status == 418
    assert r.answer.headers["x-llmproxy-request-id"] == "rid-1"
    assert log == ["a.request_headers", "b.request_headers", "a.request_body", "a.response_complete", "b.response_complete"]


@pytest.mark.parametrize("phase", ["request_headers", "request_body"])
async def test_a_closed_stage_that_raises_refuses_the_request_in_the_api_format(phase: str) -> None:
    log: list[str] = []
    d, r = await drive([Probe("screen", log, raise_in=phase, failure=Failure.CLOSED), Probe("after", log)])
    imm = r.answer
    assert isinstance(imm, Immediate) and imm.status == 500
    doc = json.loads(imm.body)
    assert doc["error"]["code"] == "gateway_stage_error" and "not forwarded" in doc["error"]["message"]
    assert f"after.{phase}" not in log  # nothing after the failed stage ran, and nothing was forwarded
    assert r.ex.notes.stage_errors == [f"screen/{phase}: RuntimeError"]
    assert d.pipeline.stats["stage_errors"] == 1


async def test_a_closed_stage_answers_in_the_anthropic_format_on_messages() -> None:
    stages = [Probe("screen", [], raise_in="request_body", failure=Failure.CLOSED)]
    d = Driver(context(), stages)
    r = await d.round(request_headers("/anthropic/v1/messages"), json_chunk({"model": "claude-x", "messages": []}))
    assert r.answer is not None and json.loads(r.answer.body)["type"] == "error"


async def test_a_closed_stage_withholds_a_response_it_could_not_check() -> None:
    d, r = await drive([Probe("mask", [], raise_in="response_chunk", failure=Failure.CLOSED)])
    assert isinstance(r.answer, Immediate) and r.answer.status == 502


async def test_an_open_stage_that_raises_is_noted_and_the_exchange_goes_on() -> None:
    log: list[str] = []
    errors: list[tuple[str, str, Failure]] = []
    stages = [Probe("advice", log, raise_in="request_body"), Probe("after", log)]
    d = Driver(context(), stages)
    d.pipeline.on_stage_error = lambda *e: errors.append(e)
    r = await d.round(request_headers("/openai/v1/chat/completions"), json_chunk({}), response=response_headers(), chunks=[b"x"])
    assert r.answer is None and "after.request_body" in log
    assert errors == [("advice", "request_body", Failure.OPEN)]
    assert "advice" in (r.ex.error or "")


def test_stages_must_declare_a_name_and_a_failure_mode() -> None:
    class Nameless:
        async def request_headers(self, ex):
            return None

    with pytest.raises(TypeError, match="must declare"):
        Pipeline([Nameless()])
    with pytest.raises(ValueError, match="unique"):
        Pipeline([Probe("a", []), Probe("a", [])])


def test_the_default_pipeline_declares_its_failure_modes() -> None:
    stages = default_stages(context())
    modes = {s.name: s.failure for s in stages}
    assert [s.name for s in stages] == [
        "access", "admission", "feedback", "guard", "claude_verdict", "enhance", "tool_names", "metering", "credentials", "record",
        "restore",
    ]  # fmt: skip
    # everything that screens or decides who may send what fails closed; advice and bookkeeping fail open
    assert {n for n, m in modes.items() if m is Failure.OPEN} == {"enhance", "tool_names", "metering", "record"}


def test_the_ext_proc_service_refuses_peers_outside_the_allowed_networks() -> None:
    from extproc.server import PeerFilter

    local = PeerFilter(("127.0.0.0/8", "::1/128"))
    assert local.allows("ipv4:127.0.0.1:5555") and local.allows("ipv6:[::1]:5555") and local.allows("unix:/run/x.sock")
    assert not local.allows("ipv4:10.0.0.7:5555") and not local.allows("ipv6:[fd00::1]:80") and not local.allows(None)
    assert not local.allows("ipv4:127.0.0.1.evil:1")
    pod = PeerFilter(("10.0.0.0/8",))
    assert pod.allows("ipv4:10.0.0.7:5555") and not pod.allows("ipv4:127.0.0.1:1")
