"""Personal data detection with Microsoft Presidio's recognisers, run without a downloaded model.

Presidio's default NLP engine loads the spaCy model ``en_core_web_lg`` (and would try to download
it). Nothing may be downloaded here, so the analyzer runs on a *blank* spaCy English pipeline: a
tokenizer only (lemmas are set to the lower-cased token so Presidio's context words, "phone",
"card", ..., still raise scores). Every pattern recogniser works exactly as upstream: email, phone
(python-phonenumbers), credit card (Luhn-checked), IBAN (checksum-validated), US SSN, IP address.

PERSON would need a statistical NER model. Without one, PERSON comes from ``names.py``: a name
gazetteer (names-dataset lists) with capitalisation and context cues, plugged into Presidio as a
custom recogniser; it favours precision over recall (see docs/security.md). Pass ``spacy_model=``
naming an installed spaCy pipeline and Presidio's SpacyRecognizer reports PERSON instead. A model
is never downloaded: a name that is not installed falls back to the gazetteer with a warning.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .pii_budget import OutOfTime, budgeted_phone_recognizer, deadline_set
from .pii_linear import bound_tokenizer, linear_context_enhancer
from .spans import Scan, Span, resolve_overlaps

log = logging.getLogger(__name__)

DEFAULT_ENTITIES: tuple[str, ...] = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
    "PERSON",
)
# Presidio recognisers beyond the defaults, used by `llmproxy eval pii` and available to policies.
EXTRA_ENTITIES: tuple[str, ...] = ("URL", "DATE_TIME", "US_DRIVER_LICENSE")
DEFAULT_MIN_SCORE = 0.4  # Presidio's phone recogniser scores 0.4 without context words
# Texts are analysed in windows so one huge body cannot make a single regex pass quadratic.
WINDOW_CHARS = 10_000
WINDOW_OVERLAP = 256
MAX_PII_CHARS = 1_000_000  # beyond this the text is not scanned: policy blocks oversized bodies
# The spaCy vocabulary a PII detector lets grow before it renews its pipeline (~7 MiB; see _renew_if_grown).
MAX_LEXEMES = 20_000

PLACEHOLDER_LABELS = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "SSN",
    "IP_ADDRESS": "IP",
    "PERSON": "PERSON",
    "URL": "URL",
    "DATE_TIME": "DATE",
    "US_DRIVER_LICENSE": "DRIVER_LICENSE",
}

_DIGIT = re.compile(r"\d")
_CAPITALISED = re.compile(r"[^\W\d_a-z][^\W\d_A-Z]")  # an upper-case letter then a lower-case one


_IPV4_HINT = re.compile(r"\d\.\d{1,3}\.\d{1,3}\.\d")
_IPV6_HINT = re.compile(r"::|[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}")
_IBAN_HINT = re.compile(r"[A-Za-z]{2}[ \-]?\d{2}")  # country code and check digits open every IBAN


# Digit blocks joined by at most four of python-phonenumbers' punctuation characters (its matcher's
# _VALID_PUNCTUATION and _PUNCTUATION_LIMIT): the shape every phone-number candidate has. Card numbers
# and SSNs (digits joined by single spaces, hyphens or dots) are runs of this shape too.
_PHONE_PUNCTUATION = (
    "-x\u2010-\u2015\u2212\u30fc\uff0d-\uff0f \u00a0\u00ad\u200b\u2060\u3000()\uff08\uff09\uff3b\uff3d.\\[\\]/~\u2053\u223c\uff5e"
)
_DIGIT_RUN = re.compile(r"\d+(?:[" + _PHONE_PUNCTUATION + r"]{1,4}\d+)*")


def _digits(text: str) -> int:
    return len(_DIGIT.findall(text))


def _longest_run(text: str) -> int:
    """The most digits in one run (see _DIGIT_RUN)."""
    return max((len(_DIGIT.findall(m.group())) for m in _DIGIT_RUN.finditer(text)), default=0)


# Cheap preconditions: Presidio runs a recogniser only if its entity could be in the text at all.
# The phone recogniser alone costs ~0.5 ms per call (python-phonenumbers parses every candidate once
# per region), so it runs only when one run of digits is long enough to be a number, not when a text's
# scattered figures add up to seven digits (a table, a recipe, code).
def _gate(entity: str, text: str, digits: int, run: int) -> bool:
    if entity == "EMAIL_ADDRESS":
        return "@" in text
    if entity == "PHONE_NUMBER":
        return run >= 7
    if entity in ("CREDIT_CARD",):
        return run >= 12
    if entity == "IBAN_CODE":
        return digits >= 8 and _IBAN_HINT.search(text) is not None
    if entity == "US_SSN":
        return run >= 9
    if entity == "IP_ADDRESS":
        # Presidio's patterns are dotted quads and colon-separated hex groups: a count of digits is not an address
        return (digits >= 4 and _IPV4_HINT.search(text) is not None) or _IPV6_HINT.search(text) is not None
    if entity == "URL":
        return "." in text
    if entity in ("DATE_TIME", "US_DRIVER_LICENSE"):
        return digits >= 1
    if entity == "PERSON":
        return _CAPITALISED.search(text) is not None
    return True


class _AnalyzerFactory:
    """Builds Presidio objects lazily: importing presidio and spaCy costs ~1 s."""

    @staticmethod
    def build(entities: Sequence[str], spacy_model: str | None):
        import tldextract

        from .lean_import import without_ml_frameworks

        with without_ml_frameworks():
            import spacy
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

        # Presidio logs every recogniser it loads at INFO; that is start-up noise for the gateway.
        logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
        from presidio_analyzer.nlp_engine import SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            DateRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            SpacyRecognizer,
            UrlRecognizer,
            UsLicenseRecognizer,
            UsSsnRecognizer,
        )

        # tldextract fetches the public suffix list over the network by default; its bundled
        # snapshot is enough to validate an email's domain.
        offline_tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

        class OfflineEmailRecognizer(EmailRecognizer):
            def validate_result(self, pattern_text: str) -> bool:
                return offline_tld(pattern_text).fqdn != ""

        has_ner = bool(spacy_model) and (spacy.util.is_package(spacy_model) or _is_path(spacy_model))
        if spacy_model and not has_ner:
            log.warning("spaCy model %r is not installed (never downloaded); PERSON uses the name gazetteer", spacy_model)

        def pipeline() -> Any:
            if has_ner:
                return bound_tokenizer(spacy.load(spacy_model))
            nlp = spacy.blank("en")
            nlp.add_pipe("llmproxy_lower_lemma")
            return bound_tokenizer(nlp)

        class LocalSpacyEngine(SpacyNlpEngine):
            def load(self) -> None:
                self.nlp = {"en": pipeline()}

        engine = LocalSpacyEngine(models=[{"lang_code": "en", "model_name": spacy_model or "blank"}])
        engine.load()
        by_entity = {
            "EMAIL_ADDRESS": OfflineEmailRecognizer,
            "PHONE_NUMBER": budgeted_phone_recognizer(PhoneRecognizer),
            "CREDIT_CARD": CreditCardRecognizer,
            "IBAN_CODE": IbanRecognizer,
            "US_SSN": UsSsnRecognizer,
            "IP_ADDRESS": IpRecognizer,
            "URL": UrlRecognizer,
            "DATE_TIME": DateRecognizer,
            "US_DRIVER_LICENSE": UsLicenseRecognizer,
        }
        registry = RecognizerRegistry(supported_languages=["en"])
        for entity in entities:
            if entity in by_entity:
                registry.add_recognizer(by_entity[entity]())
        gazetteer = None
        if "PERSON" in entities:
            if has_ner:
                registry.add_recognizer(SpacyRecognizer(supported_entities=["PERSON"]))
            else:
                from .names import presidio_recognizer

                gazetteer = presidio_recognizer()
                registry.add_recognizer(gazetteer)
        analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=engine,
            supported_languages=["en"],
            context_aware_enhancer=linear_context_enhancer(),
        )
        supported = {e for e in entities if e in by_entity or e == "PERSON"}
        return analyzer, supported, gazetteer, engine, pipeline


def _is_path(name: str) -> bool:
    from pathlib import Path

    return Path(name).exists()


def _register_lemma_component() -> None:
    from .lean_import import without_ml_frameworks

    with without_ml_frameworks():
        from spacy.language import Language

    if "llmproxy_lower_lemma" in Language.factories:
        return

    @Language.component("llmproxy_lower_lemma")
    def lower_lemma(doc):  # type: ignore[no-untyped-def]
        # A blank pipeline has no lemmatizer; Presidio matches context words against lemmas.
        for token in doc:
            token.lemma_ = token.lower_
        return doc


@dataclass
class PiiDetector:
    """Finds personal data in text. Thread-safe; build once per process (see ``shared_pii_detector``)."""

    entities: tuple[str, ...] = DEFAULT_ENTITIES
    min_score: float = DEFAULT_MIN_SCORE
    spacy_model: str | None = None

    max_lexemes: int = MAX_LEXEMES

    def __post_init__(self) -> None:
        _register_lemma_component()
        built = _AnalyzerFactory.build(self.entities, self.spacy_model)
        self._analyzer, self.supported, self._gazetteer, self._engine, self._pipeline = built
        self._lock = threading.Lock()  # spaCy pipelines are not documented as thread-safe
        self._renewing = False
        self.renewals = 0

    def _vocab_size(self) -> int:
        return len(self._engine.nlp["en"].vocab)

    def _renew_if_grown(self) -> None:
        """spaCy adds every new token of every text to its vocabulary and tokenizer cache for good: a
        gateway that sees order numbers, e-mail addresses and ids grew ~1.9 KiB a prompt without end
        (110,000 lexemes, +100 MiB over 20,000 such texts). Past ``max_lexemes`` (20,000: a renewal
        every 10,000-20,000 such prompts) a fresh pipeline is built off the request path (~70 ms) and
        swapped in; the old one is freed. Results do not change: the pipeline only tokenizes (lemma =
        lower-cased token), and a model pipeline is reloaded from the same package."""
        if self._renewing or self._vocab_size() <= self.max_lexemes:
            return
        self._renewing = True

        def renew() -> None:
            try:
                fresh = self._pipeline()
                fresh("warm")  # its first call sets up the tokenizer's tables
                with self._lock:
                    self._engine.nlp = {"en": fresh}
                    self.renewals += 1
            except Exception:  # the old pipeline keeps working; tried again after as much growth again
                self.max_lexemes = self._vocab_size() + self.max_lexemes
                log.exception("pii: could not renew the spaCy pipeline; next try past %d lexemes", self.max_lexemes)
            finally:
                self._renewing = False

        threading.Thread(target=renew, name="pii-pipeline-renew", daemon=True).start()

    @property
    def detects_person(self) -> bool:
        return "PERSON" in self.supported

    def find(self, text: str) -> list[Span]:
        """Every span in ``text`` (its first ``MAX_PII_CHARS``), however long that takes: for tools
        and evaluation. The gateway's request path calls :meth:`scan` with a deadline."""
        return self.scan(text).spans

    __call__ = find

    def scan(self, text: str, *, deadline: float | None = None) -> Scan:
        """The spans found in ``text`` before ``deadline`` (a ``time.perf_counter()`` value; None: no
        deadline). Windows are read in order; what the deadline cut off, or what lies past
        ``MAX_PII_CHARS``, was not read, and the scan says so (``complete=False``)."""
        if not text:
            return Scan([], True, 0)
        found: list[Span] = []
        scanned = 0
        complete = len(text) <= MAX_PII_CHARS
        for offset, window in _windows(text[:MAX_PII_CHARS]):
            if deadline is not None and time.perf_counter() > deadline:
                complete = False
                break
            try:
                with deadline_set(deadline):
                    found.extend(self._find_window(window, offset))
            except OutOfTime:
                complete = False
                break
            scanned = offset + len(window)
        return Scan(resolve_overlaps(found), complete, scanned)

    def _find_window(self, text: str, offset: int) -> list[Span]:
        digits = _digits(text)
        run = _longest_run(text) if digits >= 7 else digits
        wanted = [e for e in self.supported if _gate(e, text, digits, run)]
        if not wanted:
            return []
        if wanted == ["PERSON"] and self._gazetteer is not None:
            # Most prompts: capitalised words, no digits or '@'. The gazetteer reads the text itself, so
            # skip the analyzer's spaCy pass (about 6x the gazetteer's own cost); same results.
            results = [r for r in self._gazetteer.analyze(text, ["PERSON"]) if r.score >= self.min_score]
            return [
                Span(r.entity_type, r.start + offset, r.end + offset, float(r.score), f"presidio:{_recognizer_name(r)}")
                for r in results
            ]
        with self._lock:
            results = self._analyzer.analyze(text=text, language="en", entities=wanted, score_threshold=self.min_score)
        self._renew_if_grown()
        return [
            Span(r.entity_type, r.start + offset, r.end + offset, float(r.score), f"presidio:{_recognizer_name(r)}")
            for r in results
        ]


def _recognizer_name(result: object) -> str:
    meta = getattr(result, "recognition_metadata", None) or {}
    return str(meta.get("recognizer_name", "unknown"))


def _windows(text: str) -> Iterable[tuple[int, str]]:
    if len(text) <= WINDOW_CHARS:
        yield 0, text
        return
    step = WINDOW_CHARS - WINDOW_OVERLAP
    for start in range(0, len(text), step):
        yield start, text[start : start + WINDOW_CHARS]
        if start + WINDOW_CHARS >= len(text):
            return


_shared: dict[tuple[tuple[str, ...], float, str | None], PiiDetector] = {}
_shared_lock = threading.Lock()


def shared_pii_detector(
    entities: tuple[str, ...] = DEFAULT_ENTITIES, min_score: float = DEFAULT_MIN_SCORE, spacy_model: str | None = None
) -> PiiDetector:
    key = (tuple(entities), min_score, spacy_model)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = PiiDetector(tuple(entities), min_score, spacy_model)
        return _shared[key]
