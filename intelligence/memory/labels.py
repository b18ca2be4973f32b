"""Heuristic pattern labels: the words most of a pattern's prompts share.

Used until (and unless) the Claude integration writes a better one. Document frequency, not raw
counts, ranks the words, so one long prompt cannot name a whole pattern.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

MAX_WORDS = 3
_TOKEN = re.compile(r"[a-z0-9][a-z0-9_'+#-]*[a-z0-9+#]|[a-z]", re.IGNORECASE)

# Function words and chat filler: frequent in every pattern, so they name none.
STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are aren't as at be because been before being below
    between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each
    few for from further get got had hadn't has hasn't have haven't having he her here hers herself him himself
    his how i i'd i'll i'm i've if in into is isn't it it's its itself just know let let's like me might more
    most much must mustn't my myself need no nor not now of off on once one only or other ought our ours
    ourselves out over own please really same say shall shan't she should shouldn't so some such tell than thank
    thanks that that's the their theirs them themselves then there there's these they they'd they'll they're
    they've this those through to too under until up us very want was wasn't way we we'd we'll we're we've were
    weren't what what's when when's where where's which while who who's whom why why's will with won't would
    wouldn't yes yet you you'd you'll you're you've your yours yourself yourselves system tools user assistant
    hey hi hello ok okay right give make use using used help
    """.split()
)


def keywords(text: str) -> list[str]:
    """Content words of ``text`` in order of appearance, lower-cased, without repeats."""
    seen: dict[str, None] = {}
    for token in _TOKEN.findall(text.lower()):
        token = token.strip("'-")
        if len(token) < 3 or token in STOPWORDS or token.isdigit():
            continue
        seen.setdefault(token, None)
    return list(seen)


def heuristic_label(texts: Iterable[str | None], max_words: int = MAX_WORDS) -> str:
    """Up to ``max_words`` words shared by most texts (ties: earliest seen), joined by spaces."""
    doc_freq: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    for text in texts:
        if not text:
            continue
        for word in keywords(text):
            doc_freq[word] += 1
            first_seen.setdefault(word, len(first_seen))
    ranked = sorted(doc_freq, key=lambda w: (-doc_freq[w], first_seen[w]))
    return " ".join(ranked[:max_words])
