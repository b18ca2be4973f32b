"""Import spaCy and Presidio without the deep-learning frameworks they would pull in.

spaCy's thinc imports torch when it is installed, and Presidio imports ``transformers.pipeline``
(which imports torch) for an NLP engine the gateway never uses. In the sidecar that cost about
two seconds of start-up and a few hundred MB of RSS (libtorch mapped, its thread pools started),
for nothing: the PII detector runs Presidio's pattern recognisers and our own name gazetteer.

``without_ml_frameworks()`` makes those imports fail with ImportError while spaCy and Presidio load
(both treat the frameworks as optional), then lets them be imported normally afterwards. A process
that already imported torch (a test run, the pattern worker) is left as it is.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

# torch and what imports it; the others are thinc's optional back-ends, absent here but cheap to list
BLOCKED = ("torch", "transformers", "tensorflow", "mxnet", "cupy")

_lock = threading.Lock()


@contextlib.contextmanager
def without_ml_frameworks() -> Iterator[None]:
    with _lock:
        blocked = [name for name in BLOCKED if name not in sys.modules]
        for name in blocked:
            sys.modules[name] = None  # type: ignore[assignment]  # "import torch" -> ImportError
        try:
            yield
        finally:
            for name in blocked:
                if sys.modules.get(name, 0) is None:
                    del sys.modules[name]
