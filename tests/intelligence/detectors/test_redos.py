"""No input makes a detector backtrack for long: crafted worst cases and hypothesis-generated ones,
each timed against a bound (the old repetition regex took 2.6 s on one 8 KB segment)."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intelligence.detectors import heuristics, junk
from intelligence.detectors.injection import InjectionDetector
from intelligence.detectors.normalize import normalize

SIZE = 8_192
# Characters and fragments the detectors' patterns branch on.
PIECES = [
    "a",
    "A",
    "0",
    "1",
    " ",
    "\n",
    "\t",
    "'",
    '"',
    "<",
    ">",
    "{",
    "}",
    "${",
    "{{",
    "`",
    "_",
    ".",
    "/",
    "=",
    "+",
    "-",
    "%4",
    "0x",
    "ignore ",
    "the ",
    "you ",
    "system",
    "a a ",
    "а",
    "\u200b",
    "http://",
    "::",
    "#",
    "(",
    ")",
    "gur ",  # rot13 of "the": the rot13 run search
    "naq ",
    "t0 ",  # leetspeak words: the leet line folding
    "4 ",
    "c0d35 ",
    "Справка ",  # a word wholly in look-alikes
]


def _crafted() -> list[str]:
    out = []
    for p in PIECES:
        base = (p * (SIZE // len(p) + 1))[:SIZE]
        out += [base, base + "!", base[:-3] + "==="]
    # near-repeats: the shape that made the old repetition regex explode
    out.append(" ".join(f"w{i % 7} w{i % 5}" for i in range(SIZE // 8)))
    out.append(("go " * 9 + "stop ") * (SIZE // 32))
    out.append("а" + "b" * SIZE)  # one Cyrillic look-alike and a long ASCII word
    out.append("'" + "x" * SIZE)
    out.append("\n" * SIZE + "system: x")
    out.append(("gur naq " * 40 + "the and ") * (SIZE // 360))  # rot13 runs broken again and again
    out.append(("gur naq lbh " + "\n") * (SIZE // 13))  # a short run on every line
    out.append(("t0 0r 4 c0d35 " * 20 + "\n") * (SIZE // 280))  # every line a leetspeak line
    return out


@pytest.fixture(scope="module")
def detector() -> InjectionDetector:
    junk.features("warm up")  # loads the WordPiece tokenizer: the bounds are for the work, not the first load
    return InjectionDetector()


@pytest.mark.parametrize("text", _crafted(), ids=lambda t: repr(t[:12]))
def test_crafted_worst_cases_stay_fast(detector: InjectionDetector, text: str) -> None:
    t0 = time.perf_counter()
    normalize(text)
    heuristics.scan_text(text)
    junk.features(text)
    detector.scan([("user", text), ("tool_result", text)], budget_ms=None)
    assert time.perf_counter() - t0 < 0.5


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=12), st.integers(min_value=50, max_value=1_500))
def test_generated_repetitions_stay_fast(detector: InjectionDetector, parts: list[str], repeat: int) -> None:
    text = "".join(parts) * repeat
    t0 = time.perf_counter()
    detector.scan([("user", text)], budget_ms=None)
    assert time.perf_counter() - t0 < 0.5


def test_thirty_two_hostile_segments_respect_the_budget(detector: InjectionDetector) -> None:
    segs = [("user", t) for t in _crafted()[:32]]
    t0 = time.perf_counter()
    verdict = detector.scan(segs, budget_ms=30)
    assert (time.perf_counter() - t0) * 1000 < 30 + 60
    assert verdict.incomplete or verdict.scanned_chars == verdict.total_chars


def test_repetition_is_found_in_linear_time() -> None:
    assert heuristics.repeated_phrase("please " + "say yes " * 12 + "now") == " ".join(["say", "yes"] * 10)
    assert heuristics.repeated_phrase("one two three four five six seven eight nine ten eleven") is None
    t0 = time.perf_counter()
    assert heuristics.repeated_phrase(" ".join(f"t{i}" for i in range(200_000))) is None
    assert time.perf_counter() - t0 < 1.0
