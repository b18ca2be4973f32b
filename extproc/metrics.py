"""The gateway's Prometheus metrics, defined in one place.

Every sidecar metric is declared here, with a small function to observe it; the request-log recorder's
gauges and counters (``intelligence/store/metrics.py``: the persistence side may not import the sidecar)
are re-exported so that this module names every ``llmproxy_*`` series the Grafana dashboard
(deploy/grafana/llmproxy.json) queries. Envoy's own statistics come from its admin ``/stats/prometheus``.

Hot-path rules: one observation is a few dictionary look-ups and lock-free-ish increments, nothing reads
the database or the network, and every label has a bounded set of values. Models in particular are
capped: the names in the price table (intelligence/prices.yaml), then the first
:data:`MAX_EXTRA_MODELS` other names this process sees, then ``other``.

The metrics are served by :func:`start_metrics_server` (loopback by default): set
``LLMPROXY_METRICS_PORT`` and the entrypoint calls it with :func:`metrics_address_from_env`.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

# The recorder's metrics are defined beside the recorder (the persistence side may not import the
# sidecar); they are part of this module's public set all the same.
from intelligence.store import metrics as _recorder

RECORDER_QUEUE_DEPTH = _recorder.QUEUE_DEPTH
RECORDER_SPOOL_DEPTH = _recorder.SPOOL_DEPTH
RECORDER_DB_OK = _recorder.DB_OK
RECORDER_WRITTEN = _recorder.WRITTEN
RECORDER_SPOOLED = _recorder.SPOOLED
RECORDER_REPLAYED = _recorder.REPLAYED
RECORDER_REJECTED = _recorder.REJECTED
RECORDER_DROPPED = _recorder.DROPPED

# ------------------------------------------------------------------------------------------ labels
PROVIDERS = frozenset({"openai", "anthropic", "openrouter", "ollama"})
PHASES = ("request_headers", "request_body", "response_headers", "response_body")
# The pipeline's stages (extproc.stages.default_stages) and the background parts that contain failures.
STAGES = frozenset(
    {
        *PHASES, "access", "admission", "feedback", "guard", "claude_verdict", "enhance", "tool_names", "credentials", "record",
        "restore", "policy", "recorder", "audit", "events", "claude_gate", "webhook", "stream",
    }
)  # fmt: skip
FAILURE_MODES = frozenset({"exception", "timeout", "fail_open", "fail_closed", "cancelled", "rejected"})
DETECTORS = ("pii", "secrets", "injection", "flags")
ACTIONS = ("block", "redact", "route", "cap", "rule", "none")
# intelligence/claude/models.py OUTCOMES (claude_calls.outcome), plus local_only (no key configured)
CLAUDE_OUTCOMES = frozenset(
    {"ok", "error", "parse_error", "timeout", "overloaded", "rate_limited", "budget_exhausted", "local_only"}
)
TOKEN_KINDS = ("input", "output", "cached", "reasoning")
MAX_EXTRA_MODELS = 32
MAX_EXPERIMENTS = 20
MAX_KIND_VALUES = 64  # detector kinds (EMAIL_ADDRESS, AWS_ACCESS_KEY, ...) per detector
OTHER = "other"
NONE = "none"

# ----------------------------------------------------------------------------------------- buckets
# End-to-end and upstream latencies: LLM calls run from tens of milliseconds to minutes.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
# Time the sidecar spends on one ext_proc message: microseconds to a few milliseconds.
PHASE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

# --------------------------------------------------------------------------------------- the metrics
REQUESTS = Counter(
    "llmproxy_requests",
    "Exchanges finished, by provider, model, status class and policy action",
    ["provider", "model", "status", "action"],
)
REQUEST_DURATION = Histogram(
    "llmproxy_request_duration_seconds",
    "Exchange duration as the sidecar saw it (request headers to end of response)",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_DURATION = Histogram(
    "llmproxy_upstream_duration_seconds", "Time the provider took (Envoy's upstream time)", ["provider"], buckets=LATENCY_BUCKETS
)
TTFT = Histogram(
    "llmproxy_time_to_first_token_seconds",
    "Time to the first streamed response byte (streams only)",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
)
PHASE_DURATION = Histogram(
    "llmproxy_sidecar_phase_seconds", "Time the sidecar spent answering one ext_proc message", ["phase"], buckets=PHASE_BUCKETS
)
TOKENS = Counter("llmproxy_tokens", "Tokens reported by the providers", ["provider", "model", "kind"])
COST = Counter("llmproxy_cost_usd", "Estimated spend in USD (intelligence/prices.yaml)", ["provider", "model"])
DETECTOR_HITS = Counter(
    "llmproxy_detector_hits", "Detector findings in requests and responses", ["detector", "kind", "direction"]
)
EXPERIMENT_EXPOSURES = Counter("llmproxy_experiment_exposures", "Exchanges assigned to an experiment arm", ["experiment", "arm"])
STAGE_ERRORS = Counter("llmproxy_stage_errors", "Failures contained by a processing stage", ["stage", "failure_mode"])
BACKGROUND_QUEUE_DEPTH = Gauge(
    "llmproxy_background_queue_depth", "Items waiting in an in-process background queue (audit, events, ...)", ["queue"]
)
EVENT_LOOP_LAG = Gauge("llmproxy_event_loop_lag_seconds", "How late the sidecar's event loop runs (smoothed; extproc.overload)")
SHEDDING = Gauge("llmproxy_shedding", "1 while the sidecar refuses every new request because its event loop is behind")
SHED = Counter(
    "llmproxy_shed_requests", "Requests refused with 503 because the sidecar was overloaded", ["reason"]
)  # reason: waited (the request queued past the threshold) | loop_lag (the event loop stays behind)
CLAUDE_CALLS = Counter("llmproxy_claude_calls", "Calls to Claude, by purpose and outcome", ["purpose", "outcome"])
CLAUDE_COST = Counter("llmproxy_claude_cost_usd", "Spend on Claude in USD", ["purpose"])
CLAUDE_TOKENS = Counter("llmproxy_claude_tokens", "Tokens spent on Claude", ["purpose", "kind"])
CLAUDE_DURATION = Histogram(
    "llmproxy_claude_call_duration_seconds", "Duration of one Claude call", ["purpose"], buckets=LATENCY_BUCKETS
)

# claude_calls.purpose values: intelligence/enhance/candidates.py, intelligence/memory/claude_labels.py,
# intelligence/anomaly/judge.py, extproc/claude_gate.py
_PURPOSES = frozenset({"enhancement", "pattern_label", "anomaly_verdict", "inline_verdict"})


_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, cached: label values are bounded, and the lookup is the hot part."""
    key = (id(metric), *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


# ---------------------------------------------------------------------------------- bounded labels
class _BoundedLabels:
    """Admits known values, then up to ``extra`` others in first-seen order, then ``other``."""

    def __init__(self, extra: int, known: Callable[[], Iterable[str]] | None = None):
        self._extra = extra
        self._known_loader = known
        self._known: frozenset[str] | None = None
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def _known_set(self) -> frozenset[str]:
        if self._known is None:
            try:
                self._known = frozenset(self._known_loader()) if self._known_loader else frozenset()
            except Exception:  # noqa: BLE001 - a broken price table must not break metrics
                self._known = frozenset()
        return self._known

    def __call__(self, value: str | None) -> str:
        if not value:
            return NONE
        if value in self._seen or value in self._known_set():
            return value
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self._extra:
                self._seen.add(value)
                return value
        return OTHER

    def reset(self) -> None:  # tests
        with self._lock:
            self._seen.clear()


def _price_table_models() -> Iterable[str]:
    from intelligence.pricing import load_prices

    return (p.model for p in load_prices().models())


@functools.lru_cache(maxsize=4096)  # clients name models freely: bounded memory, a dict hit for the usual few
def _canonical(model: str) -> str:
    from intelligence.pricing import canonical_model

    return canonical_model(model)


_models = _BoundedLabels(MAX_EXTRA_MODELS, _price_table_models)
_experiments = _BoundedLabels(MAX_EXPERIMENTS)
_kinds: dict[str, _BoundedLabels] = {d: _BoundedLabels(MAX_KIND_VALUES) for d in DETECTORS}


def model_label(model: str | None) -> str:
    """The model as a label value: canonical name (dates and vendor prefix stripped), capped."""
    if not model:
        return NONE
    try:
        name = _canonical(model)
    except Exception:  # noqa: BLE001 - an odd name is used as it is
        name = model
    return _models(name[:100])


def provider_label(provider: str | None) -> str:
    if not provider:
        return NONE
    return provider if provider in PROVIDERS else OTHER


def status_label(status: int | None) -> str:
    """``2xx`` .. ``5xx``, with 429 on its own (rate limits matter), ``none`` without a status."""
    if status is None:
        return NONE
    if status == 429:
        return "429"
    if 100 <= status < 600:
        return f"{status // 100}xx"
    return OTHER


def policy_action(flags: Mapping[str, Any]) -> str:
    """The strongest thing the policy did to an exchange, from the record's ``flags``."""
    policy = flags.get("policy") or {}
    response = flags.get("response_policy") or {}
    if "block" in policy or (isinstance(response, Mapping) and "block" in response):
        return "block"
    if "redact" in policy or flags.get("redacted_strings") or (isinstance(response, Mapping) and "redact" in response):
        return "redact"
    if "route" in policy or "model" in policy:
        return "route"
    if "cap_max_tokens" in policy:
        return "cap"
    if policy.get("fired"):
        return "rule"
    return NONE


# ---------------------------------------------------------------------------------- observations
def observe_exchange(record: Any) -> None:
    """Everything one finished exchange contributes (an :class:`intelligence.records.ExchangeRecord`).

    Call it once per record, where the record is handed to the recorder. Never raises.
    """
    try:
        _observe_exchange(record)
    except Exception:  # noqa: BLE001 - metrics must never break the request path
        STAGE_ERRORS.labels("recorder", "exception").inc()


def _observe_exchange(r: Any) -> None:
    provider = provider_label(r.provider)
    model = model_label(r.model)
    flags = r.flags or {}
    _child(REQUESTS, provider, model, status_label(r.status), policy_action(flags)).inc()
    if r.latency_ms is not None:
        _child(REQUEST_DURATION, provider, model).observe(r.latency_ms / 1000.0)
    if r.upstream_ms is not None:
        _child(UPSTREAM_DURATION, provider).observe(r.upstream_ms / 1000.0)
    if r.streamed and r.ttft_ms is not None:
        _child(TTFT, provider, model).observe(r.ttft_ms / 1000.0)
    usage = r.usage
    for kind, value in (
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cached", usage.cached_tokens),
        ("reasoning", usage.reasoning_tokens),
    ):
        if value:
            _child(TOKENS, provider, model, kind).inc(value)
    cost = exchange_cost(r)
    if cost:
        _child(COST, provider, model).inc(cost)
    detections = flags.get("detections")
    if isinstance(detections, Mapping):
        observe_detections(detections, direction="request")
    response = flags.get("response_policy")
    if isinstance(response, Mapping) and isinstance(response.get("detections"), Mapping):
        observe_detections(response["detections"], direction="response")
    enhancement = flags.get("enhancement")
    if isinstance(enhancement, Mapping) and enhancement.get("experiment") is not None:
        observe_experiment(enhancement.get("experiment"), enhancement.get("arm"))


def exchange_cost(r: Any) -> float | None:
    """USD for one record from the price table; None for an unknown model or no usage."""
    u = r.usage
    if not (u.input_tokens or u.output_tokens):
        return None
    from intelligence.pricing import load_prices

    return _prices(load_prices).cost(
        r.model,
        r.api,
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cached_tokens=u.cached_tokens,
        reasoning_tokens=u.reasoning_tokens,
    )


_price_cache: list[Any] = []


def _prices(loader: Callable[[], Any]) -> Any:
    if not _price_cache:
        _price_cache.append(loader())
    return _price_cache[0]


def observe_detections(detections: Mapping[str, Any], *, direction: str = "request") -> None:
    """Detector findings in the shape of ``Detections.to_dict()``: pii/secrets kind counts, injection, flags."""
    direction = direction if direction in ("request", "response") else OTHER
    for detector in ("pii", "secrets"):
        for kind, n in (detections.get(detector) or {}).items():
            if n:
                _child(DETECTOR_HITS, detector, _kinds[detector](str(kind)), direction).inc(n)
    score = detections.get("injection_score")
    if score is not None and score >= _injection_threshold():
        _child(DETECTOR_HITS, "injection", _kinds["injection"](detections.get("injection_layer") or NONE), direction).inc()
    for flag in detections.get("flags") or ():
        _child(DETECTOR_HITS, "flags", _kinds["flags"](str(flag)), direction).inc()


def _injection_threshold() -> float:
    try:
        from intelligence.detectors.injection import DEFAULT_THRESHOLD
    except ImportError:  # pragma: no cover - detector package absent
        return 0.5
    return DEFAULT_THRESHOLD


def observe_experiment(experiment: Any, arm: Any) -> None:
    arm_label = str(arm) if arm in ("control", "variant", "active") else (OTHER if arm else NONE)
    _child(EXPERIMENT_EXPOSURES, _experiments(str(experiment)), arm_label).inc()


def observe_phase(phase: str, seconds: float) -> None:
    """Time the sidecar spent on one ext_proc message of ``phase`` (see :data:`PHASES`)."""
    _child(PHASE_DURATION, phase if phase in PHASES else OTHER).observe(seconds)


def observe_stage_error(stage: str, failure_mode: str = "exception") -> None:
    """A failure a stage contained (a phase passed through, a fail-open/closed decision, a write lost...)."""
    _child(STAGE_ERRORS, stage if stage in STAGES else OTHER, failure_mode if failure_mode in FAILURE_MODES else OTHER).inc()


def observe_claude_call(
    purpose: str,
    outcome: str,
    *,
    cost_usd: float | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    seconds: float | None = None,
) -> None:
    """One Claude call (intelligence/claude or the sidecar's claude_verdict gate)."""
    purpose = purpose if purpose in _PURPOSES else OTHER
    _child(CLAUDE_CALLS, purpose, outcome if outcome in CLAUDE_OUTCOMES else OTHER).inc()
    if cost_usd:
        _child(CLAUDE_COST, purpose).inc(cost_usd)
    if input_tokens:
        _child(CLAUDE_TOKENS, purpose, "input").inc(input_tokens)
    if output_tokens:
        _child(CLAUDE_TOKENS, purpose, "output").inc(output_tokens)
    if seconds is not None:
        _child(CLAUDE_DURATION, purpose).observe(seconds)


def track_queue(name: str, depth: Callable[[], float]) -> None:
    """Report a background queue's depth at scrape time (``depth`` must be cheap and never raise)."""
    BACKGROUND_QUEUE_DEPTH.labels(name).set_function(depth)


def track_load(load: Any) -> None:
    """The load shedder's lag and state at scrape time (an ``extproc.overload.LoopLag``); its refusals
    are counted by ``observe_shed``."""
    EVENT_LOOP_LAG.set_function(lambda: load.lag_ms / 1000.0)
    SHEDDING.set_function(lambda: 1.0 if load.shedding else 0.0)


def observe_shed(reason: str) -> None:
    SHED.labels(reason if reason in ("waited", "loop_lag") else "other").inc()


# ------------------------------------------------------------------------------------------ server
DEFAULT_METRICS_HOST = "127.0.0.1"
PORT_ENV = "LLMPROXY_METRICS_PORT"
HOST_ENV = "LLMPROXY_METRICS_HOST"


def metrics_address_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """``($LLMPROXY_METRICS_HOST or 127.0.0.1, $LLMPROXY_METRICS_PORT)``, or None when no port is set."""
    env = os.environ if environ is None else environ
    raw = (env.get("LLMPROXY_METRICS_PORT") or "").strip()
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{PORT_ENV} must be a port number, not {raw!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{PORT_ENV} must be a port number, not {raw!r}")
    return (env.get("LLMPROXY_METRICS_HOST") or DEFAULT_METRICS_HOST).strip(), port


def start_metrics_server(host: str = DEFAULT_METRICS_HOST, port: int = 9102) -> tuple[Any, int]:
    """Serve ``/metrics`` from a daemon thread; returns ``(server, bound_port)`` (``server.shutdown()`` stops it).

    Loopback by default: in Kubernetes, Envoy's ops listener proxies ``/metrics/sidecar`` to it, so the
    sidecar itself never listens on the pod IP.
    """
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    return server, server.server_address[1]


# ---------------------------------------------------------------------------------- introspection
def metrics() -> list[MetricWrapperBase]:
    """Every metric object this module defines or re-exports."""
    return [v for v in globals().values() if isinstance(v, MetricWrapperBase)]


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def exposed_names() -> frozenset[str]:
    """The sample names a scrape can show for this module's metrics (``llmproxy_requests_total``, ...)."""
    out: set[str] = set()
    for m in metrics():
        for family in m.describe():
            out.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
    return frozenset(out)
