"""Manual OpenTelemetry set-up shared by the example apps (``--manual``).

Without ``opentelemetry-instrument``, an app sets up the SDK and calls the
instrumentors itself. :func:`configure` does what ``opentelemetry-instrument``
would with ``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``: a tracer provider
with a ``BatchSpanProcessor`` and a meter provider with a
``PeriodicExportingMetricReader``, both exporting over OTLP/HTTP, then
``instrument()`` for both frameworks (each skips quietly if its framework is
not installed). The exporters read the standard variables, so the same app
talks to either stack of this directory:

- Jaeger (examples/jaeger): ``OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318``
  and ``OTEL_METRICS_EXPORTER=none`` (Jaeger stores traces only);
- Tempo + Prometheus (examples/tempo): traces to Tempo,
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://localhost:4318/v1/traces``; metrics
  to Prometheus's OTLP receiver,
  ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=http://localhost:9090/api/v1/otlp/v1/metrics``.

:func:`shutdown` flushes both providers; the apps call it when they stop.
"""

from __future__ import annotations

import os

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_fileresp import AiohttpFileResponseInstrumentor, StarletteFileResponseInstrumentor

_providers: list[TracerProvider | MeterProvider] = []


def configure(service_name: str) -> None:
    """Set up OTLP/HTTP export of traces (and metrics) and instrument both frameworks."""
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    readers: list[MetricReader] = []
    if os.environ.get("OTEL_METRICS_EXPORTER", "otlp") != "none":
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _providers[:] = [tracer_provider, meter_provider]
    StarletteFileResponseInstrumentor().instrument()
    AiohttpFileResponseInstrumentor().instrument()


def shutdown() -> None:
    """Flush and stop what :func:`configure` set up."""
    for provider in _providers:
        provider.shutdown()
    _providers.clear()
