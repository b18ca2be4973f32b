"""Text normalisation before detection.

Attackers hide instructions from pattern matchers with Unicode tricks (zero-width characters,
bidi controls, look-alike letters from other scripts, fullwidth or mathematical letters, invisible
"tag" characters) and with encodings (base64, hex, binary, rot13, percent-encoding). Detectors
therefore look at a canonical form, plus the decoded form of any payload found in the text.

The normalised text is for *detection only*: offsets differ from the original, so redaction works
on the original text (see pii.py / secrets.py).

Work is bounded: at most ``MAX_SCAN_CHARS`` characters are examined (the head and the tail of a
longer text, because injections hide at either end), at most ``MAX_PAYLOADS`` encoded payloads are
decoded, each to at most ``MAX_DECODED_CHARS`` characters, and decoding nests at most
``MAX_DEPTH`` levels (base64 inside base64).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass, field

MAX_SCAN_CHARS = 20_000
MAX_PAYLOADS = 8
MAX_DECODED_CHARS = 4_096
MAX_DEPTH = 2
# A candidate longer than this is a blob (an image, a file), not a hidden instruction.
_MAX_CANDIDATE_CHARS = 16_384

_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u180e\u00ad\u034f")
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_VARIATION_SELECTORS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")
_TAGS = re.compile("[\U000e0000-\U000e007f]+")  # "ASCII smuggling": invisible copies of ASCII
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")

# Letters from other scripts that render like Latin ones (a subset of Unicode's confusables.txt:
# the ones that survive NFKC and are used in practice to dodge keyword filters).
_CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a",
    "в": "b",
    "е": "e",
    "ё": "e",
    "к": "k",
    "м": "m",
    "н": "h",
    "о": "o",
    "р": "p",
    "с": "c",
    "т": "t",
    "у": "y",
    "х": "x",
    "ѕ": "s",
    "і": "i",
    "ї": "i",
    "ј": "j",
    "ԁ": "d",
    "ɡ": "g",
    "һ": "h",
    "ӏ": "l",
    "ԛ": "q",
    "ԝ": "w",
    "ь": "b",
    "п": "n",
    "г": "r",
    "А": "A",
    "В": "B",
    "Е": "E",
    "К": "K",
    "М": "M",
    "Н": "H",
    "О": "O",
    "Р": "P",
    "С": "C",
    "Т": "T",
    "У": "Y",
    "Х": "X",
    "Ѕ": "S",
    "І": "I",
    "Ј": "J",
    "Ԁ": "D",
    "Ӏ": "I",
    "Ԛ": "Q",
    "Ԝ": "W",
    # Greek
    "α": "a",
    "β": "b",
    "ε": "e",
    "ι": "i",
    "κ": "k",
    "ν": "v",
    "ο": "o",
    "ρ": "p",
    "τ": "t",
    "υ": "u",
    "χ": "x",
    "γ": "y",
    "ω": "w",
    "Α": "A",
    "Β": "B",
    "Ε": "E",
    "Ζ": "Z",
    "Η": "H",
    "Ι": "I",
    "Κ": "K",
    "Μ": "M",
    "Ν": "N",
    "Ο": "O",
    "Ρ": "P",
    "Τ": "T",
    "Υ": "Y",
    "Χ": "X",
    # Latin look-alikes outside ASCII
    "ı": "i",
    "ȷ": "j",
    "ℓ": "l",
    "ꓲ": "I",
    "ꓳ": "O",
    "ꓴ": "U",
    "ꓢ": "S",
    "ꓐ": "B",
    "ꓓ": "D",
    "ɑ": "a",
    "ѵ": "v",
    "ʏ": "y",
    "ᴦ": "r",
}
_CONFUSABLE_CHAR = re.compile("[" + re.escape("".join(_CONFUSABLES)) + "]")
# Words that hold one. Anchored at a word start and lazy up to the first confusable letter, so a
# long word without one costs one linear pass (``\w*[...]\w*`` restarted at every position of it).
# Words are runs of letters: "НОМНЕДЕЛИ_EXCEL2003" is a Russian name and an English one, not one word.
_CONFUSABLE_WORD = re.compile(r"(?<![^\W\d_])[^\W\d_]*?[" + re.escape("".join(_CONFUSABLES)) + r"][^\W\d_]*")
_INVISIBLE = re.compile("[" + re.escape("".join(sorted(_ZERO_WIDTH | _BIDI))) + "]")
_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
# A digit or symbol standing for a letter: next to letters, inside or at the start of a word.
_NUMBER_UNIT = re.compile(
    r"\d++(?:st|nd|rd|th|am|pm|s|k|m|g|x|d|h|kb|mb|gb|tb|px|ms|min|mm|cm|km|kg|lb|hz|fps|v|w)", re.IGNORECASE
)
_LEET_HINT = re.compile(r"[A-Za-z][013457@$]|[013457@$][A-Za-z]")
_LEET_DENSE = 3  # leet words in one line that make it a leetspeak line
_LEET_ALONE = frozenset({"4", "1", "0"})  # "4" for "a", "1" for "I", "0" for "o" in a leetspeak line

_WORD = re.compile(r"\w+", re.UNICODE)
_LEET_TOKEN = re.compile(r"[\w@$]+")
_HEX_TOKEN = re.compile(r"(?:0x)?[0-9A-Fa-f]+")
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX = re.compile(r"(?<![0-9A-Za-z])(?:[0-9A-Fa-f]{2}[ :,]?){8,}(?![0-9A-Za-z])")
_BINARY = re.compile(r"(?<![01])(?:[01]{8}[ ,]?){4,}(?![01])")
_PERCENT = re.compile(r"(?:%[0-9A-Fa-f]{2}){4,}")
# What every match of the two above starts with, without their look-arounds: a search for it is a
# third of the cost, and most texts have none.
_HEX_GATE = re.compile(r"[0-9A-Fa-f]{2}[ :,]?[0-9A-Fa-f]{2}[ :,]?[0-9A-Fa-f]{2}[ :,]?[0-9A-Fa-f]{2}")
_BINARY_GATE = re.compile(r"[01]{8}")
_QUOTED = re.compile(r"'([^'\n]{8,})'|\"([^\"\n]{8,})\"")

# Frequent English words: rot13 text decodes to many of them, plain English already contains them.
_COMMON_WORDS = frozenset(
    """a about above after all also am an and any are as ask at be been before but by can could
    did do does for from get give has have he her here him his how i if ignore in instructions into
    is it its just know like me more my new no not now of on only or other our out password please
    previous prompt reveal rules say secret she should show so system tell than that the their them
    then there these they this to up us was we were what when where which who why will with would
    you your""".split()
)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A payload found in the text and its decoded form."""

    encoding: str  # base64 | hex | binary | rot13 | percent | unicode_tags | split
    start: int  # offsets into Normalized.text (unicode_tags: into the original)
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class Normalized:
    text: str
    original_length: int
    flags: frozenset[str] = frozenset()
    decoded: tuple[Decoded, ...] = ()
    leet: str | None = field(default=None)  # leetspeak-folded variant when it differs

    @property
    def truncated(self) -> bool:
        return "truncated" in self.flags

    def variants(self) -> list[str]:
        """Every text a detector should look at: the canonical text, decoded payloads, leet form."""
        out = [self.text]
        out.extend(d.text for d in self.decoded)
        if self.leet is not None:
            out.append(self.leet)
        return out


