"""PERSON names without an NER model: a name gazetteer with capitalisation and context cues.

No spaCy NER model can be installed here, so Presidio's SpacyRecognizer cannot report PERSON. This
recogniser plugs into Presidio as an ordinary ``EntityRecognizer``. It looks at runs of
capitalised words ("Anna Kovács", "John F. Kennedy", "Maria de la Cruz") and reports a run as a
name when the evidence is strong enough (score in brackets):

- a listed first name followed by a listed first or last name, neither an ordinary English word
  (0.85); one of them also an English word ("Jonas Nielsen"), or the surname not listed and not
  English ("Anna Szöllösy") (0.6). Lists: ``names_build.py`` (names-dataset, never Faker);
- a cue right before the run: a title (Mr, Dr, Queen, ...), "my name is", "Name:", "Dear", "Hi"
  (0.85); after a weak cue ("by", "with") an unlisted first word before a listed surname (0.6);
- a lone listed first name only when it speaks ("said Anna", "Anna asked", a speaker label
  "Anna:" at a line start) or stands in an enumeration of names ("Sheila, Donna and Shane") (0.6).

Ordinary capitalised words never count as name evidence ("Will", "May", "Apple"), so a
sentence-initial word or a title-cased product or heading does not fire; a run containing a
place or organisation word ("Jackson Street", "Kelly Services") is not a person. A lone first
name without such a cue is too ambiguous for an inline redactor and is not reported.
"""

from __future__ import annotations

import gzip
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
FIRST_NAMES_FILE = DATA_DIR / "person_first_names.tsv.gz"
LAST_NAMES_FILE = DATA_DIR / "person_last_names.tsv.gz"
COMMON_WORDS_FILE = DATA_DIR / "english_common_words.txt.gz"
# A name counts if it is among the top FIRST_RANK / LAST_RANK of at least one country.
FIRST_RANK = 1000
LAST_RANK = 1000
MAX_NAME_WORDS = 4  # longer capitalised runs are headings or titles, not one person

SCORE_KNOWN = 0.85  # known first + known last name, or a cue
SCORE_UNLISTED = 0.6  # one listed name + an unlisted word that is not English ("Anna Szöllösy")
SCORE_WORDLIKE = 0.6  # listed first + last name, one of them also an English word ("Jonas Nielsen")

TITLES = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "miss",
        "mx",
        "dr",
        "prof",
        "professor",
        "sir",
        "madam",
        "dame",
        "lady",
        "lord",
        "prince",
        "princess",
        "king",
        "queen",
        "duke",
        "duchess",
        "president",
        "senator",
        "judge",
        "captain",
    }
)
# Words that, right before a capitalised run, introduce a person.
GREETINGS = frozenset({"dear", "hi", "hello", "hey", "thanks", "cheers", "signed", "regards", "sincerely", "attn", "i'm", "i’m"})
INTRO_PHRASES: tuple[tuple[str, ...], ...] = (
    ("name", "is"),
    ("name",),
    ("i", "am"),
    ("i'm",),
    ("i’m",),
    ("this", "is"),
    ("called",),
    ("named",),
)
# Words that make a capitalised run a place, an organisation or a thing even when they are also
# surnames ("Jackson Street", "Kelly Services", "Berkeley University").
DESIGNATORS = frozenset(
    {
        "street",
        "st",
        "road",
        "rd",
        "avenue",
        "ave",
        "lane",
        "drive",
        "boulevard",
        "way",
        "place",
        "square",
        "court",
        "park",
        "bridge",
        "hill",
        "river",
        "lake",
        "mountain",
        "island",
        "valley",
        "beach",
        "city",
        "county",
        "state",
        "inc",
        "ltd",
        "llc",
        "plc",
        "gmbh",
        "corp",
        "corporation",
        "company",
        "co",
        "group",
        "holdings",
        "partners",
        "services",
        "solutions",
        "systems",
        "technologies",
        "labs",
        "bank",
        "capital",
        "fund",
        "trust",
        "foundation",
        "institute",
        "university",
        "college",
        "school",
        "academy",
        "hospital",
        "clinic",
        "hotel",
        "church",
        "museum",
        "orchestra",
        "band",
        "club",
        "team",
        "center",
        "centre",
        "airport",
        "station",
        "stadium",
        "theatre",
        "theater",
        "restaurant",
        "cafe",
        "store",
        "shop",
        "market",
        "mall",
        "studio",
        "studios",
        "press",
        "news",
        "times",
        "post",
        # more street suffixes (the USPS list) and company words
        "trail",
        "cliff",
        "cliffs",
        "crossing",
        "heights",
        "terrace",
        "parkway",
        "highway",
        "circle",
        "crescent",
        "grove",
        "gardens",
        "point",
        "ridge",
        "view",
        "walk",
        "row",
        "alley",
        "plaza",
        "harbor",
        "harbour",
        "springs",
        "mills",
        "investments",
        "insurance",
        "consulting",
        "associates",
        "brothers",
        "industries",
        "international",
        "global",
        "media",
        "motors",
        "airlines",
        "energy",
        "pharmaceuticals",
        "logistics",
        "ventures",
        "enterprises",
    }
)
# Weak cues: "sung by X", "a call with X". They admit an unlisted first word before a listed surname.
WEAK_CUES = frozenset({"by", "with", "to", "from", "for", "ask", "contact", "call", "email", "cc", "and", "under"})
SPEECH_VERBS = frozenset({"said", "says", "asked", "asks", "told", "tells", "replied", "shouted", "wrote", "writes", "answered"})
_LIST_GAP = re.compile(r",\s*|\s+and\s+|,\s*and\s+|\s*&\s*")
PARTICLES = frozenset(
    {
        "van",
        "von",
        "de",
        "der",
        "den",
        "da",
        "di",
        "del",
        "della",
        "du",
        "la",
        "le",
        "bin",
        "ibn",
        "al",
        "el",
        "dos",
        "das",
        "ter",
    }
)

_WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*\.?")


@dataclass(frozen=True)
class Gazetteer:
    first: frozenset[str]
    last: frozenset[str]
    common: frozenset[str]  # English words: weak evidence, a surname may be one ("Schwarz", "Sparks")
    first_words: frozenset[str]  # English words that are also common first names ("mark", "rose")
    last_words: frozenset[str]  # English words that are also common surnames ("brown", "young")
    never: frozenset[str]  # stop words and place/organisation words: never part of a name

    @classmethod
    def load(cls, first_rank: int = FIRST_RANK, last_rank: int = LAST_RANK) -> Gazetteer:
        first_words: set[str] = set()
        last_words: set[str] = set()
        for line in _lines(COMMON_WORDS_FILE):
            word, _, roles = line.partition("\t")
            if "F" in roles:
                first_words.add(word)
            if "L" in roles:
                last_words.add(word)
        return cls(
            first=frozenset(_ranked(FIRST_NAMES_FILE, first_rank)),
            last=frozenset(_ranked(LAST_NAMES_FILE, last_rank)),
            common=english_words(),
            first_words=frozenset(first_words),
            last_words=frozenset(last_words),
            never=_stop_words() | DESIGNATORS,
        )


_english: frozenset[str] | None = None
_english_lock = threading.Lock()  # not _shared_lock: the gazetteer loads this while holding that


def english_words() -> frozenset[str]:
    """The English word list (lower case), loaded once per process and shared with the gazetteer.

    Loading it imports nothing beyond the standard library, unlike the gazetteer (spaCy's stop words)."""
    global _english
    with _english_lock:
        if _english is None:
            _english = frozenset(line.partition("\t")[0] for line in _lines(COMMON_WORDS_FILE))
        return _english


def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS  # "will", "may", "can": never name evidence

    return frozenset(STOP_WORDS)


