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
from . import heuristics, junk, textkind
from .classifier import CLASSIFIER_FILE, LinearClassifier
from .memory import SEED_MEMORY, AttackMemory, Embed, Neighbor, load_memory
from .normalize import MAX_SCAN_CHARS, Normalized, normalize

log = logging.getLogger("llmproxy.security.injection")

DEFAULT_THRESHOLD = 0.5
# Per-request CPU budget of ``scan`` (wall clock on the calling thread). Windows not reached in time
# are reported in ``InjectionVerdict.unscanned`` with ``incomplete=True``; the policy decides
# (``detection_incomplete``). Head and tail windows of every segment are scanned first.
DEFAULT_BUDGET_MS = 50.0
# Sliding windows over the whole text: rules, normalisation and decoding run per window.
WINDOW_CHARS = 4_000
WINDOW_OVERLAP = 400
MAX_EMBED_WINDOWS = 8
# Embedding cost grows with length; head and tail carry the attack (persona set-up, suffix).
EMBED_HEAD_CHARS = 600
EMBED_TAIL_CHARS = 400
# Classifier probability that flags on its own, per source class (see ``calibrate``); the shipped
# classifier carries its own calibrated values (classifier.yaml meta.alone_at).
CLASSIFIER_ALONE_AT = 0.9
# What the statistical layers (classifier, memory, token junk) may contribute on text they were not
# built for (non-English, code/logs/JSON, tool schemas): the tag band, never a block on their own.
UNSUPPORTED_CAP = 0.45
# A short prompt with no heuristic or context signal is not embedded: too short to carry a
# role-play jailbreak, and the embedding is most of the latency.
EMBED_MIN_WORDS = 16

# Canonical source kinds and their aliases.
SOURCE_ALIASES = {
    "user": "user",
    "human": "user",
    "prompt": "user",
    "system": "system",
    "developer": "system",
    "instructions": "system",
    "tool": "tool_result",
    "function": "tool_result",
    "tool_result": "tool_result",
    "function_call_output": "tool_result",
    "document": "document",
    "retrieved": "document",
    "rag": "document",
    "web": "document",
    "file": "document",
    "tool_definition": "tool_definition",
    "tool_call_arguments": "tool_call_arguments",
    "assistant": "assistant",
}
USER_SOURCES = frozenset({"user"})
SYSTEM_SOURCES = frozenset({"system"})
UNTRUSTED_SOURCES = frozenset({"tool_result", "document"})
# Written by the client application or the model: rules only, statistical layers capped.
SCHEMA_SOURCES = frozenset({"tool_definition", "tool_call_arguments"})
_SYSTEM_FAMILIES = frozenset({"instruction_override", "delimiter_injection", "evasion"})
# Read only in content the user did not write (a user asking for a tool call or an e-mail is ordinary).
_CONTENT_ONLY_FAMILIES = frozenset({"tool_directive"})
# Families that say "this content talks to the model" and are read in tool schemas too.
_SCHEMA_FAMILIES = frozenset(
    {
        "instruction_override",
        "delimiter_injection",
        "prompt_exfiltration",
        "indirect_injection",
        "mode_switch",
        "evasion",
        "tool_directive",
    }
)


def source_kind(source: str) -> str:
    s = source.lower()
    return SOURCE_ALIASES.get(s, "document" if s not in ("assistant", "model") else "assistant")


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


@dataclass(frozen=True, slots=True)
class Unscanned:
    """A part of the input that some layer did not look at, and why."""

    segment: int
    source: str
    start: int
    end: int
    reason: str  # budget | embedding_budget

    def to_dict(self) -> dict[str, Any]:
        return {"segment": self.segment, "source": self.source, "start": self.start, "end": self.end, "reason": self.reason}


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
    # The budget ran out (or input had to be cut): these parts were not scanned by every layer.
    incomplete: bool = False
    unscanned: tuple[Unscanned, ...] = ()
    scanned_chars: int = 0
    total_chars: int = 0
    budget_ms: float | None = None
    costs_ms: tuple[tuple[str, float], ...] = ()  # per layer: normalise, rules, junk, embed, classifier, memory, context

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
            "incomplete": self.incomplete,
            "unscanned": [u.to_dict() for u in self.unscanned],
            "scanned_chars": self.scanned_chars,
            "total_chars": self.total_chars,
            "budget_ms": self.budget_ms,
            "costs_ms": {k: round(v, 3) for k, v in self.costs_ms},
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


