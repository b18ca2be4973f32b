"""A deadline for the PII scan, and a phone recogniser that keeps to it.

python-phonenumbers tries every candidate of a text once per region (Presidio asks eight), and a
failed candidate is searched again for inner matches: a request of digits and separators costs
tens of microseconds per candidate per region, so 10 KB of ``1 1 1 ...`` or of logged timestamps
costs a few hundred milliseconds and 1 MB minutes. The scan runs on the sidecar's event loop, so it
must stop at a deadline and say it stopped (``PiiScan.complete``), as the injection scan does.

The deadline is per thread (one scan per thread at a time: the detector holds a lock around the
analyzer) and checked before each phone candidate is parsed, which is where the time goes. The
other recognisers are single regular-expression passes over a bounded window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class OutOfTime(Exception):
    """The scan's deadline passed; raised inside a recogniser, caught by the PII detector."""


_local = threading.local()


@contextmanager
def deadline_set(deadline: float | None) -> Iterator[None]:
    """Within this block, :func:`check` raises :class:`OutOfTime` once ``time.perf_counter()`` passes
    ``deadline`` (None: no deadline)."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = previous


def check() -> None:
    deadline = getattr(_local, "deadline", None)
    if deadline is not None and time.perf_counter() > deadline:
        raise OutOfTime


def budgeted_phone_recognizer(base: Any) -> Any:
    """Presidio's ``PhoneRecognizer`` (passed in: Presidio is imported lazily) with its matcher
    checking the deadline before each candidate. Results are upstream's: same regions, leniency,
    score and de-duplication."""
    import phonenumbers
    from phonenumbers.phonenumberutil import NumberParseException

    class DeadlineMatcher(phonenumbers.PhoneNumberMatcher):
        # _extract_match is python-phonenumbers' per-candidate step (pinned in the lock file; the
        # unit test of the budget fails if a new version stops calling it).
        def _extract_match(self, candidate: str, offset: int) -> Any:
            check()
            return super()._extract_match(candidate, offset)

    class BudgetedPhoneRecognizer(base):
        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            results = []
            for region in self.supported_regions:
                check()
                for match in DeadlineMatcher(text, region, leniency=self.leniency):
                    try:
                        found = phonenumbers.region_code_for_number(phonenumbers.parse(match.raw_string))
                    except NumberParseException:
                        found = region
                    results.append(self._get_recognizer_result(match, text, found, nlp_artifacts))
            return base.remove_duplicates(results)

    BudgetedPhoneRecognizer.__name__ = BudgetedPhoneRecognizer.__qualname__ = "PhoneRecognizer"
    return BudgetedPhoneRecognizer


__all__ = ["OutOfTime", "budgeted_phone_recognizer", "check", "deadline_set"]
