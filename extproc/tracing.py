"""Optional OpenTelemetry tracing: one span per exchange, with GenAI semantic-convention attributes.

Enabled when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set *and* the ``otel`` extra is installed
(``pip install 'llmproxy[otel]'``: opentelemetry-sdk and the OTLP gRPC exporter). Otherwise
:func:`configure` returns None, :func:`record_exchange` returns at its first line, and nothing of
OpenTelemetry is imported.

The span is written once, when the exchange ends, from the record's own start and end times: nothing
runs while the request is in flight. It is a child of Envoy's span when the request carried a W3C
``traceparent`` (Envoy's tracer propagates it to ext_proc in the gRPC stream's metadata, and clients
may send one), so the gateway's work appears inside the caller's trace.

Attributes (https://opentelemetry.io/docs/specs/semconv/gen-ai/): ``gen_ai.system`` and
``gen_ai.provider.name`` (openai, anthropic, openrouter, ...), ``gen_ai.operation.name`` (chat,
text_completion, embeddings), ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``,
``gen_ai.usage.output_tokens``, ``gen_ai.response.finish_reasons``, ``http.request.method``,
``http.response.status_code``, ``url.path`` (no query string), ``error.type``, and ``llmproxy.*``
(request id, route, streamed, time to first token, policy action). Never a prompt or a response body.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

log = logging.getLogger("llmproxy.tracing")

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
SERVICE_NAME_DEFAULT = "llmproxy-sidecar"

_OPERATIONS = {
    "chat": "chat",
    "messages": "chat",
    "responses": "chat",
    "ollama_chat": "chat",
    "completions": "text_completion",
    "ollama_generate": "text_completion",
    "embeddings": "embeddings",
}


class ExchangeTracer:
    """Turns finished :class:`intelligence.records.ExchangeRecord` objects into spans."""

    def __init__(self, provider: Any):
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self._tracer = provider.get_tracer("llmproxy.extproc")
        self._propagator = TraceContextTextMapPropagator()
        self._kind = trace.SpanKind.CLIENT
        self._status = trace.Status
        self._status_code = trace.StatusCode

    def record(self, r: Any, traceparent: str | None = None, tracestate: str | None = None) -> None:
        carrier: dict[str, str] = {}
        headers = r.request_headers or {}
        tp = traceparent or headers.get("traceparent")
        if tp:
            carrier["traceparent"] = tp
            ts = tracestate or headers.get("tracestate")
            if ts:
                carrier["tracestate"] = ts
        parent = self._propagator.extract(carrier) if carrier else None
        operation = _OPERATIONS.get(r.api or "", r.api or "http")
        name = f"{operation} {r.model}" if r.model else operation
        span = self._tracer.start_span(
            name, context=parent, kind=self._kind, attributes=span_attributes(r), start_time=_ns(r.started_at)
        )
        failed = r.error is not None or (r.status is not None and r.status >= 500)
        if failed:
            span.set_status(self._status(self._status_code.ERROR, (r.error or f"HTTP {r.status}")[:200]))
        span.end(end_time=_ns(r.finished_at))

    def shutdown(self) -> None:
        self.provider.shutdown()


def span_attributes(r: Any) -> dict[str, Any]:
    """The span's attributes for one record (only values that are set; never content)."""
    from extproc.metrics import policy_action  # pure function, no metric is touched

    attrs: dict[str, Any] = {
        "gen_ai.operation.name": _OPERATIONS.get(r.api or "", r.api or "http"),
        "http.request.method": r.method,
        "url.path": r.path.split("?", 1)[0],
        "llmproxy.request_id": r.request_id,
        "llmproxy.streamed": bool(r.streamed),
        "llmproxy.policy.action": policy_action(r.flags or {}),
    }
    optional = {
        "gen_ai.system": r.provider,
        "gen_ai.provider.name": r.provider,
        "gen_ai.request.model": r.model,
        "gen_ai.usage.input_tokens": r.usage.input_tokens,
        "gen_ai.usage.output_tokens": r.usage.output_tokens,
        "http.response.status_code": r.status,
        "llmproxy.route": r.route,
        "llmproxy.api": r.api,
        "llmproxy.ttft_ms": r.ttft_ms,
        "llmproxy.upstream_ms": r.upstream_ms,
        "llmproxy.session_id": r.session_id,
    }
    attrs.update({k: v for k, v in optional.items() if v is not None})
    if r.finish_reason:
        attrs["gen_ai.response.finish_reasons"] = [r.finish_reason]
    if r.error is not None:
        attrs["error.type"] = "llmproxy.sidecar_error" if r.error.startswith("sidecar error") else "llmproxy.exchange_error"
    elif r.status is not None and r.status >= 400:
        attrs["error.type"] = str(r.status)
    return attrs


def _ns(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000_000)


_tracer: ExchangeTracer | None = None


def configure(
    environ: Mapping[str, str] | None = None, *, exporter: Any = None, service_name: str | None = None, batch: bool = True
) -> ExchangeTracer | None:
    """Install the process's exchange tracer, or None (tracing off).

    ``exporter`` (tests: the SDK's ``InMemorySpanExporter``) replaces the OTLP exporter and turns
    tracing on whatever the environment says. The service name comes from ``service_name``,
    ``$OTEL_SERVICE_NAME``, or ``llmproxy-sidecar``.
    """
    global _tracer
    env = os.environ if environ is None else environ
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if exporter is None and not endpoint:
        _tracer = None
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        log.warning("%s is set but opentelemetry-sdk is not installed (pip install 'llmproxy[otel]'); tracing off", ENDPOINT_ENV)
        _tracer = None
        return None
    if exporter is None:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning(
                "%s is set but the OTLP exporter is not installed (pip install 'llmproxy[otel]'); tracing off", ENDPOINT_ENV
            )
            _tracer = None
            return None
        exporter = OTLPSpanExporter()  # endpoint, headers, TLS: the standard OTEL_EXPORTER_OTLP_* variables
    name = service_name or env.get("OTEL_SERVICE_NAME") or SERVICE_NAME_DEFAULT
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    _tracer = ExchangeTracer(provider)
    log.info("tracing: exchanges exported as OpenTelemetry spans (service %s)", name)
    return _tracer


def record_exchange(record: Any, traceparent: str | None = None, tracestate: str | None = None) -> None:
    """One span for a finished exchange; a no-op unless :func:`configure` turned tracing on. Never raises."""
    tracer = _tracer
    if tracer is None:
        return
    try:
        tracer.record(record, traceparent, tracestate)
    except Exception:  # tracing must never break the request path
        log.debug("span for %s not recorded", getattr(record, "request_id", "?"), exc_info=True)


def shutdown() -> None:
    """Flush and stop the exporter (call at process exit)."""
    global _tracer
    tracer, _tracer = _tracer, None
    if tracer is not None:
        tracer.shutdown()