def _windows(n: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Overlapping [start, end) windows covering ``n`` characters; the last one ends at ``n``."""
    if n <= size:
        return [(0, n)]
    step = max(size - overlap, 1)
    out = [(s, s + size) for s in range(0, n - size, step)]
    out.append((n - size, n))
    return out


def _merge(parts: list[Unscanned]) -> list[Unscanned]:
    """Adjacent or overlapping unscanned ranges of one segment and reason, as one."""
    out: list[Unscanned] = []
    for u in sorted(parts, key=lambda x: (x.segment, x.reason, x.start)):
        last = out[-1] if out else None
        if last is not None and (last.segment, last.reason) == (u.segment, u.reason) and u.start <= last.end:
            out[-1] = Unscanned(last.segment, last.source, last.start, max(last.end, u.end), last.reason)
        else:
            out.append(u)
    return out


def _dedupe(layers: list[LayerScore]) -> list[LayerScore]:
    """The strongest score per (layer, segment): a long segment has many windows."""
    best: dict[tuple[str, int], LayerScore] = {}
    for x in layers:
        k = (x.layer, x.segment)
        if k not in best or x.score > best[k].score:
            best[k] = x
    return list(best.values())


@dataclass(slots=True)
class _Window:
    """One window of one segment and what each layer found in it."""

    segment: int
    kind: str
    start: int
    end: int
    norm: Normalized
    hits: list[heuristics.RuleHit]
    text_kind: textkind.TextKind
    feats: np.ndarray | None
    junk: float
    context: list[ctx.ContextHit] | None = None
    memory: float = 0.0
    memory_detail: str = ""
    classifier: float = 0.0
    probability: float | None = None
    _rules: float | None = None

    def __post_init__(self) -> None:
        if self.junk:
            self.hits.append(heuristics.RuleHit("adversarial_suffix", "adversarial_suffix", self.junk, "machine-made token junk"))

    @property
    def rules(self) -> float:
        if self._rules is None:
            self._rules = heuristics.combine(self.hits) if self.hits else 0.0
        return self._rules

    @property
    def words(self) -> int:
        # scripts without spaces (Chinese, Japanese, Thai): about one word per three characters
        return max(len(self.norm.text.split()), len(self.norm.text) // 6)

    @property
    def supported(self) -> bool:
        return self.text_kind.supported and self.kind not in SCHEMA_SOURCES

    def combine(self, layers: list[LayerScore], source: str) -> float:
        """This window's score, and its layers appended to ``layers``.

        Rules and context add up by noisy-or with the classifier; the memory (a near-duplicate test)
        stands on its own. On text the statistical layers were not built for (``supported``) they
        cannot lift the score past ``UNSUPPORTED_CAP``; the rules keep their full weight."""
        i = self.segment
        r = self.rules
        if self.hits:
            best = max(self.hits, key=lambda x: x.weight)
            more = f" (+{len(self.hits) - 1} more)" if len(self.hits) > 1 else ""
            layers.append(LayerScore("heuristic", r, i, source, f"{best.rule}: {best.excerpt!r}{more}"))
        c = 0.0
        if self.context:
            c = min(0.9, _noisy_or(x.score for x in self.context))
            layers.append(LayerScore("context", c, i, source, "; ".join(x.reason for x in self.context)))
        if self.probability is not None and self.classifier >= 0.05:
            note = "" if self.supported else f"; {self.text_kind.kind} text: capped at {UNSUPPORTED_CAP}"
            layers.append(
                LayerScore(
                    "classifier", self.classifier, i, source, f"embedding classifier probability {self.probability:.2f}{note}"
                )
            )
        if self.memory > 0:
            layers.append(LayerScore("memory", self.memory, i, source, self.memory_detail))
        s_rules = _noisy_or([r, c])
        s_all = max(_noisy_or([r, c, self.classifier]), self.memory)
        if self.supported:
            return s_all
        return max(s_rules, min(s_all, UNSUPPORTED_CAP))


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
        window_chars: int = WINDOW_CHARS,
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
        self.window_chars = window_chars
        self._cache: dict[str, np.ndarray] = {}
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        # What the text-only layers found in a window, by (source kind, window text): system prompts,
        # tool definitions and a conversation's history repeat on every request of a session.
        self._windows: dict[tuple[str, str], tuple[Normalized, tuple[heuristics.RuleHit, ...], Any, Any, float]] = {}

    # -- public -----------------------------------------------------------------------------
    def scan_text(self, text: str, source: str = "user", *, budget_ms: float | None = DEFAULT_BUDGET_MS) -> InjectionVerdict:
        return self.scan([Segment(source, text)], budget_ms=budget_ms)

    def scan(
        self, segments: Sequence[Segment | tuple[str, str]], *, budget_ms: float | None = DEFAULT_BUDGET_MS
    ) -> InjectionVerdict:
        """Score every segment over sliding windows within ``budget_ms`` (None: no budget).

        Order of work: the first and last window of every segment (the last user turn first), then
        the remaining windows in order, then the embedding layers on the windows that matter most.
        What the budget did not reach is listed in ``unscanned`` and the verdict is ``incomplete``."""
        t0 = time.perf_counter()
        deadline = None if budget_ms is None else t0 + max(budget_ms, 0.0) / 1000.0
        costs: dict[str, float] = {}
        segs = [s if isinstance(s, Segment) else Segment(str(s[0]), str(s[1])) for s in segments]
        kinds = [source_kind(s.source) for s in segs]
        system_texts = [s.text[: self.max_chars] for s, k in zip(segs, kinds) if k in SYSTEM_SOURCES]
        protected = ctx.protected_from(system_texts) if system_texts else None
        restricting = protected is not None and not protected.empty

        layers: list[LayerScore] = []
        rule_hits: list[tuple[int, heuristics.RuleHit]] = []
        flags: set[str] = set()
        unscanned: list[Unscanned] = []
        windows: list[_Window] = []
        total = sum(len(s.text) for s, k in zip(segs, kinds) if k != "assistant")
        covered: list[tuple[int, int, int]] = []  # (segment, start, end) of the windows scanned

        for i, w0, w1 in self._plan(segs, kinds):
            if deadline is not None and time.perf_counter() > deadline:
                unscanned.append(Unscanned(i, kinds[i], w0, w1, "budget"))
                continue
            win = self._scan_window(i, kinds[i], segs[i].text[w0:w1], w0, costs)
            covered.append((i, w0, w1))
            flags |= win.norm.flags
            rule_hits.extend((i, h) for h in win.hits)
            windows.append(win)

        # context: the system prompt's restrictions against the first window of each user/untrusted segment
        if restricting:
            assert protected is not None
            t = time.perf_counter()
            seen: set[int] = set()
            for win in windows:
                if win.kind in USER_SOURCES | UNTRUSTED_SOURCES and win.segment not in seen:
                    seen.add(win.segment)
                    win.context = ctx.score_against(protected, win.norm.text, hidden=_hidden_texts(win.norm))
            costs["context"] = costs.get("context", 0.0) + (time.perf_counter() - t) * 1000

        neighbors: list[Neighbor] = []
        embedded = False
        candidates = [
            w
            for w in windows
            if w.kind not in SYSTEM_SOURCES
            and w.rules < self.skip_embedding_above
            and (w.rules > 0 or restricting or w.words >= self.embed_min_words or w.kind in UNTRUSTED_SOURCES)
        ]
        if self.embed is not None and candidates and (self.memory is not None or self.classifier is not None):
            # the user's windows first (last turn first), then untrusted content; signal before none
            candidates.sort(key=lambda w: (w.kind not in USER_SOURCES, -(w.rules > 0), -w.segment, w.start))
            chosen, skipped = candidates[:MAX_EMBED_WINDOWS], candidates[MAX_EMBED_WINDOWS:]
            if deadline is not None and time.perf_counter() > deadline:
                chosen, skipped = [], candidates
            for w in skipped:
                if w.rules > 0 or w.kind in USER_SOURCES | UNTRUSTED_SOURCES:
                    unscanned.append(Unscanned(w.segment, w.kind, w.start, w.end, "embedding_budget"))
            if chosen:
                embedded = True
                self._embedding_layers(chosen, protected if restricting else None, costs, neighbors)

        per_segment: dict[int, float] = {}
        for win in windows:
            score = win.combine(layers, segs[win.segment].source)
            per_segment[win.segment] = max(per_segment.get(win.segment, 0.0), score)
        neighbors = sorted(neighbors, key=lambda n: -n.similarity)[:3]
        score = max(per_segment.values(), default=0.0)
        return InjectionVerdict(
            score=float(min(max(score, 0.0), 1.0)),
            threshold=self.threshold,
            layers=tuple(_dedupe(layers)),
            rule_hits=tuple(rule_hits),
            neighbors=tuple(neighbors),
            flags=frozenset(flags),
            embedded=embedded,
            elapsed_ms=(time.perf_counter() - t0) * 1000,
            incomplete=bool(unscanned),
            unscanned=tuple(_merge(unscanned)),
            scanned_chars=_coverage(covered),
            total_chars=total,
            budget_ms=budget_ms,
            costs_ms=tuple(sorted(costs.items())),
        )

    # -- internals --------------------------------------------------------------------------
    def _plan(self, segs: list[Segment], kinds: list[str]) -> list[tuple[int, int, int]]:
        """(segment, start, end) windows in the order they are scanned: heads and tails first."""
        first: list[tuple[int, int, int]] = []
        rest: list[tuple[int, int, int]] = []
        order = sorted(range(len(segs)), key=lambda i: (kinds[i] not in USER_SOURCES, kinds[i] not in UNTRUSTED_SOURCES, -i))
        for i in order:
            if kinds[i] == "assistant" or not segs[i].text:
                continue
            spans = _windows(len(segs[i].text), self.window_chars, WINDOW_OVERLAP)
            first.append((i, *spans[0]))
            if len(spans) > 1:
                first.append((i, *spans[-1]))
            rest.extend((i, *sp) for sp in spans[1:-1])
        return first + rest

    def _scan_window(self, i: int, kind: str, text: str, start: int, costs: dict[str, float]) -> _Window:
        known = self._windows.get((kind, text))
        if known is not None:
            norm, hits, tk, feats, junk_score = known
            return _Window(i, kind, start, start + len(text), norm, list(hits), tk, feats, junk_score)
        t = time.perf_counter()
        norm = normalize(text, max_chars=self.window_chars + 16)
        t1 = time.perf_counter()
        hits = heuristics.scan(norm)
        if kind in SYSTEM_SOURCES:
            hits = [h for h in hits if h.family in _SYSTEM_FAMILIES]
        elif kind in USER_SOURCES:
            hits = [h for h in hits if h.family not in _CONTENT_ONLY_FAMILIES]
        elif kind in SCHEMA_SOURCES:
            hits = [h for h in hits if h.family in _SCHEMA_FAMILIES]
        t2 = time.perf_counter()
        tk = textkind.classify(norm.text)
        feats, rest = junk.features_with_context(norm.text) if kind not in SYSTEM_SOURCES else (None, 0.0)
        junk_score = junk.junk_score(feats, rest) if feats is not None and kind in USER_SOURCES and tk.supported else 0.0
        t3 = time.perf_counter()
        costs["normalize"] = costs.get("normalize", 0.0) + (t1 - t) * 1000
        costs["rules"] = costs.get("rules", 0.0) + (t2 - t1) * 1000
        costs["junk"] = costs.get("junk", 0.0) + (t3 - t2) * 1000
        if len(self._windows) >= self._cache_size:
            self._windows.clear()  # bounded: a burst of new texts costs one rebuild, never unbounded memory
        self._windows[(kind, text)] = (norm, tuple(hits), tk, feats, junk_score)
        return _Window(i, kind, start, start + len(text), norm, list(hits), tk, feats, junk_score)

    def _embedding_layers(
        self, chosen: list[_Window], protected: ctx.Protected | None, costs: dict[str, float], neighbors: list[Neighbor]
    ) -> None:
        t = time.perf_counter()
        vectors = self._vectors([embed_input(w.norm.text) for w in chosen])
        costs["embed"] = costs.get("embed", 0.0) + (time.perf_counter() - t) * 1000
        if protected is not None and protected.sentences:
            t = time.perf_counter()
            topics = [x for x in (ctx.topic_text(s) for s in protected.sentences) if x]
            if topics:
                topic_vectors = self._vectors(topics)
                for w, v in zip(chosen, vectors):
                    if w.context is None:
                        continue
                    sim = ctx.max_similarity(topic_vectors, v)
                    sentences = ctx.user_sentences(w.norm.text) if self.scale.context_per_sentence else []
                    if sentences:
                        sim = max(sim, float((self._vectors(sentences) @ topic_vectors.T).max()))
                    w.context = ctx.score_against(
                        protected,
                        w.norm.text,
                        similarity=sim,
                        floor=self.scale.context_floor,
                        weak=self.scale.context_weak,
                        hidden=_hidden_texts(w.norm),
                        spelling=self._similarity,
                    )
            costs["context"] = costs.get("context", 0.0) + (time.perf_counter() - t) * 1000
        if self.memory is not None and len(self.memory):
            t = time.perf_counter()
            for w, near in zip(chosen, self.memory.nearest(vectors, k=3)):
                if near:
                    w.memory = memory_score(near[0].similarity, self.scale)
                    w.memory_detail = f"cos {near[0].similarity:.2f} to a known {near[0].family} attack"
                    neighbors.extend(near)
            costs["memory"] = costs.get("memory", 0.0) + (time.perf_counter() - t) * 1000
        if self.classifier is not None:
            t = time.perf_counter()
            feats = np.stack([w.feats if w.feats is not None else np.zeros(len(junk.FEATURE_NAMES), np.float32) for w in chosen])
            x = np.hstack([vectors, feats])
            if x.shape[1] == self.classifier.dim:
                probs = self.classifier.predict_proba(x)
                for w, p in zip(chosen, probs):
                    w.probability = float(p)
                    w.classifier = calibrate(float(p), self.alone_at(w.kind))
            costs["classifier"] = costs.get("classifier", 0.0) + (time.perf_counter() - t) * 1000

    def alone_at(self, kind: str) -> float:
        """The classifier probability that flags on its own for this source class."""
        if self.classifier is not None:
            per_source = self.classifier.meta.get("alone_at") or {}
            key = "user" if kind in USER_SOURCES else "untrusted"
            if key in per_source:
                return float(per_source[key])
        return self.classifier_alone_at

    def attach(
        self, embed: Embed, memory: AttackMemory | None, classifier: LinearClassifier | None, scale: SimilarityScale
    ) -> None:
        """Switch the embedding layers on in a running detector (after a background build).

        ``embed`` is set last: ``scan`` uses the layers only once it is there."""
        self.memory, self.classifier, self.scale = memory, classifier, scale
        self.embed = embed

    def _similarity(self, a: str, b: str) -> float:
        va, vb = self._vectors([a, b])
        return float(va @ vb)

    def _vectors(self, texts: list[str]) -> np.ndarray:
        """Embeddings with a small cache: system prompts and retrieved documents repeat."""
        keys = [hashlib.blake2b(t.encode("utf-8", "replace"), digest_size=16).hexdigest() for t in texts]
        found: dict[str, np.ndarray] = {}
        with self._cache_lock:
            for k in keys:
                v = self._cache.get(k)
                if v is not None:
                    found[k] = v
        missing = list({k: t for k, t in zip(keys, texts) if k not in found}.items())
        if missing:
            assert self.embed is not None
            fresh = self.embed([t for _, t in missing])
            with self._cache_lock:
                if len(self._cache) + len(missing) > self._cache_size:
                    self._cache.clear()
                for (k, _), v in zip(missing, fresh):
                    found[k] = self._cache[k] = np.asarray(v, dtype=np.float32)
        return np.stack([found[k] for k in keys])


def _coverage(windows: list[tuple[int, int, int]]) -> int:
    """Characters covered by the scanned windows, overlaps counted once."""
    total, seg, end = 0, -1, 0
    for i, w0, w1 in sorted(windows):
        if i != seg:
            seg, end = i, 0
        if w1 > end:
            total += w1 - max(w0, end)
            end = w1
    return total


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