def _lines(path: Path) -> Iterator[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line:
                yield line


def _ranked(path: Path, max_rank: int) -> Iterator[str]:
    for line in _lines(path):
        name, _, rank = line.partition("\t")
        if int(rank) <= max_rank:
            yield name


_shared: Gazetteer | None = None
_shared_lock = threading.Lock()


def shared_gazetteer() -> Gazetteer:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Gazetteer.load()
        return _shared


@dataclass(frozen=True)
class _Word:
    start: int
    end: int
    text: str  # without a trailing "." or possessive "'s"

    @property
    def lower(self) -> str:
        return self.text.lower()

    @property
    def is_initial(self) -> bool:
        return len(self.text) == 1 and self.text.isupper()

    @property
    def is_capitalised(self) -> bool:
        # "McDonald" and "O'Brien" are capitalised; "NASA" and "iPhone" are not name-shaped.
        return self.text[0].isupper() and (len(self.text) == 1 or any(c.islower() for c in self.text[1:3]))


@dataclass(frozen=True)
class PersonMatch:
    start: int
    end: int
    score: float
    reason: str


def _words(text: str) -> list[_Word]:
    words = []
    for m in _WORD.finditer(text):
        raw = m.group()
        end = m.end()
        if raw.endswith("."):
            raw, end = raw[:-1], end - 1
        for suffix in ("'s", "’s"):
            if raw.endswith(suffix) and len(raw) > 2:
                raw, end = raw[: -len(suffix)], end - len(suffix)
        if raw:
            words.append(_Word(m.start(), end, raw))
    return words


def _joined(text: str, left: _Word, right: _Word) -> bool:
    gap = text[left.end : right.start]
    return gap == " " or (left.is_initial and gap in (". ", "."))


def _runs(text: str, words: list[_Word]) -> Iterator[tuple[int, int]]:
    """Index ranges [i, j) of capitalised words written as one name (particles allowed inside)."""
    i, n = 0, len(words)
    while i < n:
        if not words[i].is_capitalised:
            i += 1
            continue
        j = i + 1
        while j < n and _joined(text, words[j - 1], words[j]):
            w = words[j]
            if w.is_capitalised:
                j += 1
                continue
            # "de la", "van der": particles count only when a capitalised word follows them.
            k = j
            while k < n and words[k].lower in PARTICLES and k + 1 < n and _joined(text, words[k], words[k + 1]):
                k += 1
            if k > j and k < n and words[k].is_capitalised:
                j = k + 1
            else:
                break
        yield i, j
        i = j


def _speaks(text: str, words: list[_Word], i: int, j: int) -> bool:
    """A lone name that speaks: "Anna said", "asked Anna", or a speaker label "Anna:" at a line start."""
    line_start = text.rfind("\n", 0, words[i].start) + 1
    if not text[line_start : words[i].start].strip() and text[words[j - 1].end : words[j - 1].end + 1] == ":":
        return True
    after = words[j] if j < len(words) else None
    if after and after.lower in SPEECH_VERBS and text[words[j - 1].end : after.start] in (" ", ", "):
        return True
    before = words[i - 1] if i > 0 else None
    return bool(before and before.lower in SPEECH_VERBS and text[before.end : words[i].start] == " ")


def _cue_before(text: str, words: list[_Word], i: int) -> str:
    """ "strong" after a title, greeting or "my name is"; "weak" after "by", "with", ...; else ""."""
    if i == 0:
        return ""
    prev = words[i - 1]
    gap = text[prev.end : words[i].start]
    if gap.strip(" .,:") or "\n\n" in gap:
        return ""
    lowered = [w.lower for w in words[max(0, i - 3) : i]]
    if lowered[-1] in TITLES or lowered[-1] in GREETINGS:
        return "strong"
    if any(tuple(lowered[-len(p) :]) == p for p in INTRO_PHRASES if len(p) <= len(lowered)):
        return "strong"
    return "weak" if lowered[-1] in WEAK_CUES else ""


class PersonFinder:
    """Finds PERSON spans in text. Pure and thread-safe once the gazetteer is loaded."""

    def __init__(self, gazetteer: Gazetteer | None = None) -> None:
        self.gazetteer = gazetteer or shared_gazetteer()

    def find(self, text: str) -> list[PersonMatch]:
        words = _words(text)
        found: list[PersonMatch] = []
        singles: list[int] = []  # lone capitalised words, candidates for an enumeration of names
        for i, j in _runs(text, words):
            match = self._judge(text, words, i, j)
            if match is not None:
                found.append(match)
            elif j == i + 1:
                singles.append(i)
        found.extend(self._enumerated(text, words, singles))
        found.sort(key=lambda m: m.start)
        return found

    def _plain_first(self, word: _Word) -> bool:
        return word.text in self.gazetteer.first and not self._is_common(word, "first")

    def _enumerated(self, text: str, words: list[_Word], singles: list[int]) -> list[PersonMatch]:
        """ "Sheila, Donna, Sherry and Shane": three or more lone words in a list, most of them first names."""
        groups: list[list[_Word]] = []
        for i in singles:
            w = words[i]
            if groups and _LIST_GAP.fullmatch(text[groups[-1][-1].end : w.start]):
                groups[-1].append(w)
            else:
                groups.append([w])
        found = []
        for group in groups:
            names = [w for w in group if self._plain_first(w)]
            if len(group) >= 3 and len(names) * 3 >= len(group) * 2:
                found.extend(PersonMatch(w.start, w.end, SCORE_UNLISTED, "enumeration") for w in names)
        return found

    def _is_common(self, word: _Word, role: str = "") -> bool:
        """An ordinary word, unless it is also a common name in ``role`` ("first" / "last")."""
        g, lower = self.gazetteer, word.lower
        if lower in g.never:
            return True
        if lower not in g.common:
            return False
        if role == "first":
            return lower not in g.first_words
        if role == "last":
            return lower not in g.last_words
        return lower not in g.first_words and lower not in g.last_words

    def _judge(self, text: str, words: list[_Word], i: int, j: int) -> PersonMatch | None:
        run = words[i:j]
        cue = _cue_before(text, words, i)
        # A title or greeting written inside the run ("Dear Anna", "Dr. Kovács") is a cue, not a name.
        while run and (run[0].lower in TITLES or run[0].lower in GREETINGS):
            run, cue = run[1:], "strong"
        # Leading ordinary words are sentence-initial capitals or headings ("Thanks Anna Smith").
        while run and self._is_common(run[0]) and not run[0].is_initial:
            run, cue = run[1:], ""
        names = [w for w in run if not w.is_initial and w.lower not in PARTICLES]
        if not names or len(names) > MAX_NAME_WORDS or (run[0].is_initial and not cue):
            return None
        g = self.gazetteer
        if any(w.lower in g.never for w in names):
            return None  # "Jackson Street", "Kelly Services", "Grand Hotel"
        start, end = run[0].start, run[-1].end
        first, last = names[0], names[-1]
        first_listed = first.text in g.first
        last_listed = len(names) > 1 and (last.text in g.last or last.text in g.first)
        if cue == "strong":
            titled = run[0].start > 0 and i > 0 and words[i - 1].lower in TITLES
            # After a title a listed surname may be an English word too ("Mrs. Brown", "Dr. Schwarz").
            if any(self._is_common(w) and not (titled and (w.text in g.last or w.text in g.first)) for w in names):
                return None
            return PersonMatch(start, end, SCORE_KNOWN, "cue")
        if len(names) == 1 and len(run) == 1 and self._plain_first(first) and _speaks(text, words, i, j):
            return PersonMatch(start, end, SCORE_UNLISTED, "first+speech")
        if len(names) < 2 or any(self._is_common(w) for w in names[1:-1]):
            return None
        first_plain = first_listed and not self._is_common(first, "first")
        last_plain = last_listed and not self._is_common(last, "last")
        if first_plain and last_plain:
            return PersonMatch(start, end, SCORE_KNOWN, "first+last")
        if first_plain and last_listed:
            return PersonMatch(start, end, SCORE_WORDLIKE, "first+wordlike-last")
        if first_listed and last_plain:
            return PersonMatch(start, end, SCORE_WORDLIKE, "wordlike-first+last")
        if first_plain and last.lower not in g.common:
            return PersonMatch(start, end, SCORE_UNLISTED, "first+unlisted")
        if last_plain and first.lower not in g.common and cue == "weak":
            return PersonMatch(start, end, SCORE_UNLISTED, "unlisted+last")
        return None


def presidio_recognizer(finder: PersonFinder | None = None):  # type: ignore[no-untyped-def]
    """A Presidio ``EntityRecognizer`` for PERSON backed by ``PersonFinder``."""
    from .lean_import import without_ml_frameworks

    with without_ml_frameworks():
        from presidio_analyzer import EntityRecognizer, RecognizerResult

    class PersonGazetteerRecognizer(EntityRecognizer):
        def __init__(self, person_finder: PersonFinder) -> None:
            self._finder = person_finder
            super().__init__(supported_entities=["PERSON"], name="PersonGazetteerRecognizer", supported_language="en")

        def load(self) -> None:  # the gazetteer is loaded by PersonFinder
            return None

        def analyze(self, text, entities, nlp_artifacts=None):  # type: ignore[no-untyped-def]
            if "PERSON" not in entities:
                return []
            return [
                RecognizerResult(
                    "PERSON",
                    m.start,
                    m.end,
                    m.score,
                    recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                        "reason": m.reason,
                    },
                )
                for m in self._finder.find(text)
            ]

    return PersonGazetteerRecognizer(finder or PersonFinder())
