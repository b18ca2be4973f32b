"""Layered prompt-injection / jailbreak scoring.

Layers, cheapest first:

1. heuristics (heuristics.py + junk.py): patterns over the normalised text and decoded payloads;
2. memory (memory.py): cosine similarity to known attacks;
3. classifier (classifier.py): logistic regression on the embedding and junk features;
   plus the system-prompt context layer (context.py).

The default detector embeds with a static distillation of all-MiniLM-L6-v2 (static_embed.py):
~0.1 ms a prompt instead of 15-60 ms, so all layers run inline and ``llmproxy eval security``
measures exactly what the sidecar runs. Cosine levels differ per embedding (``SimilarityScale``).

Input is a list of segments ``(source, text)``: the last user turn, system prompts, tool results,
retrieved documents. User and untrusted segments (tool / document / retrieved / function) get every
layer; system segments are only checked for planted overrides (an operator's system prompt
legitimately says "never apologise") and serve as context for the others.

The score is in [0, 1]: per segment, the strongest of (heuristics noisy-or context), memory and
classifier; overall the strongest segment. ``DEFAULT_THRESHOLD`` is the default policy's operating
point. When the heuristics are already sure (>= ``skip_embedding_above``) the embedding is skipped:
that is the fast path, and it is what keeps obvious attacks cheap. A short prompt (fewer than
``EMBED_MIN_WORDS`` words) with no heuristic or context signal is not embedded either.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import context as ctx
from . import heuristics, junk
from .classifier import CLASSIFIER_FILE, LinearClassifier
from .memory import SEED_MEMORY, AttackMemory, Embed, Neighbor, load_memory
from .normalize import MAX_SCAN_CHARS, Normalized, normalize

log = logging.getLogger("llmproxy.security.injection")

DEFAULT_THRESHOLD = 0.5
MAX_SEGMENTS = 32
MAX_EMBED_SEGMENTS = 4
# Embedding cost grows with length; head and tail carry the attack (persona set-up, suffix).
EMBED_HEAD_CHARS = 600
EMBED_TAIL_CHARS = 400
# Classifier probability that flags on its own (see ``calibrate``): chosen on the training data's
# cross-validation and the development files' held-out halves (docs/security.md).
CLASSIFIER_ALONE_AT = 0.9
# A short prompt with no heuristic or context signal is not embedded: too short to carry a
# role-play jailbreak, and the embedding is most of the latency.
EMBED_MIN_WORDS = 16
USER_SOURCES = frozenset({"user", "human", "prompt"})
SYSTEM_SOURCES = frozenset({"system", "developer", "instructions"})
UNTRUSTED_SOURCES = frozenset({"tool", "function", "document", "retrieved", "rag", "web", "file", "tool_result"})
_SYSTEM_FAMILIES = frozenset({"instruction_override", "delimiter_injection", "evasion"})


@dataclass(frozen=True, slots=True)
class Segment:
    source: str  # user | system | tool | document | retrieved | assistant ...
    text: str


@dataclass(frozen=True, slots=True)
class LayerScore:
    layer: str  # heuristic | context | memory | classifier
    score: float
    segment: int
    source: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "score": round(self.score, 3),
            "segment": self.segment,
            "source": self.source,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class InjectionVerdict:
    score: float
    threshold: float
    layers: tuple[LayerScore, ...] = ()
    rule_hits: tuple[tuple[int, heuristics.RuleHit], ...] = ()
    neighbors: tuple[Neighbor, ...] = ()
    flags: frozenset[str] = frozenset()
    embedded: bool = False
    elapsed_ms: float = 0.0

    @property
    def flagged(self) -> bool:
        return self.score >= self.threshold

    @property
    def fired(self) -> list[str]:
        """Layers that on their own reach the threshold."""
        return sorted({layer.layer for layer in self.layers if layer.score >= self.threshold})

    def explanation(self) -> str:
        if not self.layers:
            return "no signal"
        parts = []
        for layer in sorted(self.layers, key=lambda x: -x.score)[:4]:
            parts.append(f"{layer.layer}={layer.score:.2f} [{layer.source}] {layer.detail}")
        if self.neighbors:
            n = self.neighbors[0]
            parts.append(f"nearest known attack ({n.family}, cos {n.similarity:.2f}): {n.text[:80]!r}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 4),
            "threshold": self.threshold,
            "flagged": self.flagged,
            "fired": self.fired,
            "layers": [layer.to_dict() for layer in self.layers],
            "rules": [
                {"segment": i, "rule": h.rule, "family": h.family, "weight": h.weight, "excerpt": h.excerpt}
                for i, h in self.rule_hits
            ],
            "nearest": [n.to_dict() for n in self.neighbors],
            "flags": sorted(self.flags),
            "embedded": self.embedded,
            "elapsed_ms": round(self.elapsed_ms, 3),
        }


def calibrate(probability: float, alone_at: float) -> float:
    """Shift the classifier's log-odds so that ``alone_at`` maps to 0.5.

    The classifier alone flags only when it is this sure; below that it still adds to weaker
    heuristic evidence (role-play framing, "purely hypothetical") through the noisy-or.
    """
    p = min(max(probability, 1e-6), 1 - 1e-6)
    a = min(max(alone_at, 1e-6), 1 - 1e-6)
    z = np.log(p / (1 - p)) - np.log(a / (1 - a))
    return float(1.0 / (1.0 + np.exp(-z)))


@dataclass(frozen=True, slots=True)
class SimilarityScale:
    """Cosine levels that mean something for one embedding model (they differ between models:
    a bag of static token vectors puts unrelated texts closer than the transformer does)."""

    memory_start: float  # nearest known attack: counts from here (score 0.3) ...
    memory_flag: float  # ... and flags on its own from here (score 0.52)
    context_weak: float  # user turn vs a restricted topic: weak evidence (0.3) from here ...
    context_floor: float  # ... moderate (0.5+) from here
    # Compare each sentence of the user turn too (max over sentence x restricted topic). More pairs
    # are more chances, so the two levels above must be calibrated on that max, not per pair.
    context_per_sentence: bool = False


# all-MiniLM-L6-v2 (the transformer): measured on the development data (docs/security.md).
MINILM_SCALE = SimilarityScale(memory_start=0.7, memory_flag=0.8, context_weak=0.33, context_floor=0.40)
# The static distillation (static_embed.py): same false-positive levels, measured the same way.
# Context levels for max(whole turn, each sentence) vs each restricted topic: an unrelated benign
# text (CLINC150 test, held-out benign rows) paired with a random CyberSecEval system prompt reaches
# 0.51 0.14% of the time and 0.45 0.9% (whole turn alone at 0.50 / 0.44: 0.14% / 1.1%).
STATIC_SCALE = SimilarityScale(
    memory_start=0.88, memory_flag=0.92, context_weak=0.45, context_floor=0.51, context_per_sentence=True
)


def memory_score(similarity: float, scale: SimilarityScale = MINILM_SCALE) -> float:
    """Cosine similarity to the nearest known attack -> score. Near-duplicates only."""
    if similarity < scale.memory_start:
        return 0.0
    slope = 0.22 / (scale.memory_flag - scale.memory_start)
    return float(min(0.95, 0.3 + (similarity - scale.memory_start) * slope))


def embed_input(text: str) -> str:
    if len(text) <= EMBED_HEAD_CHARS + EMBED_TAIL_CHARS:
        return text
    return text[:EMBED_HEAD_CHARS] + " … " + text[-EMBED_TAIL_CHARS:]


class InjectionDetector:
    """Thread-safe after construction; build once per process (see ``default_injection_detector``)."""

    def __init__(
        self,
        *,
        embed: Embed | None = None,
        memory: AttackMemory | None = None,
        classifier: LinearClassifier | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        skip_embedding_above: float = 0.9,
        embed_min_words: int = EMBED_MIN_WORDS,
        classifier_alone_at: float = CLASSIFIER_ALONE_AT,
        scale: SimilarityScale = MINILM_SCALE,
        max_chars: int = MAX_SCAN_CHARS,
        cache_size: int = 2048,
    ) -> None:
        self.embed = embed
        self.memory = memory
        self.classifier = classifier
        self.threshold = threshold
        self.skip_embedding_above = skip_embedding_above
        self.embed_min_words = embed_min_words
        self.classifier_alone_at = classifier_alone_at
        self.scale = scale
        self.max_chars = max_chars
        self._cache: dict[str, np.ndarray] = {}
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    # -- public -----------------------------------------------------------------------------
    def scan_text(self, text: str, source: str = "user") -> InjectionVerdict:
        return self.scan([Segment(source, text)])

    def scan(self, segments: Sequence[Segment | tuple[str, str]]) -> InjectionVerdict:
        t0 = time.perf_counter()
        segs = [s if isinstance(s, Segment) else Segment(str(s[0]), str(s[1])) for s in segments][-MAX_SEGMENTS:]
        system_texts = [s.text for s in segs if s.source.lower() in SYSTEM_SOURCES]
        protected = ctx.protected_from(system_texts) if system_texts else None

        layers: list[LayerScore] = []
        rule_hits: list[tuple[int, heuristics.RuleHit]] = []
        flags: set[str] = set()
        per_segment: dict[int, float] = {}
        heuristic_scores: dict[int, float] = {}
        classifier_scores: dict[int, float] = {}
        context_hits: dict[int, list[ctx.ContextHit]] = {}
        to_embed: list[tuple[int, Normalized, np.ndarray]] = []

        for i, seg in enumerate(segs):
            src = seg.source.lower()
            if src in SYSTEM_SOURCES:
                norm = normalize(seg.text, max_chars=self.max_chars)
                hits = [h for h in heuristics.scan(norm) if h.family in _SYSTEM_FAMILIES]
                self._add_heuristic(i, src, hits, layers, rule_hits, per_segment)
                flags |= norm.flags
                continue
            if src not in USER_SOURCES and src not in UNTRUSTED_SOURCES:
                continue  # assistant turns are the model's own output
            norm = normalize(seg.text, max_chars=self.max_chars)
            flags |= norm.flags
            hits = heuristics.scan(norm)
            feats = junk.features(norm.text)
            js = junk.junk_score(feats)
            if js:
                hits.append(heuristics.RuleHit("adversarial_suffix", "adversarial_suffix", js, "machine-made token junk"))
            h = self._add_heuristic(i, src, hits, layers, rule_hits, per_segment)
            heuristic_scores[i] = h
            if protected is not None and not protected.empty:
                context_hits[i] = ctx.score_against(protected, norm.text, hidden=_hidden_texts(norm))
            needs_context = protected is not None and not protected.empty  # similarity to restricted topics
            if h < self.skip_embedding_above and (h > 0 or needs_context or _words(norm.text) >= self.embed_min_words):
                to_embed.append((i, norm, feats))

        neighbors: list[Neighbor] = []
        embedded = False
        if self.embed is not None and to_embed and (self.memory is not None or self.classifier is not None):
            to_embed = sorted(to_embed, key=lambda t: (segs[t[0]].source.lower() not in USER_SOURCES, -t[0]))[:MAX_EMBED_SEGMENTS]
            vectors = self._vectors([embed_input(n.text) for _, n, _ in to_embed])
            embedded = True
            if protected is not None and protected.sentences:
                topics = [t for t in (ctx.topic_text(x) for x in protected.sentences) if t]
                if topics:
                    topic_vectors = self._vectors(topics)
                    for (i, n, _), v in zip(to_embed, vectors):
                        sim = ctx.max_similarity(topic_vectors, v)
                        sentences = ctx.user_sentences(n.text) if self.scale.context_per_sentence else []
                        if sentences:
                            sim = max(sim, float((self._vectors(sentences) @ topic_vectors.T).max()))
                        context_hits.setdefault(i, [])
                        context_hits[i] = ctx.score_against(
                            protected,
                            n.text,
                            similarity=sim,
                            floor=self.scale.context_floor,
                            weak=self.scale.context_weak,
                            hidden=_hidden_texts(n),
                            spelling=self._similarity,
                        )
            if self.memory is not None and len(self.memory):
                for (i, _, _), near in zip(to_embed, self.memory.nearest(vectors, k=3)):
                    if not near:
                        continue
                    m = memory_score(near[0].similarity, self.scale)
                    if m > 0:
                        layers.append(
                            LayerScore(
                                "memory", m, i, segs[i].source, f"cos {near[0].similarity:.2f} to a known {near[0].family} attack"
                            )
                        )
                        per_segment[i] = max(per_segment.get(i, 0.0), m)
                    neighbors.extend(near)
            if self.classifier is not None:
                x = np.hstack([vectors, np.stack([f for _, _, f in to_embed])])
                if x.shape[1] == self.classifier.dim:
                    probs = self.classifier.predict_proba(x)
                    for (i, _, _), p in zip(to_embed, probs):
                        score = calibrate(float(p), self.classifier_alone_at)
                        if score >= 0.05:
                            layers.append(
                                LayerScore(
                                    "classifier", score, i, segs[i].source, f"embedding classifier probability {float(p):.2f}"
                                )
                            )
                        classifier_scores[i] = score

        # Heuristics, context and classifier are evidence about the same text: they add up (noisy-or).
        # The memory is a near-duplicate test and stands on its own.
        for i in set(context_hits) | set(classifier_scores):
            parts = [heuristic_scores.get(i, 0.0), classifier_scores.get(i, 0.0)]
            c_hits = context_hits.get(i) or []
            if c_hits:
                c = min(0.9, _noisy_or(x.score for x in c_hits))
                layers.append(LayerScore("context", c, i, segs[i].source, "; ".join(x.reason for x in c_hits)))
                parts.append(c)
            per_segment[i] = max(per_segment.get(i, 0.0), _noisy_or(parts))
        neighbors = sorted(neighbors, key=lambda n: -n.similarity)[:3]
        score = max(per_segment.values(), default=0.0)
        return InjectionVerdict(
            score=float(min(max(score, 0.0), 1.0)),
            threshold=self.threshold,
            layers=tuple(layers),
            rule_hits=tuple(rule_hits),
            neighbors=tuple(neighbors),
            flags=frozenset(flags),
            embedded=embedded,
            elapsed_ms=(time.perf_counter() - t0) * 1000,
        )

    def attach(
        self, embed: Embed, memory: AttackMemory | None, classifier: LinearClassifier | None, scale: SimilarityScale
    ) -> None:
        """Switch the embedding layers on in a running detector (after a background build).

        ``embed`` is set last: ``scan`` uses the layers only once it is there."""
        self.memory, self.classifier, self.scale = memory, classifier, scale
        self.embed = embed

    # -- internals --------------------------------------------------------------------------
    @staticmethod
    def _add_heuristic(
        i: int,
        src: str,
        hits: list[heuristics.RuleHit],
        layers: list[LayerScore],
        rule_hits: list[tuple[int, heuristics.RuleHit]],
        per_segment: dict[int, float],
    ) -> float:
        if not hits:
            per_segment.setdefault(i, 0.0)
            return 0.0
        h = heuristics.combine(hits)
        rule_hits.extend((i, x) for x in hits)
        best = max(hits, key=lambda x: x.weight)
        layers.append(
            LayerScore(
                "heuristic", h, i, src, f"{best.rule}: {best.excerpt!r}" + (f" (+{len(hits) - 1} more)" if len(hits) > 1 else "")
            )
        )
        per_segment[i] = max(per_segment.get(i, 0.0), h)
        return h

    def _similarity(self, a: str, b: str) -> float:
        va, vb = self._vectors([a, b])
        return float(va @ vb)

    def _vectors(self, texts: list[str]) -> np.ndarray:
        """Embeddings with a small cache: system prompts and retrieved documents repeat."""
        keys = [hashlib.blake2b(t.encode("utf-8", "replace"), digest_size=16).hexdigest() for t in texts]
        with self._cache_lock:
            missing = [(k, t) for k, t in zip(keys, texts) if k not in self._cache]
        if missing:
            assert self.embed is not None
            fresh = self.embed([t for _, t in missing])
            with self._cache_lock:
                if len(self._cache) + len(missing) > self._cache_size:
                    self._cache.clear()
                for (k, _), v in zip(missing, fresh):
                    self._cache[k] = np.asarray(v, dtype=np.float32)
        with self._cache_lock:
            return np.stack([self._cache[k] for k in keys])


def _hidden_texts(norm: Normalized) -> list[str]:
    """What a segment says in other forms: decoded payloads and reassembled split requests."""
    return [d.text for d in norm.decoded]


def _words(text: str) -> int:
    return len(text.split())


def _noisy_or(scores: Any) -> float:
    miss = 1.0
    for s in scores:
        miss *= 1.0 - float(s)
    return 1.0 - miss


def shared_embed() -> Embed:
    """The process-wide transformer embedder (intelligence.embeddings), imported only when used.

    Not what the default detector uses inline (see ``static_embed``); kept for experiments and for
    a detector built around the transformer on purpose."""
    from intelligence.embeddings import shared_embedder

    embedder = shared_embedder()
    return embedder.encode


def static_embed() -> Embed:
    """The static distillation of the same model: ~0.1 ms a prompt, what the default detector uses."""
    from .static_embed import shared_static_embedder

    return shared_static_embedder().encode


_default: InjectionDetector | None = None
_default_lock = threading.Lock()


def _shipped_layers(fn: Embed) -> tuple[AttackMemory | None, LinearClassifier | None]:
    from .static_embed import STATIC_MODEL

    memory = load_memory(SEED_MEMORY, fn, model=STATIC_MODEL) if SEED_MEMORY.exists() else None
    classifier = LinearClassifier.load(CLASSIFIER_FILE) if CLASSIFIER_FILE.exists() else None
    return memory, classifier


def default_injection_detector(
    embed: Embed | Callable[[], Embed] | None = static_embed, *, with_embeddings: bool = True, background: bool = False
) -> InjectionDetector:
    """The detector the default policy uses, inline in the sidecar and in ``llmproxy eval security``:
    heuristics, context, and the memory and classifier layers on the static embedding (shipped
    memory seed and classifier, trained on that embedding by ``python -m intelligence.detectors.train``).

    The first call loads the static table, or builds it from the bundled model when it is not
    cached yet (static_embed.py; minutes on a small machine). ``background=True`` (the sidecar)
    returns at once when the table must be built: the detector runs heuristics and context only
    until a background thread has built it, then the embedding layers switch on.
    ``with_embeddings=False`` gives the heuristics-and-context-only detector (no table).
    """
    global _default
    if not with_embeddings:
        return InjectionDetector()
    with _default_lock:
        if _default is not None:
            return _default
        if embed is static_embed and background:
            from .static_embed import static_table_ready

            if not static_table_ready():
                detector = InjectionDetector(scale=STATIC_SCALE)
                _default = detector

                def build() -> None:
                    try:
                        fn = static_embed()
                        memory, classifier = _shipped_layers(fn)
                        detector.attach(fn, memory, classifier, STATIC_SCALE)
                        log.info("injection detector: embedding layers on")
                    except Exception:  # the detector keeps working on heuristics and context
                        log.exception("injection detector: could not build the static embedding; heuristics and context only")

                threading.Thread(target=build, name="static-embedding-build", daemon=True).start()
                return detector
        fn: Embed | None = embed() if embed is static_embed else embed  # type: ignore[assignment,operator]
        memory, classifier = _shipped_layers(fn) if fn is not None else (None, None)
        _default = InjectionDetector(embed=fn, memory=memory, classifier=classifier, scale=STATIC_SCALE)
        return _default
