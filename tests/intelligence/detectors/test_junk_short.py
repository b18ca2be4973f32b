"""The short-text path of the token-junk features equals the general sliding-window path."""

from __future__ import annotations

import random

import numpy as np

from intelligence.detectors import junk


def test_short_texts_get_the_same_features_as_the_window_path() -> None:
    rng = random.Random(7)
    vocab = "the quick brown fox T1055 mp3 GLSL/HLSL MinGW-w64 describing.!!! ##$$ zqxwvbn ++pt “quoted” 1,234 x".split()
    for _ in range(500):
        words = [rng.choice(vocab) for _ in range(rng.randint(1, junk.WINDOW))]
        masked = " ".join(words)
        distinct = {w: (0.0 if junk._CLEAN.match(w) else 1.0, junk._EDGE.sub("", w) or w) for w in set(words)}
        short = junk._short_features(words, distinct, masked)
        general, rest = junk._window_features(words, distinct, masked)
        assert np.allclose(short, general, atol=1e-6), (words, short, general)
        assert rest == 0.0
