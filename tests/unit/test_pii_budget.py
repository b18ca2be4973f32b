"""The PII scan keeps to a deadline and says when it did not finish; its cost grows linearly with
the text (spaCy's tokenizer on long chunks, Presidio's context enhancer, overlap resolution); the
guard reports an unfinished scan to the policy and never forwards or logs what it could not read.

No test here times anything: the deadline is driven by a fake clock, and linearity is checked by
what the slow paths are given (chunk lengths) and by equivalence with the upstream algorithms.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.screening import Guard
from extproc.testing.guard import check_chat, guard_for
from intelligence.detectors import pii as pii_module
from intelligence.detectors import pii_budget
from intelligence.detectors.cache import CachedFinder
from intelligence.detectors.pii import PiiDetector, shared_pii_detector
from intelligence.detectors.pii_linear import MAX_CHUNK, BoundedTokenizer, linear_context_enhancer
from intelligence.detectors.spans import Scan, Span, resolve_overlaps

DENSE = "1 " * 5000  # every pair of digits is a phone candidate: ~0.3 s for the full scan


@pytest.fixture(scope="module")
def pii() -> PiiDetector:
    return shared_pii_detector()


class Clock:
    """perf_counter that advances 1 ms per call: 'time' is the number of deadline checks made."""

    def __init__(self) -> None:
        self.calls = itertools.count()

    def __call__(self) -> float:
        return next(self.calls) / 1000.0


# ---------------------------------------------------------------------------------------- deadline
def test_the_phone_recogniser_stops_at_the_deadline_between_candidates(pii: PiiDetector, monkeypatch) -> None:
    full = pii.scan(DENSE)
    assert full.complete and full.scanned_chars == len(DENSE)
    clock = Clock()
    monkeypatch.setattr(pii_budget.time, "perf_counter", clock)
    monkeypatch.setattr(pii_module.time, "perf_counter", clock)
    cut = pii.scan(DENSE, deadline=0.030)  # 30 checks
    assert not cut.complete and cut.scanned_chars == 0 and cut.spans == []
    # it stopped inside the one window, a few candidates past the deadline, not after thousands
    assert 30 < next(clock.calls) < 40


def test_windows_past_the_deadline_are_not_read_and_what_was_read_is_kept(pii: PiiDetector, monkeypatch) -> None:
    window = pii_module.WINDOW_CHARS
    text = "Mail jane.doe@example.com today. " + "x " * window + "and bob@example.org later"
    full = pii.scan(text)
    assert full.complete and {text[s.start : s.end] for s in full.spans} == {"jane.doe@example.com", "bob@example.org"}

    checks = iter([0.0, 5.0])  # before window 1: in time; before window 2: past the deadline
    monkeypatch.setattr(pii_module.time, "perf_counter", lambda: next(checks, 5.0))
    cut = pii.scan(text, deadline=1.0)
    assert not cut.complete
    assert cut.scanned_chars == window  # the first window, read whole
    assert [text[s.start : s.end] for s in cut.spans] == ["jane.doe@example.com"]


def test_no_deadline_and_a_deadline_never_reached_give_the_same_spans(pii: PiiDetector) -> None:
    text = "call +44 20 7946 0958 or +1 415-555-0100, card 4111 1111 1111 1111, ip 10.0.0.12 " * 20
    assert pii.scan(text, deadline=float("inf")) == pii.scan(text)
    assert pii.find(text) == pii.scan(text).spans


def test_text_past_the_size_cap_is_reported_unread(pii: PiiDetector, monkeypatch) -> None:
    monkeypatch.setattr(pii_module, "MAX_PII_CHARS", 100)
    out = pii.scan("a" * 150)
    assert not out.complete and out.scanned_chars == 100


def test_the_cache_does_not_remember_an_unfinished_scan() -> None:
    answers = [Scan([], False, 0), Scan([Span("EMAIL_ADDRESS", 0, 3, 1.0, "t")], True, 10)]

    class Finder:
        calls = 0

        def scan(self, text: str, *, deadline: float | None = None) -> Scan:
            Finder.calls += 1
            return answers[min(Finder.calls - 1, 1)]

        def find(self, text: str) -> list[Span]:
            return self.scan(text).spans

    cache = CachedFinder(Finder())
    assert not cache.scan("t" * 10, deadline=0.0).complete
    assert cache.scan("t" * 10).complete  # scanned again, not the remembered cut
    assert cache.scan("t" * 10).spans == answers[1].spans and Finder.calls == 2  # now remembered


# ------------------------------------------------------------------------------- linear tokenizer
class Spy:
    def __init__(self, inner) -> None:
        self.inner, self.longest = inner, 0

    def __call__(self, text: str):
        self.longest = max([self.longest, *(len(w) for w in text.split())])
        return self.inner(text)


@pytest.fixture(scope="module")
def nlp(pii: PiiDetector):
    return pii._engine.nlp["en"]


def test_spacy_never_tokenizes_a_chunk_longer_than_the_limit(nlp) -> None:
    spy = Spy(nlp.tokenizer.inner)
    bounded = BoundedTokenizer(nlp)
    bounded.inner = spy
    text = "(" * 5000 + "+44 20 7946 0958" + ")" * 5000 + " call me " + "=" * 300
    doc = bounded(text)
    assert doc.text == text
    assert spy.longest <= MAX_CHUNK


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
            st.text(alphabet="()[]-.,;:!?'\"+@/ \n\t1a", min_size=0, max_size=200),
            st.sampled_from([" ", "  ", "\n", "\u3000", "\u00a0", "jane.doe@example.com", "https://example.com/a/b?c=d"]),
        ),
        max_size=12,
    )
)
def test_bounded_tokenizer_keeps_the_text_and_ordinary_texts_keep_their_tokens(nlp, parts) -> None:
    text = "".join(parts)
    bounded = BoundedTokenizer(nlp)
    doc = bounded(text)
    assert doc.text == text
    if not any(len(chunk) > MAX_CHUNK for chunk in text.split()):
        assert [t.text for t in doc] == [t.text for t in nlp.tokenizer.inner(text)]


# ------------------------------------------------------------------------ linear context enhancer
def _upstream():
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    return LemmaContextAwareEnhancer()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(["a", "bb", "phone", "x", "Call", "number", "ccc"])), min_size=1, max_size=30
    ),
    st.integers(0, 200),
)
def test_the_context_enhancer_finds_upstreams_token(layout, start) -> None:
    tokens, indices, pos = [], [], 0
    for gap, word in layout:
        pos += gap
        tokens.append(word)
        indices.append(pos)
        pos += len(word)
    start = start % (pos + 1)
    try:
        expected = _upstream()._find_index_of_match_token("w", start, tokens, indices)
    except ValueError:
        with pytest.raises(ValueError):
            linear_context_enhancer()._find_index_of_match_token("w", start, tokens, indices)
        return
    assert linear_context_enhancer()._find_index_of_match_token("w", start, tokens, indices) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["phone", "Phone", "the", "x", "number", "call", ":"]), min_size=1, max_size=40),
    st.integers(0, 39),
    st.integers(0, 6),
    st.booleans(),
)
def test_the_context_enhancer_collects_upstreams_words(lemmas, index, n_words, backward) -> None:
    keywords = [w for w in ("phone", "number", "call", "x") if w in {lemma.lower() for lemma in lemmas}]
    index = index % len(lemmas)
    name = "_add_n_words_backward" if backward else "_add_n_words_forward"
    expected = getattr(_upstream(), name)(index, n_words, lemmas, keywords)
    assert getattr(linear_context_enhancer(), name)(index, n_words, lemmas, keywords) == expected


# ----------------------------------------------------------------------------- overlap resolution
def _quadratic(spans):
    ranked = sorted(spans, key=lambda s: (-s.score, -(s.end - s.start), s.start))
    kept = []
    for s in ranked:
        if s.end <= s.start:
            continue
        if all(s.end <= k.start or s.start >= k.end for k in kept):
            kept.append(s)
    return sorted(kept, key=lambda s: s.start)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 12), st.sampled_from([0.4, 0.5, 0.85, 1.0])), max_size=40))
def test_overlap_resolution_keeps_what_the_pairwise_check_kept(raw) -> None:
    spans = [Span("K", a, a + n, score, "t") for a, n, score in raw]
    assert resolve_overlaps(spans) == _quadratic(spans)


# ---------------------------------------------------------------------------------------- guard
PII_POLICY = """
version: 1
name: t
rules:
  - id: cut
    match: {detection_incomplete: true}
    actions: {tag: cut}
  - id: redact-pii
    match: {pii: any}
    actions:
      redact: {kinds: [pii], in: [request], restore: true}
