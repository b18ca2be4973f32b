"""Builds the compact name gazetteer that ``names.py`` loads (run by a developer, not at start-up).

Sources, both from PyPI, both needed only to rebuild (not runtime dependencies):

- ``names-dataset==3.3.1`` (MIT): first and last names with a popularity rank per country (105
  countries). Loaded whole it takes ~11 s and ~1.9 GB of RAM, so only names ranked within the top
  ``MAX_RANK`` of at least one country are kept, with that best rank.
- ``english-words==2.0.2`` (MIT; the word list is Webster's 2nd International, public domain):
  lower-case English words. A capitalised token that is an ordinary English word ("Will", "May",
  "Apple", "Lovely") is not evidence of a name, *unless* it is a common name in an English-speaking
  country (rank <= ``STRONG_NAME_RANK`` there: "Mark", "John", "Naomi", "Brown"): Webster's list
  holds many names in lower case ("naomi", "jonas"), so each word is tagged with the role (first /
  last name) in which it is such a common name, and counts as a name only in that role ("Mark"
  as a first name, "Brown" as a surname, "Best" never). ``names.py`` adds spaCy's English stop words ("will", "may") and place/organisation words
  ("street", "services") on top.

Faker's name lists are deliberately not used: the evaluation file (presidio-research synth v2) was
generated with Faker, and a gazetteer built from them would inflate recall.

    python -m intelligence.detectors.names_build --names-dataset DIR --english-words DIR

DIR is the installed package directory (``site-packages/names_dataset``, ``.../english_words``).
"""

from __future__ import annotations

import argparse
import gzip
import pickle
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
FIRST_NAMES_FILE = DATA_DIR / "person_first_names.tsv.gz"
LAST_NAMES_FILE = DATA_DIR / "person_last_names.tsv.gz"
COMMON_WORDS_FILE = DATA_DIR / "english_common_words.txt.gz"
MAX_RANK = 2000
STRONG_NAME_RANK = 1000
ENGLISH_COUNTRIES = ("US", "GB", "CA", "AU", "IE", "NZ")


def _is_name_shaped(name: str) -> bool:
    if len(name) < 2 or not name[0].isupper():
        return False
    return all(ch.isalpha() or ch in "'-" for ch in name) and any(ch.islower() for ch in name)


def _best_ranks(table: dict[str, dict]) -> dict[str, int]:
    kept: dict[str, int] = {}
    for name, info in table.items():
        ranks = [r for r in (info.get("rank") or {}).values() if r is not None]
        if ranks and min(ranks) <= MAX_RANK and _is_name_shaped(name):
            kept[name] = min(ranks)
    return kept


def _strong_names(table: dict[str, dict]) -> set[str]:
    strong = set()
    for name, info in table.items():
        ranks = info.get("rank") or {}
        if any((ranks.get(c) or MAX_RANK + 1) <= STRONG_NAME_RANK for c in ENGLISH_COUNTRIES):
            strong.add(name.lower())
    return strong


def _write_ranked(path: Path, ranked: dict[str, int]) -> None:
    lines = [f"{name}\t{rank}" for name, rank in sorted(ranked.items())]
    # mtime=0 keeps the file byte-identical across rebuilds of the same inputs.
    with gzip.GzipFile(path, "wb", mtime=0) as fh:
        fh.write(("\n".join(lines) + "\n").encode("utf-8"))


def build(names_dataset_dir: Path, english_words_dir: Path) -> dict[str, int]:
    first = pickle.load(gzip.open(names_dataset_dir / "v3" / "first_names.pkl.gz"))
    last = pickle.load(gzip.open(names_dataset_dir / "v3" / "last_names.pkl.gz"))
    words: set[str] = pickle.load(open(english_words_dir / "data" / "web2_alpha_lower.pickle", "rb"))
    first_ranked, last_ranked = _best_ranks(first), _best_ranks(last)
    strong_first, strong_last = _strong_names(first), _strong_names(last)
    # Each word is tagged with the role in which it is also a common name: "mark\tF", "brown\tL".
    common = []
    for w in sorted(w for w in words if len(w) >= 2):
        roles = ("F" if w in strong_first else "") + ("L" if w in strong_last else "")
        common.append(f"{w}\t{roles}" if roles else w)
    DATA_DIR.mkdir(exist_ok=True)
    _write_ranked(FIRST_NAMES_FILE, first_ranked)
    _write_ranked(LAST_NAMES_FILE, last_ranked)
    with gzip.GzipFile(COMMON_WORDS_FILE, "wb", mtime=0) as fh:
        fh.write(("\n".join(common) + "\n").encode("utf-8"))
    return {"first_names": len(first_ranked), "last_names": len(last_ranked), "common_words": len(common)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--names-dataset", type=Path, required=True, help="the installed names_dataset package dir")
    parser.add_argument("--english-words", type=Path, required=True, help="the installed english_words package dir")
    args = parser.parse_args()
    print(build(args.names_dataset, args.english_words))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
