"""PII detection with Presidio (blank spaCy pipeline) and reversible, stream-safe redaction."""

from __future__ import annotations

import pytest

from intelligence.detectors.pii import PiiDetector, shared_pii_detector
from intelligence.detectors.redact import Redaction, StreamRedactor, StreamRestorer, holdback_start, redact_text
from intelligence.detectors.spans import Span, combine, resolve_overlaps

TEXT = (
    "Hi, I'm Jane. Mail jane.doe@example.com or call +1 415-555-0100 today. "
    "My card is 4111 1111 1111 1111 and IBAN GB82 WEST 1234 5698 7654 32, SSN 219-09-9999, server 10.0.0.12. Thanks!"
)
VALUES = {
    "EMAIL_ADDRESS": "jane.doe@example.com",
    "PHONE_NUMBER": "+1 415-555-0100",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "IBAN_CODE": "GB82 WEST 1234 5698 7654 32",
    "US_SSN": "219-09-9999",
    "IP_ADDRESS": "10.0.0.12",
    "PERSON": "Jane",  # after "I'm": a cue, see names.py
}


@pytest.fixture(scope="module")
def pii() -> PiiDetector:
    return shared_pii_detector()


def test_finds_each_entity_type(pii: PiiDetector) -> None:
    spans = pii.find(TEXT)
    found = {s.kind: TEXT[s.start : s.end] for s in spans}
    assert found == VALUES
    assert all(0 < s.score <= 1 and s.detector.startswith("presidio:") for s in spans)


def test_luhn_and_iban_checksums_are_enforced(pii: PiiDetector) -> None:
    kinds = {s.kind for s in pii.find("card 4111 1111 1111 1112 and IBAN GB82 WEST 1234 5698 7654 33")}
    assert "CREDIT_CARD" not in kinds
    assert "IBAN_CODE" not in kinds


def test_no_false_positives_on_plain_prose(pii: PiiDetector) -> None:
    assert pii.find("The meeting moved to Tuesday afternoon; bring the quarterly report.") == []
    assert pii.find("") == []


def test_digit_entities_are_found_by_their_own_digits_not_the_texts_total(pii: PiiDetector, monkeypatch) -> None:
    # The phone, card and SSN recognisers run when one run of digits could be a number: a text's
    # scattered figures do not send it through them, and a number is found whatever else is around it.
    from presidio_analyzer import AnalyzerEngine

    entities: list[list[str]] = []
    analyze = AnalyzerEngine.analyze

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        entities.append(sorted(kwargs.get("entities") or []))
        return analyze(self, *args, **kwargs)

    monkeypatch.setattr(AnalyzerEngine, "analyze", spy)
    recipe = "Serves 4: 2 onions, 3 cloves, 1 tin of tomatoes, 250 g lentils, bake 45 min at 180 C for 12 people."
    assert [s.kind for s in pii.find(recipe) if s.kind != "PERSON"] == []
    assert not any({"PHONE_NUMBER", "US_SSN", "CREDIT_CARD"} & set(e) for e in entities)
    for number, kind in (("+1 415-555-0100", "PHONE_NUMBER"), ("219-09-9999", "US_SSN"), ("4111 1111 1111 1111", "CREDIT_CARD")):
        for text in (f"reach me: {number}", f"{recipe} Also {number}, thanks."):
            found = [text[s.start : s.end] for s in pii.find(text) if s.kind == kind]
            assert found == [number], (text, found)
    # six digits with other figures around them: not a phone number (it was, when the gate counted the text's digits)
    assert [s for s in pii.find("Flat 12, 3369 24 Clarke Avenue, 805 Pines Beach") if s.kind == "PHONE_NUMBER"] == []


