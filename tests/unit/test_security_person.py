"""PERSON names from the gazetteer recogniser (intelligence/detectors/names.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intelligence.detectors.names import PersonFinder, presidio_recognizer, shared_gazetteer


@pytest.fixture(scope="module")
def finder() -> PersonFinder:
    return PersonFinder(shared_gazetteer())


def names_in(finder: PersonFinder, text: str) -> list[str]:
    return [text[m.start : m.end] for m in finder.find(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Please forward the contract to Maria Gonzalez before Friday.", ["Maria Gonzalez"]),
        ("Bill Gates founded Microsoft in 1975.", ["Bill Gates"]),
        ("Mark Johnson called yesterday about the invoice.", ["Mark Johnson"]),
        ("The report was written by John F. Kennedy's staff.", ["John F. Kennedy"]),
        ("Ask Maria de la Cruz about it.", ["Maria de la Cruz"]),
        ("My name is Anna Kovács and I need help with my order.", ["Anna Kovács"]),
        ("Dear Mr. Smith, thank you for your letter.", ["Smith"]),
        ("Hi Priya, can you summarise this thread?", ["Priya"]),
        ("Invite Krisztián Szöllösy and Emma Brown to the call.", ["Krisztián Szöllösy", "Emma Brown"]),
        ("Mrs. Brown called about the refund.", ["Brown"]),  # after a title an English-word surname counts
        ('"Stop right there!" said Anna.', ["Anna"]),
        ("Anna: where did you park the car?\nBen: near the station.", ["Anna", "Ben"]),
        ("The founders were Sheila, Donna, Sherry and Shane.", ["Sheila", "Donna", "Sherry", "Shane"]),
        ("The song was arranged by Bonifacy Kaczmarek.", ["Bonifacy Kaczmarek"]),  # weak cue + listed surname
    ],
)
def test_finds_names_in_typical_sentences(finder: PersonFinder, text: str, expected: list[str]) -> None:
    assert names_in(finder, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Will you help me write a cover letter?",  # sentence-initial modal that is also a name
        "May I ask how the billing cycle works?",
        "Please Review The Attached Document Before The Meeting",  # title-cased heading
        "I use Google Chrome and Visual Studio Code on my Apple Watch.",  # products
        "Send the parcel to Jackson Street tomorrow.",  # a surname-shaped place
        "Kelly Services is hiring in Boston.",  # an organisation
        "The Rose Garden opens on Monday.",
        "Best Practices for Senior Frontend developers",
        "what is the weather like in paris today",
        "Mary",  # a lone first name without a cue is too ambiguous to redact
        "Call NASA and IBM about the launch.",
        "We support Python, Java, Ruby and Go.",  # an enumeration of things, not of people
        "The shifts are Monday, Tuesday and Friday.",
        "Note: bring the quarterly report.",  # a label at a line start that is not a name
        "Anna is late again.",  # a lone first name that does not speak
        "The app was built by Bonifacy Zzyxwqov.",  # weak cue, but neither word is a listed name
    ],
)
def test_ignores_capitalised_common_words_and_products(finder: PersonFinder, text: str) -> None:
    assert names_in(finder, text) == []


def test_scores_rank_the_evidence(finder: PersonFinder) -> None:
    (known,) = finder.find("Contact Maria Gonzalez today.")
    (unlisted,) = finder.find("Contact Maria Zzyxwqov today.")
    assert known.score > unlisted.score >= 0.5
    assert (known.reason, unlisted.reason) == ("first+last", "first+unlisted")


def test_presidio_recognizer_reports_person_only_when_asked(finder: PersonFinder) -> None:
    recognizer = presidio_recognizer(finder)
    text = "Please forward the contract to Maria Gonzalez."
    (result,) = recognizer.analyze(text, ["PERSON"])
    assert (result.entity_type, text[result.start : result.end]) == ("PERSON", "Maria Gonzalez")
    assert result.recognition_metadata["recognizer_name"] == "PersonGazetteerRecognizer"
    assert recognizer.analyze(text, ["EMAIL_ADDRESS"]) == []


def test_gazetteer_holds_names_and_tags_name_words(finder: PersonFinder) -> None:
    g = finder.gazetteer
    assert {"Maria", "John", "Krisztián"} <= g.first and {"Gonzalez", "Smith"} <= g.last
    assert "mark" in g.first_words and "brown" in g.last_words  # English words that are also names
    assert "apple" in g.common and "apple" not in g.first_words
    assert "will" in g.never and "street" in g.never


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(list("Ab Jo hn Smi th.\n'’-É é Mr Dr van 1") + ["John", " Smith", "Mr.", " Dear ", "Ä"]), max_size=60
    )
)
def test_fuzz_never_crashes_and_spans_are_in_bounds(parts: list[str]) -> None:
    text = "".join(parts)
    finder = PersonFinder()
    for m in finder.find(text):
        assert 0 <= m.start < m.end <= len(text)
        assert text[m.start].isupper()
        assert 0 < m.score <= 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_arbitrary_unicode(text: str) -> None:
    for m in PersonFinder().find(text):
        assert 0 <= m.start < m.end <= len(text)


OPT_IN_POLICY = """
version: 1
name: names-opt-in
rules:
  - id: redact-names
    match: {pii: [PERSON]}
    actions:
      redact: {kinds: [PERSON], in: [request], restore: true}
"""


def test_policy_can_select_person_for_redaction() -> None:
    from extproc.testing.guard import check_chat, guard_for
    from intelligence.detectors.pii import shared_pii_detector

    content = "Draft a reply to Maria Gonzalez at maria@example.com about the delay."
    out, doc = check_chat(guard_for(OPT_IN_POLICY, pii=shared_pii_detector()), content)
    assert out.immediate is None and dict(out.detections.pii) == {"PERSON": 1, "EMAIL_ADDRESS": 1}
    assert out.redacted == 1  # the guard rewrites the request document in place
    sent = doc["messages"][0]["content"]
    assert "Maria Gonzalez" not in sent and "<PERSON_1>" in sent
    assert "maria@example.com" in sent  # only the selected kind is rewritten


def test_person_only_texts_skip_the_analyzer_with_the_same_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    from intelligence.detectors.pii import PiiDetector, shared_pii_detector

    fast = shared_pii_detector()
    assert fast._gazetteer is not None
    slow = PiiDetector()
    slow._gazetteer = None  # every window through Presidio's analyzer, as before the shortcut
    texts = [
        "Dear Maria Gonzalez, thanks for the call.",
        "Please ask Dr. Chen about it.",
        "Paris In Spring Is Lovely",
        "Mail John Smith at john.smith@example.com or call 212-555-0187.",
        "no capitals here at all",
    ]
    for text in texts:
        assert [(s.kind, s.start, s.end) for s in fast.find(text)] == [(s.kind, s.start, s.end) for s in slow.find(text)]
    calls = []
    monkeypatch.setattr(fast._analyzer, "analyze", lambda **kw: calls.append(kw) or [])
    assert [s.kind for s in fast.find("Dear Maria Gonzalez, thanks.")] == ["PERSON"] and calls == []
