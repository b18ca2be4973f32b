"""The enhance stage: the enhanced body forwarded, the exposure recorded, failures open."""

from __future__ import annotations

import json

from extproc.testing.pipeline import Bound, context, json_chunk, request_headers
from extproc.wire import Phase, Reply
from intelligence.enhance import spec as specs
from intelligence.enhance.live import Applicable, EnhancementSnapshot, Enhancer, assign_arm, assignment_point
from intelligence.memory.lookup import PatternMatch

INSTRUCTION = "Answer in full; never stop mid-sentence."
CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "system", "content": "You write invoices."}, {"role": "user", "content": "Invoice for 3 chairs"}],
}


def item() -> Applicable:
    spec = {"text": INSTRUCTION, "position": "append"}
    return Applicable(7, 11, "system_prompt", spec, 0.5, "session", "experiment", specs.parse_spec("system_prompt", spec))


class StaticCache:
    def __init__(self, by_pattern: dict[int, tuple[Applicable, ...]]):
        self.snapshot = EnhancementSnapshot(by_pattern)


class CountingLookup:
    def __init__(self, match: PatternMatch | None):
        self.match = match
        self.calls = 0

    async def lookup(self, prompt):
        self.calls += 1
        assert "Invoice for 3 chairs" in prompt.text  # the canonical prompt is built from the client's view
        return self.match


def session_for(exp: Applicable, arm: str) -> str:
    return next(f"s{i}" for i in range(1000) if (assignment_point(7, f"s{i}") < exp.control_weight) == (arm == "control"))


async def request(enhancer, session: str | None, **headers: str) -> tuple[Bound, Reply]:
    c = context()
    c.enhancer = enhancer
    ex = Bound(c)
    extra = {"authorization": "Bearer sk-x", **({"x-session-id": session} if session else {}), **headers}
    await ex.handle(Phase.REQUEST_HEADERS, request_headers("/openai/v1/chat/completions", **extra))
    reply = await ex.handle(Phase.REQUEST_BODY, json_chunk(CHAT))
    assert isinstance(reply, Reply)
    return ex, reply


async def test_the_enhanced_body_is_forwarded_and_the_exposure_recorded() -> None:
    exp = item()
    enhancer = Enhancer(StaticCache({5: (exp,)}), CountingLookup(PatternMatch(5, 1.0, True, "hash")))
    ex, reply = await request(enhancer, session_for(exp, "variant"))
    assert reply.body is not None and INSTRUCTION in json.loads(reply.body)["messages"][0]["content"]
    assert reply.set_headers["content-length"] == str(len(reply.body))
    assert ex.flags["enhancement"]["arm"] == "variant" and ex.flags["enhancement"]["experiment"] == 7
    await ex.abort("done")
    (rec,) = ex.driver.ctx.recorder.records  # type: ignore[attr-defined]
    assert rec.request_client is not None and rec.request_forwarded is not None
    assert INSTRUCTION not in json.dumps(rec.request_client.json) and INSTRUCTION in json.dumps(rec.request_forwarded.json)
    assert rec.prompt_system == "You write invoices."  # pattern memory sees the client's prompt, not the enhanced one

    ex, reply = await request(enhancer, session_for(exp, "control"))
    assert reply.body is None and ex.flags["enhancement"]["arm"] == "control"


async def test_nothing_is_looked_up_when_nothing_applies_or_the_client_opts_out() -> None:
    lookup = CountingLookup(PatternMatch(5, 1.0, True, "hash"))
    ex, reply = await request(Enhancer(StaticCache({}), lookup), "s1")
    assert "enhancement" not in ex.flags
    ex, reply = await request(Enhancer(StaticCache({5: (item(),)}), lookup), "s1", **{"x-enhance": "off"})
    assert reply.body is None and "enhancement" not in ex.flags
    assert lookup.calls == 0


async def test_the_session_is_derived_before_the_arm_is_assigned() -> None:
    exp = item()
    enhancer = Enhancer(StaticCache({5: (exp,)}), CountingLookup(PatternMatch(5, 1.0, True, "hash")))
    first, _ = await request(enhancer, None)
    again, _ = await request(enhancer, None)
    assert first.ex.session_id and first.ex.session_id == again.ex.session_id
    expected = assign_arm(exp, session_id=first.ex.session_id, client=None)
    assert first.flags["enhancement"]["arm"] == again.flags["enhancement"]["arm"] == expected


async def test_a_failing_lookup_forwards_the_request_unenhanced() -> None:
    class Broken:
        async def lookup(self, prompt):
            raise RuntimeError("database away")

    ex, reply = await request(Enhancer(StaticCache({5: (item(),)}), Broken()), "s1")
    assert reply.body is None and "enhancement" not in ex.flags
    assert ex.ex.notes.stage_errors == ["enhance/request_body: RuntimeError"]  # open: counted and noted
