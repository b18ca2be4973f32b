"""What kind of text a window is, so that each layer is trusted only where it was built for.

The statistical layers (embedding classifier, attack memory, token-junk features) were trained on
English prose. On Chinese, Hindi or Spanish prose, on code, logs or JSON, their scores say more about
the text being unfamiliar than about an attack, so the detector caps what they can contribute there
(``injection.UNSUPPORTED_CAP``: tagging or the Claude band, never a block on their own). The rules
(heuristics.py) keep their full weight everywhere: an English "ignore the previous instructions"
inside a Chinese document is still that.

Cheap and bounded: looks at the first ``SAMPLE_CHARS`` characters of a window, one regex pass per
measure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SAMPLE_CHARS = 4_000
LINE_CHARS = 200

# Frequent English words (function words and very common verbs): prose is dense in them, Spanish,
# transliterated text and code identifiers are not.
_ENGLISH = frozenset(
    """a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had has
    have having he her here hers him his how i if in into is it its itself just me more most my no nor not
    now of off on once only or other our ours out over own same she should so some such than that the their
    theirs them then there these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your yours write tell give make use need want please
    like know get one two new first time way about many much must may might shall us let into also been
    has""".split()
)
_LATIN_LETTER = re.compile(r"[A-Za-z\u00c0-\u024f]")
_LETTER = re.compile(r"[^\W\d_]")
_ASCII_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
# A line that reads as code, a log record, a table row or markup rather than prose.
_TECH_LINE = re.compile(
    r"^\s*(?:[#/*]|//|--|<[/!?\w]|[{}\[\]]|\d{4}-\d\d-\d\d|\d\d:\d\d:\d\d|\w+\s*[:=]\s*[\"'{\[\d]|(?:def|class|import|from|return|if|for|while|function|const|let|var|public|private|static|void|int|#include|package|func|fn)\b)"
    r"|[;{}]\s*$|\)\s*:\s*$|=>|->|::|\w\([^()\s]{0,40}\)|\|[^|\n]{0,80}\||\w=\S"
    # manual-page source (troff requests and font escapes) and Perl POD (commands, B<...> markup)
    r"|^\.[A-Za-z]{1,3}\b|\\f[A-Z0-9(]|^=(?:head\d|over|item|back|pod|cut|begin|end|encoding)\b|(?<![A-Za-z])[BICLF]<[^<>\n]{1,60}>"
)


@dataclass(frozen=True, slots=True)
class TextKind:
    kind: str  # english | latin_other | non_latin | technical | empty
    english_share: float  # share of ASCII words that are frequent English words
    latin_share: float  # share of letters in Latin script
    technical_share: float  # share of non-blank lines that read as code / logs / markup

    @property
    def supported(self) -> bool:
        """The statistical layers were built for this kind of text (English prose)."""
        return self.kind == "english"


def classify(text: str) -> TextKind:
    sample = text[:SAMPLE_CHARS]
    letters = len(_LETTER.findall(sample))
    if letters < 3:
        return TextKind("empty", 0.0, 0.0, 0.0)
    latin = len(_LATIN_LETTER.findall(sample)) / letters
    words = _ASCII_WORD.findall(sample)
    english = sum(1 for w in words if w.lower() in _ENGLISH) / len(words) if words else 0.0
    lines = [ln for ln in sample.splitlines() if ln.strip()]
    # each line is judged on its first LINE_CHARS characters: bounded work per line
    technical = sum(1 for ln in lines if _TECH_LINE.search(ln[:LINE_CHARS])) / len(lines) if lines else 0.0
    stripped = sample.lstrip()
    if stripped[:1] in ("{", "[") and sample.count('":') >= 3:
        technical = max(technical, 1.0)
    if latin < 0.7:
        kind = "non_latin"
    elif len(lines) >= 3 and technical >= 0.3:
        kind = "technical"
    elif english < 0.2 and len(words) >= 8:
        kind = "latin_other"
    else:
        kind = "english"
    return TextKind(kind, round(english, 3), round(latin, 3), round(technical, 3))