def normalize(text: str, *, max_chars: int = MAX_SCAN_CHARS, decode: bool = True) -> Normalized:
    """Canonicalise ``text`` for detection; never raises on any ``str``."""
    return _normalize(text, max_chars=max_chars, decode=decode, depth=0)


def _normalize(text: str, *, max_chars: int, decode: bool, depth: int) -> Normalized:
    flags: set[str] = set()
    original_length = len(text)
    if len(text) > max_chars:
        half = max_chars // 2
        text = text[:half] + "\n" + text[-half:]
        flags.add("truncated")
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
        flags.add("invalid_unicode")

    decoded: list[Decoded] = []
    hidden = "".join(chr(ord(c) - 0xE0000) for m in _TAGS.finditer(text) for c in m.group())
    if hidden.strip():
        flags.add("unicode_tags")
        decoded.append(Decoded("unicode_tags", 0, len(text), _CONTROL.sub("", hidden)[:MAX_DECODED_CHARS]))
    text = _TAGS.sub("", text)

    text, invisible = _strip_invisible(text)
    flags |= invisible

    nfkc = unicodedata.normalize("NFKC", text)
    if nfkc != text and sum(1 for a, b in zip(nfkc, text) if a != b and a.isascii() and a.isalnum()) >= 3:
        flags.add("compatibility_forms")  # fullwidth / mathematical letters spelling ASCII words
    text = _CONTROL.sub("", nfkc)

    text, folded = _fold_homoglyphs(text)
    if folded:
        flags.add("homoglyph")

    leet = _fold_leet(text)
    if decode and depth < MAX_DEPTH:
        for item in _find_payloads(text):
            if len(decoded) >= MAX_PAYLOADS:
                break
            inner = _normalize(item.text, max_chars=MAX_DECODED_CHARS, decode=True, depth=depth + 1)
            decoded.append(Decoded(item.encoding, item.start, item.end, inner.text))
            decoded.extend(inner.decoded[: max(0, MAX_PAYLOADS - len(decoded))])
            flags.add(item.encoding)
            flags |= inner.flags - {"truncated"}
    return Normalized(
        text=text,
        original_length=original_length,
        flags=frozenset(flags),
        decoded=tuple(decoded),
        leet=leet if leet != text else None,
    )