"""


def _guard(policy_yaml: str, *, budget_ms: float | None) -> Guard:
    return guard_for(policy_yaml, pii=shared_pii_detector(), pii_budget_ms=budget_ms)


def test_an_unfinished_pii_scan_reaches_the_policy() -> None:
    monitored = PII_POLICY.replace("  - id: redact-pii\n", "  - id: redact-pii\n    mode: monitor\n")
    out, _ = check_chat(_guard(monitored, budget_ms=0), "mail jane.doe@example.com " + DENSE)
    assert out.immediate is None
    assert out.detections.incomplete is True and out.detections.incomplete_scans == frozenset({"pii"})
    assert out.detections.to_dict()["incomplete_scans"] == ["pii"]
    assert "cut" in out.decision.tags


def test_a_finished_pii_scan_is_complete() -> None:
    out, doc = check_chat(_guard(PII_POLICY, budget_ms=None), "mail jane.doe@example.com please")
    assert out.detections.incomplete is False and out.detections.incomplete_scans == frozenset()
    assert "jane.doe@example.com" not in doc["messages"][0]["content"]  # redacted (placeholder)


def test_an_enforced_pii_redaction_that_cannot_finish_refuses_and_logs_only_what_was_read() -> None:
    secret_tail = "call me on +44 20 7946 0958"
    out, _ = check_chat(_guard(PII_POLICY, budget_ms=0), DENSE + secret_tail)
    assert out.immediate is not None and out.immediate.status == 413
    assert b"redaction_incomplete" in out.immediate.body
    logged = out.log_doc["messages"][0]["content"]
    assert "7946" not in logged and "characters not logged: PII scan incomplete" in logged


RESPONSE_MASK_POLICY = """
version: 1
name: t
rules:
  - id: outbound
    match: {apis: [chat]}
    actions:
      mask: {kinds: [pii], in: [response]}