def test_the_spacy_vocabulary_stays_bounded_and_results_do_not_change() -> None:
    # spaCy keeps every new token it tokenizes: ids and numbers in prompts grew the sidecar without end.
    import time

    detector = PiiDetector(entities=("EMAIL_ADDRESS", "PHONE_NUMBER"), max_lexemes=3000)
    base = detector._vocab_size()

    def text(i: int) -> str:
        return f"Ticket T{i}-{i * 7919} from user{i}@example.com, call +1 415-555-{i % 10000:04d} (order {i * 104729})"

    first = [(s.kind, s.start, s.end) for s in detector.find(text(1))]
    assert [k for k, _, _ in first] == ["EMAIL_ADDRESS", "PHONE_NUMBER"]
    for i in range(2, 2000):
        detector.find(text(i))
        if detector.renewals:
            break
        time.sleep(0.0005 if detector._renewing else 0)
    deadline = time.monotonic() + 30
    while detector._renewing and time.monotonic() < deadline:
        time.sleep(0.01)
    assert detector.renewals >= 1
    assert detector._vocab_size() < 3000 - 500 and detector._vocab_size() < base + 1500
    assert [(s.kind, s.start, s.end) for s in detector.find(text(1))] == first


def test_a_failed_pipeline_renewal_keeps_the_old_one_and_waits_for_more_growth(caplog) -> None:
    import time

    detector = PiiDetector(entities=("PHONE_NUMBER",), max_lexemes=1000)
    attempts: list[int] = []

    def broken() -> None:
        attempts.append(1)
        raise RuntimeError("no pipeline today")

    detector._pipeline = broken  # type: ignore[assignment]
    for i in range(400):
        detector.find(f"order A{i}x{i * 31} B{i}y call +1 415-555-{i % 10000:04d}")
        while detector._renewing:
            time.sleep(0.005)
    # ~2,000 new lexemes past a threshold of 1,000: without the back-off every later call would try again
    assert 1 <= len(attempts) <= 2 and detector.renewals == 0
    assert detector.max_lexemes > 2000
    assert [s.kind for s in detector.find("call +1 415-555-0100")] == ["PHONE_NUMBER"]
    assert "could not renew the spaCy pipeline" in caplog.text


def test_person_without_ner_model_uses_the_gazetteer(pii: PiiDetector) -> None:
    assert pii.detects_person
    detector = PiiDetector(entities=("EMAIL_ADDRESS", "PERSON"), spacy_model="definitely_not_installed_model")
    assert detector.supported == {"EMAIL_ADDRESS", "PERSON"}
    spans = detector.find("Please forward this to Maria Gonzalez before noon.")
    assert [(s.kind, s.detector) for s in spans] == [("PERSON", "presidio:PersonGazetteerRecognizer")]
    without = PiiDetector(entities=("EMAIL_ADDRESS",))
    assert without.find("Please forward this to Maria Gonzalez before noon.") == []


def test_extra_recognisers_and_windows(pii: PiiDetector) -> None:
    extra = PiiDetector(entities=("URL", "DATE_TIME", "EMAIL_ADDRESS"))
    kinds = {s.kind for s in extra.find("See https://example.org/docs on 2024-05-01 or mail a@example.com")}
    assert {"URL", "DATE_TIME", "EMAIL_ADDRESS"} <= kinds
    long_text = ("filler words here " * 800) + " reach me at bob@example.com " + ("more filler " * 800)
    spans = pii.find(long_text)
    assert [long_text[s.start : s.end] for s in spans] == ["bob@example.com"]


def test_redaction_round_trip(pii: PiiDetector) -> None:
    redacted, redaction, spans = redact_text(TEXT, pii.find)
    for value in VALUES.values():
        assert value not in redacted
    assert "<EMAIL_1>" in redacted and "<CREDIT_CARD_1>" in redacted and "<IBAN_1>" in redacted
    assert "<PERSON_1>" in redacted
    assert redaction.restore(redacted) == TEXT
    assert len(spans) == len(VALUES)