def _strip_invisible(text: str) -> tuple[str, set[str]]:
    flags: set[str] = set()
    if not _INVISIBLE.search(text) and not _VARIATION_SELECTORS.search(text):  # a C-speed scan: most texts stop here
        return text, flags
    out: list[str] = []
    n = len(text)
    for i, c in enumerate(text):
        if c in _BIDI:
            flags.add("bidi")
            continue
        if c in _ZERO_WIDTH:
            # A joiner between emoji is legitimate; inside a word it hides the word from filters.
            prev_alnum = i > 0 and text[i - 1].isalnum()
            next_alnum = i + 1 < n and text[i + 1].isalnum()
            if c != "\u200d" or (prev_alnum and next_alnum):
                if not (c == "\ufeff" and i == 0):
                    flags.add("zero_width")
            continue
        out.append(c)
    stripped = "".join(out)
    if len(_VARIATION_SELECTORS.findall(stripped)) > 8:
        flags.add("variation_selectors")  # many selectors carry hidden bytes, a few are emoji styling
    return _VARIATION_SELECTORS.sub("", stripped), flags


def _spoofs_ascii(word: str) -> bool:
    """Every letter is ASCII or a look-alike of one: the word may be an English word disguised.
    (A word mixing ASCII with a letter that has no look-alike, "aчто", is markup beside a real word.)"""
    return all(c.isascii() or c in _CONFUSABLES for c in word)


def _english_word(word: str) -> bool:
    """A word written wholly in look-alikes disguises an English word only if it folds to one
    ("ѕуѕтем" is "system"; "Справка", the help page's footer, is "Cnpabka")."""
    from intelligence.detectors.names import english_words  # the word list, loaded on first use

    return "".join(_CONFUSABLES.get(c, c) for c in word).lower() in english_words()


def _fold_homoglyphs(text: str) -> tuple[str, bool]:
    # Any non-ASCII character (a curly quote) used to send long prompts down the per-character
    # path below; only a confusable letter can change anything.
    if text.isascii() or not _CONFUSABLE_CHAR.search(text):
        return text, False
    latin = sum(1 for c in text if c.isascii() and c.isalpha())
    letters = sum(1 for c in text if c.isalpha()) or 1
    mostly_latin = latin / letters >= 0.6
    # A text that also has words no look-alike can spell ("Справка": "п" and "в" have none) is written
    # partly in that script, and its all-look-alike words ("СУММ") are words of it, not English ones
    # disguised.
    genuine_script = mostly_latin and any(not _spoofs_ascii(m.group()) for m in _CONFUSABLE_WORD.finditer(text))
    changed = False

    def fold(m: re.Match[str]) -> str:
        nonlocal changed
        word = m.group()
        if not _spoofs_ascii(word):
            return word  # a letter no look-alike table maps ("что"): a real word of that script
        has_ascii = any(c.isascii() for c in word)
        # Mixed-script words are the giveaway; an all-Cyrillic word in mostly-Latin text is one too.
        # (Short all-look-alike words are ordinary Russian or Greek: "с", "о", "к", "ОС" beside English terms.)
        if has_ascii or (mostly_latin and not genuine_script and len(word) >= 4 and _english_word(word)):
            changed = True
            return "".join(_CONFUSABLES.get(c, c) for c in word)
        return word

    return _CONFUSABLE_WORD.sub(fold, text), changed