"""


async def test_a_buffered_response_whose_pii_scan_runs_out_of_time_is_withheld_not_passed_on_unmasked() -> None:
    import json

    from extproc.testing.pipeline import Bound, ListRecorder, context, json_chunk, request_headers, response_headers
    from extproc.wire import BodyChunk, Immediate, Phase

    answer = "Reach jane.doe@example.com. " + DENSE
    for budget_ms, expect_cut in ((None, False), (0, True)):
        c = context(ListRecorder())
        c.guard = _guard(RESPONSE_MASK_POLICY, budget_ms=budget_ms)
        ex = Bound(c)
        await ex.handle(Phase.REQUEST_HEADERS, request_headers("/openai/v1/chat/completions"))
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
        assert not isinstance(await ex.handle(Phase.REQUEST_BODY, json_chunk(body)), Immediate)
        await ex.handle(Phase.RESPONSE_HEADERS, response_headers())
        resp = {
            "id": "c1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}],
        }
        reply = await ex.handle(Phase.RESPONSE_BODY, BodyChunk(json.dumps(resp).encode(), True))
        sent = json.loads(reply.body)["choices"][0]["message"]["content"]
        flags = c.recorder.records[0].flags["response_policy"]
        assert "jane.doe@example.com" not in sent
        if expect_cut:  # nothing was read in time: nothing of the answer is passed on, and the record says so
            assert sent.startswith("[llmproxy: ") and "withheld" in sent and flags["withheld_chars"] == len(answer)
        else:
            assert sent.startswith("Reach <EMAIL>. 1 1") and "withheld_chars" not in flags
