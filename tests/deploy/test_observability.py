"""extproc/metrics.py, extproc/tracing.py, extproc/logjson.py and the Grafana dashboard built on them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from extproc import logjson, metrics, tracing
from intelligence.records import Body, ExchangeRecord, Usage

from .helpers import DEPLOY, ROOT

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
SECRET = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0"


def record(**over) -> ExchangeRecord:
    base = dict(
        request_id="req-1",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=2),
        method="POST",
        path="/v1/chat/completions?x=1",
        provider="openai",
        model="gpt-4o-2024-08-06",
        api="chat",
        route="unified",
        status=200,
        streamed=True,
        latency_ms=2000.0,
        ttft_ms=150.0,
        upstream_ms=1900.0,
        usage=Usage(input_tokens=1000, output_tokens=200, cached_tokens=100),
        request_client=Body(json={"messages": [{"role": "user", "content": "top secret prompt"}]}),
        prompt_user="top secret prompt",
        finish_reason="stop",
        session_id="s-1",
        flags={
            "policy": {"version": "v", "fired": [{"rule": "p/r"}], "redact": {"kinds": ["EMAIL_ADDRESS"]}},
            "redacted_strings": 1,
            "detections": {
                "pii": {"EMAIL_ADDRESS": 2},
                "secrets": {},
                "injection_score": 0.9,
                "injection_layer": "heuristic",
                "flags": ["zero_width"],
            },
            "enhancement": {"experiment": 7, "arm": "variant", "enhancement": 3},
        },
    )
    base.update(over)
    return ExchangeRecord(**base)


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ------------------------------------------------------------------------------------------- metrics
def test_observe_exchange_counts_everything_once() -> None:
    labels = dict(provider="openai", model="gpt-4o", status="2xx", action="redact")
    before = {
        "req": sample("llmproxy_requests_total", **labels),
        "ttft": sample("llmproxy_time_to_first_token_seconds_count", provider="openai", model="gpt-4o"),
        "in": sample("llmproxy_tokens_total", provider="openai", model="gpt-4o", kind="input"),
        "cost": sample("llmproxy_cost_usd_total", provider="openai", model="gpt-4o"),
        "pii": sample("llmproxy_detector_hits_total", detector="pii", kind="EMAIL_ADDRESS", direction="request"),
        "inj": sample("llmproxy_detector_hits_total", detector="injection", kind="heuristic", direction="request"),
        "arm": sample("llmproxy_experiment_exposures_total", experiment="7", arm="variant"),
        "slow": sample("llmproxy_request_duration_seconds_bucket", provider="openai", model="gpt-4o", le="1.0"),
        "dur": sample("llmproxy_request_duration_seconds_count", provider="openai", model="gpt-4o"),
    }
    metrics.observe_exchange(record())
    assert sample("llmproxy_requests_total", **labels) == before["req"] + 1
    assert sample("llmproxy_time_to_first_token_seconds_count", provider="openai", model="gpt-4o") == before["ttft"] + 1
    assert sample("llmproxy_tokens_total", provider="openai", model="gpt-4o", kind="input") == before["in"] + 1000
    cost = sample("llmproxy_cost_usd_total", provider="openai", model="gpt-4o") - before["cost"]
    assert cost > 0 and cost == pytest.approx(metrics.exchange_cost(record()))
    assert sample("llmproxy_detector_hits_total", detector="pii", kind="EMAIL_ADDRESS", direction="request") == before["pii"] + 2
    assert (
        sample("llmproxy_detector_hits_total", detector="injection", kind="heuristic", direction="request") == before["inj"] + 1
    )
    assert sample("llmproxy_experiment_exposures_total", experiment="7", arm="variant") == before["arm"] + 1
    # 2 s exchange: counted, but not in the 1 s bucket
    assert sample("llmproxy_request_duration_seconds_count", provider="openai", model="gpt-4o") == before["dur"] + 1
    assert sample("llmproxy_request_duration_seconds_bucket", provider="openai", model="gpt-4o", le="1.0") == before["slow"]


def test_policy_action_and_status_labels() -> None:
    assert metrics.policy_action({"policy": {"block": {"status": 403}}}) == "block"
    assert metrics.policy_action({"response_policy": {"block": {}}}) == "block"
    assert metrics.policy_action({"policy": {"route": {"model": "m"}}}) == "route"
    assert metrics.policy_action({"policy": {"cap_max_tokens": 5}}) == "cap"
    assert metrics.policy_action({"policy": {"fired": [{"rule": "x"}]}}) == "rule"
    assert metrics.policy_action({}) == "none"
    assert [metrics.status_label(s) for s in (200, 302, 404, 429, 503, None, 999)] == [
        "2xx",
        "3xx",
        "4xx",
        "429",
        "5xx",
        "none",
        "other",
    ]
    assert metrics.provider_label("openai") == "openai" and metrics.provider_label("evil.example") == "other"


def test_model_label_cardinality_is_capped() -> None:
    metrics._models.reset()
    try:
        seen = {metrics.model_label(f"custom-model-{i}") for i in range(metrics.MAX_EXTRA_MODELS + 50)}
        assert len(seen) == metrics.MAX_EXTRA_MODELS + 1 and "other" in seen
        assert metrics.model_label("claude-sonnet-4-20250514") != "other"  # the price table's models always pass
        assert metrics.model_label("openai/gpt-4o") == "gpt-4o"
        assert metrics.model_label(None) == "none"
    finally:
        metrics._models.reset()


def test_observers_bound_their_labels_and_never_raise() -> None:
    before = sample("llmproxy_stage_errors_total", stage="other", failure_mode="other")
    metrics.observe_stage_error("a stage nobody knows", "exploded")
    assert sample("llmproxy_stage_errors_total", stage="other", failure_mode="other") == before + 1
    before = sample("llmproxy_stage_errors_total", stage="recorder", failure_mode="exception")
    metrics.observe_exchange(object())  # not a record: counted as a contained failure, no exception
    assert sample("llmproxy_stage_errors_total", stage="recorder", failure_mode="exception") == before + 1
    before = sample("llmproxy_claude_cost_usd_total", purpose="anomaly_verdict")
    metrics.observe_claude_call("anomaly_verdict", "ok", cost_usd=0.25, input_tokens=10, output_tokens=5, seconds=1.5)
    assert sample("llmproxy_claude_cost_usd_total", purpose="anomaly_verdict") == pytest.approx(before + 0.25)
    metrics.observe_phase("request_body", 0.0004)
    assert sample("llmproxy_sidecar_phase_seconds_count", phase="request_body") >= 1
    metrics.track_queue("audit", lambda: 7)
    assert sample("llmproxy_background_queue_depth", queue="audit") == 7


def test_observe_exchange_is_cheap() -> None:
    r = record()
    metrics.observe_exchange(r)  # warm: price table, label children
    n = 5000
    started = time.perf_counter()
    for _ in range(n):
        metrics.observe_exchange(r)
    per_call = (time.perf_counter() - started) / n
    assert per_call < 200e-6, f"observe_exchange takes {per_call * 1e6:.0f} us"  # measured ~45 us on the 2-core CI machine


def test_metrics_server_serves_on_loopback() -> None:
    assert metrics.metrics_address_from_env({}) is None
    assert metrics.metrics_address_from_env({"LLMPROXY_METRICS_PORT": "9102"}) == ("127.0.0.1", 9102)
    with pytest.raises(ValueError):
        metrics.metrics_address_from_env({"LLMPROXY_METRICS_PORT": "http"})
    metrics.observe_exchange(record())
    server, port = metrics.start_metrics_server("127.0.0.1", 0)
    try:
        assert server.server_address[0] == "127.0.0.1"
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
        server.server_close()
    for name in ("llmproxy_requests_total", "llmproxy_recorder_queue_depth", "llmproxy_time_to_first_token_seconds_bucket"):
        assert name in body


def test_every_dashboard_metric_is_defined() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "llmproxy.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    unquoted = [re.sub(r'"[^"]*"', '""', e) for e in exprs]  # label values are not metric names
    used = {n for e in unquoted for n in re.findall(r"\b(llmproxy_[a-z0-9_]+)\b", e)}
    assert len(used) >= 12
    assert used <= metrics.exposed_names(), f"not defined in extproc/metrics.py: {sorted(used - metrics.exposed_names())}"
    assert {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p} == {"${datasource}"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert "llmproxy_no_such_metric_total" not in metrics.exposed_names()


def test_prometheus_client_is_defined_in_one_place() -> None:
    r = subprocess.run(
        ["git", "grep", "-l", "-E", "from prometheus_client import .*(Counter|Gauge|Histogram|Summary)", "--", "*.py", ":!tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    files = set(r.stdout.split())
    assert files <= {"extproc/metrics.py", "intelligence/store/metrics.py"}, files


# ------------------------------------------------------------------------------------------- tracing
@pytest.fixture
def exporter():
    exp = InMemorySpanExporter()
    assert tracing.configure({}, exporter=exp, batch=False, service_name="test") is not None
    yield exp
    tracing.shutdown()


def test_span_per_exchange_with_genai_attributes_and_envoy_parent(exporter) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    tracing.record_exchange(record(), traceparent=f"00-{trace_id}-{parent_id}-01")
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat gpt-4o-2024-08-06"
    assert format(span.context.trace_id, "032x") == trace_id and format(span.parent.span_id, "016x") == parent_id
    a = dict(span.attributes)
    assert a["gen_ai.system"] == "openai" and a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt-4o-2024-08-06"
    assert a["gen_ai.usage.input_tokens"] == 1000 and a["gen_ai.usage.output_tokens"] == 200
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("stop",)
    assert a["http.response.status_code"] == 200 and a["url.path"] == "/v1/chat/completions"
    assert a["llmproxy.request_id"] == "req-1" and a["llmproxy.policy.action"] == "redact"
    assert span.start_time == int(T0.timestamp() * 1e9) and span.end_time - span.start_time == 2 * 10**9
    assert "top secret prompt" not in json.dumps({k: str(v) for k, v in a.items()})
    assert span.resource.attributes["service.name"] == "test"


def test_span_without_traceparent_is_a_root_and_errors_are_marked(exporter) -> None:
    tracing.record_exchange(record(status=502, error=None, request_headers={}))
    tracing.record_exchange(record(request_id="req-2", status=None, error="sidecar error in request_body"))
    first, second = exporter.get_finished_spans()
    assert first.parent is None and first.status.status_code.name == "ERROR"
    assert first.attributes["error.type"] == "502"
    assert second.attributes["error.type"] == "llmproxy.sidecar_error"
    # a client-sent traceparent header is used when the caller passes none
    tracing.record_exchange(
        record(request_id="req-3", request_headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    )
    third = exporter.get_finished_spans()[-1]
    assert format(third.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"


def test_tracing_is_off_without_an_endpoint_and_costs_nothing() -> None:
    assert tracing.configure({}) is None
    tracing.record_exchange(record())  # no-op
    code = (
        "import sys, extproc.tracing as t; t.configure({}); "
        "from intelligence.records import ExchangeRecord; "
        "assert not any(m.startswith('opentelemetry') for m in sys.modules), sorted(sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_endpoint_turns_on_the_otlp_exporter(monkeypatch) -> None:
    tracer = tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SERVICE_NAME": "gw"})
    try:
        assert tracer is not None
        processor = tracer.provider._active_span_processor._span_processors[0]
        assert type(processor).__name__ == "BatchSpanProcessor"
        assert type(processor._batch_processor._exporter).__name__ == "OTLPSpanExporter"
    finally:
        tracing.shutdown()


def test_missing_sdk_means_tracing_off(monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with caplog.at_level(logging.WARNING, "llmproxy.tracing"):
        assert tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}) is None
    assert "opentelemetry-sdk is not installed" in caplog.text


# -------------------------------------------------------------------------------------------- logging
def _json_logger(stream: io.StringIO) -> logging.Logger:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logjson.JsonFormatter())
    logger = logging.getLogger("llmproxy.test.logjson")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_json_lines_with_request_id_and_masked_secrets() -> None:
    stream = io.StringIO()
    log = _json_logger(stream)
    with logjson.bound_request_id("req-42"):
        log.warning(
            "upstream refused key %s for postgresql://u:hunter2pw@db/x",
            SECRET,
            extra={"provider": "openai", "prompt": "top secret prompt", "status": 401},
        )
    try:
        raise RuntimeError(f"boom with {SECRET}")
    except RuntimeError:
        log.exception("failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "WARNING" and first["logger"] == "llmproxy.test.logjson"
    assert first["request_id"] == "req-42" and first["provider"] == "openai" and first["status"] == 401
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert SECRET not in first["message"] and "<OPENAI_API_KEY>" in first["message"]
    assert "hunter2pw" not in first["message"]
    assert "prompt" not in first and "top secret prompt" not in stream.getvalue()
    assert "request_id" not in second
    assert "RuntimeError" in second["exception"] and SECRET not in second["exception"]


async def test_request_id_follows_each_task() -> None:
    stream = io.StringIO()
    log = _json_logger(stream)

    async def handle(rid: str) -> None:
        token = logjson.set_request_id(rid)
        try:
            await asyncio.sleep(0.01)
            log.info("done")
        finally:
            logjson.reset_request_id(token)

    await asyncio.gather(*(handle(f"r{i}") for i in range(5)))
    ids = sorted(json.loads(line)["request_id"] for line in stream.getvalue().splitlines())
    assert ids == [f"r{i}" for i in range(5)]
    assert logjson.request_id_var.get() is None


def test_configure_logging_switches_on_the_environment() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        stream = io.StringIO()
        logjson.configure_logging(stream=stream, environ={"LLMPROXY_LOG_FORMAT": "json"})
        logging.getLogger("llmproxy.x").info("hello")
        assert json.loads(stream.getvalue().splitlines()[-1])["message"] == "hello"
        stream = io.StringIO()
        logjson.configure_logging(stream=stream, environ={})
        logging.getLogger("llmproxy.x").info("hello")
        assert stream.getvalue().rstrip().endswith("INFO llmproxy.x: hello")
        with pytest.raises(ValueError):
            logjson.configure_logging(environ={"LLMPROXY_LOG_FORMAT": "xml"})
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