def _fold_leet(text: str) -> str:
    if not _LEET_HINT.search(text):
        return text

    def strict(tok: str) -> str:
        letters = sum(1 for c in tok if c.isalpha())
        # Long tokens are identifiers, hashes or payloads, not words spelt in leetspeak.
        if letters < 2 or len(tok) > 24 or _HEX_TOKEN.fullmatch(tok) or _NUMBER_UNIT.fullmatch(tok) or not _LEET_HINT.search(tok):
            return tok
        return "".join(_LEET.get(c, c) for c in tok)

    def loose(tok: str) -> str:
        if len(tok) > 24 or not (tok in _LEET_ALONE or any(c.isalpha() for c in tok)):
            return tok
        return "".join(_LEET.get(c, c) for c in tok)

    # A line written in leetspeak also spells its short words so ("t0", "0r", "4r3"), and some of its
    # words look like hex ("c0d35") or ordinals ("4nd"), which the strict rule leaves alone in ordinary
    # text. Where a line already has several leet words, every word of it is folded: the result is one
    # more variant to scan, the original is scanned as well.
    # Only the lines that change make the variant: the rest is scanned as the canonical text already,
    # and a long document with one "md5" in it would otherwise be scanned twice whole.
    changed: list[str] = []
    for line in text.splitlines():
        if not _LEET_HINT.search(line):
            continue
        folded = _LEET_TOKEN.sub(lambda m: strict(m.group()), line)
        if sum(1 for a, b in zip(_LEET_TOKEN.findall(line), _LEET_TOKEN.findall(folded)) if a != b) >= _LEET_DENSE:
            folded = _LEET_TOKEN.sub(lambda m: loose(m.group()), line)
        if folded != line:
            changed.append(folded)
    return "\n".join(changed) if changed else text


def _find_payloads(text: str) -> list[Decoded]:
    found: list[Decoded] = []
    for m in _BASE64.finditer(text):
        if len(found) >= MAX_PAYLOADS:
            return found
        cand = m.group()
        if len(cand) > _MAX_CANDIDATE_CHARS or not _mixed_alnum(cand):
            continue
        plain = _decode_base64(cand)
        if plain is not None:
            found.append(Decoded("base64", m.start(), m.end(), plain))
    for m in _HEX.finditer(text) if _HEX_GATE.search(text) else ():
        if len(found) >= MAX_PAYLOADS:
            return found
        digits = re.sub(r"[ :,]", "", m.group())
        if len(digits) % 2 or len(digits) > _MAX_CANDIDATE_CHARS:
            continue
        plain = _printable(binascii.unhexlify(digits))
        if plain is not None:
            found.append(Decoded("hex", m.start(), m.end(), plain))
    for m in _BINARY.finditer(text) if _BINARY_GATE.search(text) else ():
        if len(found) >= MAX_PAYLOADS:
            return found
        bits = re.sub(r"[ ,]", "", m.group())
        if len(bits) > _MAX_CANDIDATE_CHARS:
            continue
        raw = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits) - len(bits) % 8, 8))
        plain = _printable(raw)
        if plain is not None:
            found.append(Decoded("binary", m.start(), m.end(), plain))
    for m in _PERCENT.finditer(text) if "%" in text else ():
        if len(found) >= MAX_PAYLOADS:
            return found
        plain = _printable(urllib.parse.unquote_to_bytes(m.group()[:_MAX_CANDIDATE_CHARS]))
        if plain is not None:
            found.append(Decoded("percent", m.start(), m.end(), plain))
    found.extend(_find_rot13(text)[: max(0, MAX_PAYLOADS - len(found))])
    found.extend(_find_split(text)[: max(0, MAX_PAYLOADS - len(found))])
    return found