def test_same_value_same_placeholder_and_mask_mode() -> None:
    r = Redaction()
    spans = [
        Span("EMAIL_ADDRESS", 0, 5, 1.0, "t"),
        Span("EMAIL_ADDRESS", 6, 11, 1.0, "t"),
        Span("EMAIL_ADDRESS", 12, 17, 1.0, "t"),
    ]
    assert r.redact("a@b.c x@y.z a@b.c", spans) == "<EMAIL_1> <EMAIL_2> <EMAIL_1>"
    assert r.counts == {"EMAIL": 2}
    masked = Redaction(mode="mask")
    assert masked.redact("a@b.c", spans[:1]) == "<EMAIL>"
    assert masked.mapping == {}
    assert masked.restore("<EMAIL>") == "<EMAIL>"


def test_restore_leaves_unknown_placeholders() -> None:
    r = Redaction(mapping={"<EMAIL_1>": "a@b.c"})
    assert r.restore("to <EMAIL_1> and <PHONE_9>") == "to a@b.c and <PHONE_9>"


def test_stream_restorer_every_split(pii: PiiDetector) -> None:
    redacted, redaction, _ = redact_text(TEXT, pii.find)
    for i in range(len(redacted) + 1):
        restorer = StreamRestorer(redaction)
        out = restorer.feed(redacted[:i]) + restorer.feed(redacted[i:]) + restorer.flush()
        assert out == TEXT, i


def test_stream_restorer_holds_only_a_possible_placeholder() -> None:
    redaction = Redaction(mapping={"<EMAIL_1>": "a@b.c"})
    restorer = StreamRestorer(redaction)
    assert restorer.feed("write to <EMA") == "write to "
    assert restorer.feed("IL_1> now 3 < 4") == "a@b.c now 3 < 4"
    assert restorer.feed(" x <") == " x "
    assert restorer.flush() == "<"


def test_stream_redactor_every_two_way_split(pii: PiiDetector) -> None:
    full, _, _ = redact_text(TEXT, pii.find)
    for i in range(len(TEXT) + 1):
        sr = StreamRedactor(pii.find)
        out = sr.feed(TEXT[:i]) + sr.feed(TEXT[i:]) + sr.flush()
        assert out == full, i
        assert sr.redaction.restore(out) == TEXT


def test_stream_redactor_word_by_word_and_char_by_char(pii: PiiDetector) -> None:
    full, _, _ = redact_text(TEXT, pii.find)
    sr = StreamRedactor(pii.find)
    pieces = [sr.feed(w + " ") for w in TEXT.split(" ")]
    out = ("".join(pieces) + sr.flush()).rstrip(" ")
    assert out == full
    text = "mail bob@example.com now, card 4111 1111 1111 1111."
    sr = StreamRedactor(pii.find)
    out = "".join(sr.feed(c) for c in text) + sr.flush()
    assert out == redact_text(text, pii.find)[0]
    assert [s.kind for s in sr.spans] == ["EMAIL_ADDRESS", "CREDIT_CARD"]
    assert text[sr.spans[0].start : sr.spans[0].end] == "bob@example.com"


def test_stream_redactor_holds_back_little(pii: PiiDetector) -> None:
    sr = StreamRedactor(pii.find)
    assert sr.feed("The answer is forty-two and ") == "The answer is forty-two and "
    assert sr.feed("the card 4111 1111") == "the card "
    assert sr.feed(" 1111 1111 ok") == "<CREDIT_CARD_1> "
    assert sr.flush() == "ok"


def test_holdback_is_bounded() -> None:
    assert holdback_start("plain words end ", 128) == len("plain words end ")
    assert holdback_start("call 415 555", 128) == len("call ")
    digits = "1 " * 500
    assert holdback_start(digits, 64) == len(digits) - 64


def test_resolve_overlaps_and_combine() -> None:
    a = Span("A", 0, 10, 0.5, "x")
    b = Span("B", 5, 8, 0.9, "x")
    c = Span("C", 12, 14, 0.1, "x")
    assert resolve_overlaps([a, b, c, Span("D", 3, 3, 1.0, "x")]) == [b, c]
    finder = combine(lambda t: [a], lambda t: [b])
    assert finder("whatever") == [b]
    assert b.value("0123456789") == "567"
    assert b.to_dict()["kind"] == "B"