# Payload splitting: a request cut into labelled quoted fragments ('Part 1 is "What are some recip"',
# 'B = "the secret"') that the model is asked to put back together. Each fragment is harmless; the
# reassembled text is scanned like a decoded payload. Cut points may fall inside a word or between
# words, so both joins are returned.
_FRAGMENT = re.compile(
    r"\b(?:(?:part|string|variable|segment|piece|fragment|chunk)\s*\d{0,2}|[a-z]_?\d{0,2})\s*(?:is|=|:)\s*"
    r"[\"'“‘]([^\"'“”‘’\n]{1,120})[\"'”’]",
    re.IGNORECASE,
)
_SPLIT_CANDIDATE = re.compile(r"(?:is|=|:)\s*[\"'“‘]")


def _find_split(text: str) -> list[Decoded]:
    if len(_SPLIT_CANDIDATE.findall(text[:_MAX_CANDIDATE_CHARS])) < 2:  # cheap gate: most prompts stop here
        return []
    frags = list(_FRAGMENT.finditer(text[:_MAX_CANDIDATE_CHARS]))[:16]
    if len(frags) < 2:
        return []
    parts = [m.group(1) for m in frags]
    start, end = frags[0].start(), frags[-1].end()
    glued = "".join(parts)[:MAX_DECODED_CHARS]
    spaced = " ".join(p.strip() for p in parts)[:MAX_DECODED_CHARS]
    out = [Decoded("split", start, end, spaced)]
    if glued != spaced:
        out.append(Decoded("split", start, end, glued))
    return out


def _mixed_alnum(s: str) -> bool:
    # Plain words and numbers are not base64 payloads; real payloads mix cases or digits.
    has_upper = any(c.isupper() for c in s)
    has_lower = any(c.islower() for c in s)
    has_digit = any(c.isdigit() for c in s)
    return (has_upper and has_lower) or (has_digit and (has_upper or has_lower)) or s.endswith("=")


def _decode_base64(cand: str) -> str | None:
    body = cand.rstrip("=")
    padded = body + "=" * (-len(body) % 4)
    for decoder in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decoder(padded)
        except (binascii.Error, ValueError):
            continue
        plain = _printable(raw)
        if plain is not None:
            return plain
    return None


def _printable(raw: bytes) -> str | None:
    """Decoded bytes count as a hidden text only if they read as text."""
    if len(raw) < 6:
        return None
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    s = s[:MAX_DECODED_CHARS]
    printable = sum(1 for c in s if c.isprintable() or c in "\n\t\r")
    letters = sum(1 for c in s if c.isalpha() or c == " ")
    if printable / len(s) < 0.95 or letters / len(s) < 0.5:
        return None
    return s


def _english_ratio(s: str) -> float:
    # Words of any script, so an accented word is one word, and of two letters or more: "a" and "i"
    # are rot13 for "n" and "v", common as variables and in other languages.
    words = [w for w in _LETTERS.findall(s.lower()) if len(w) > 1]
    if len(words) < 3:
        return 0.0
    return sum(1 for w in words if w in _COMMON_WORDS) / len(words)


def _find_rot13(text: str) -> list[Decoded]:
    # (start, end) of the text to decode, and the part of it judged: a run is judged alone, since
    # the lines around it may be a plain-English wrapper ("decode this and do what it says: ...").
    candidates: list[tuple[int, int, str]] = [(0, len(text), text)] if len(text) <= MAX_DECODED_CHARS else []
    for m in _QUOTED.finditer(text):
        g = 1 if m.group(1) is not None else 2
        candidates.append((m.start(g), m.end(g), m.group(g)))
    del candidates[MAX_PAYLOADS:]
    candidates.extend((start, end, text[a:b]) for start, end, a, b in _rot13_runs(text))
    out: list[Decoded] = []
    seen: set[tuple[int, int]] = set()
    for start, end, judged in candidates:
        if len(out) >= MAX_PAYLOADS:
            break
        if (start, end) in seen or _english_ratio(judged) >= 0.25:
            continue  # already reads as English (also true of a plain sentence mentioning "rot13")
        if _english_ratio(codecs.decode(judged, "rot13")) >= 0.3:
            seen.add((start, end))
            out.append(Decoded("rot13", start, end, codecs.decode(text[start:end], "rot13")))
    return out


# rot13 hidden inside ordinary text (a tool result, a document, a user turn with a preamble): the whole
# text reads as English or as another language, so the whole-text test above misses it. Words whose
# rot13 is a frequent English word ("gur", "naq", "lbh") and that are not one themselves mark such a
# run; the run's lines are decoded and, if they then read as English, scanned like any payload.
_ROT13_WORDS = frozenset(codecs.encode(w, "rot13") for w in _COMMON_WORDS) - _COMMON_WORDS
# The gate: rot13 of the most frequent short English words, between spaces. A substring test is a
# fast scan (a regex alternation over every word was 0.2 µs a character, more than the rest of normalisation).
_ROT13_GATE = tuple(
    f" {codecs.encode(w, 'rot13')} " for w in ("the", "and", "to", "of", "you", "is", "in", "your", "with", "for", "this", "that")
)
_LETTERS = re.compile(r"[^\W\d_]+")  # words of any script: "traducción" is one word, not "traducci" + "n"
_ROT13_MIN_HITS = 3  # rot13 words of two letters or more ("n" is "a", but also a variable or a word's end)
_ROT13_MIN_WORDS = 6
_ROT13_GAP = 24  # characters between two words (another script, a code block) that end a run
_ROT13_SPAN = 1_000  # characters decoded around a run at most, each side


def _rot13_runs(text: str) -> list[tuple[int, int, int, int]]:
    """(span start, span end, run start, run end) per run of rot13 words, the span being the run's
    lines (at most ``_ROT13_SPAN`` characters more each side); linear in the text."""
    text = text[:_MAX_CANDIDATE_CHARS]
    lowered = text.lower()
    if not any(w in lowered for w in _ROT13_GATE):  # cheap gate: most texts stop here
        return []
    # A maximum-sum run over the words (Kadane): +1 a rot13 word, -1 an English one, -0.25 any other;
    # a run ends where its sum would fall to zero or at a gap, and is kept up to its best point.
    runs: list[tuple[int, int]] = []
    score = best = 0.0
    hits = words = best_hits = best_words = 0
    run_start = best_end = -1
    prev_end = 0

    def close() -> None:
        if best_hits >= _ROT13_MIN_HITS and best_words >= _ROT13_MIN_WORDS and run_start >= 0:
            runs.append((run_start, best_end))

    for m in _LETTERS.finditer(text):
        word = m.group().lower()
        if m.start() - prev_end > _ROT13_GAP and score > 0:
            close()
            score, hits, words, run_start, best, best_hits, best_words = 0.0, 0, 0, -1, 0.0, 0, 0
        prev_end = m.end()
        if len(word) == 1:
            step = 0.0
        elif word in _ROT13_WORDS:
            step = 1.0
        elif word in _COMMON_WORDS:
            step = -1.0
        else:
            step = -0.25
        if score + step <= 0 and step != 0.0:
            if score > 0:
                close()
            score, hits, words, run_start, best, best_hits, best_words = 0.0, 0, 0, -1, 0.0, 0, 0
            continue
        if run_start < 0:
            if step == 0.0:
                continue
            run_start = m.start()
        score += step
        hits += step == 1.0
        words += 1
        if score >= best:
            best, best_end, best_hits, best_words = score, m.end(), hits, words
    if score > 0:
        close()
    spans: list[tuple[int, int, int, int]] = []
    for start, end in runs[:MAX_PAYLOADS]:
        line_start = text.rfind("\n", max(0, start - _ROT13_SPAN), start) + 1 or max(0, start - _ROT13_SPAN)
        line_end = text.find("\n", end, end + _ROT13_SPAN)
        if line_end < 0:
            line_end = min(len(text), end + _ROT13_SPAN)
        spans.append((max(line_start, start - _ROT13_SPAN), line_end, start, end))
    return spans
