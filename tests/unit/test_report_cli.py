"""The trace report (``otel-fileresp report``) on real exported files.

Spans are made by the OpenTelemetry SDK with the contract's names and
attributes and known durations, then written the way backends write them:
OTLP JSON lines with hex IDs (the Collector's file exporter), Tempo's API
documents with base64 IDs, Jaeger JSON, and the SDK's own ConsoleSpanExporter
with server log lines in between. Percentiles are checked against a
nearest-rank computation done here, over the durations the test chose.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import subprocess
import sys
import tracemalloc
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import ijson  # type: ignore[import-untyped]
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.trace_files import ids_to_hex, otlp_dict, write_collector_jsonl

from otel_fileresp.report import Report, SpanRecord, readers, summarize
from otel_fileresp.report.aggregate import ReportBuilder, nearest_rank
from otel_fileresp.report.cli import main

NS_PER_US = 1000
T0_NS = 1_700_000_000_000_000 * NS_PER_US  # whole microseconds, as Jaeger keeps them
PHASE_SPAN_NAMES = {
    "stat": "fileresp.stat",
    "precondition": "fileresp.precondition",
    "open": "fileresp.open",
    "threadpool.wait": "fileresp.threadpool.wait",
    "send": "fileresp.send",
}


# --- the scenario: file responses with known durations -----------------------


@dataclass
class PlannedResponse:
    framework: str
    status: int
    outcome: str
    opened: bool
    file_name: str
    with_server_span: bool
    phases: list[tuple[str, int]]  # (phase, duration in µs), in the order they run
    extra_us: int  # response time outside the phase spans
    trace_id: str = ""
    span_id: str = ""

    @property
    def duration_us(self) -> int:
        return sum(us for _, us in self.phases) + self.extra_us


@dataclass
class Scenario:
    responses: list[PlannedResponse]
    spans: Sequence[ReadableSpan]
    expected_durations: dict[tuple[str, str], list[int]] = field(default_factory=dict)


def plan_responses(seed: int = 7) -> list[PlannedResponse]:
    """Two frameworks; 200s, 206s, 404s, 304s without an open and one 304 that opened."""
    rng = random.Random(seed)
    us = rng.randint
    planned: list[PlannedResponse] = []
    for i in range(48):
        framework = ("starlette", "aiohttp")[(i // 6) % 2]
        kind = ("sent", "not_modified", "sent", "partial", "not_modified", "not_found")[i % 6]
        wait = [("threadpool.wait", us(5, 900))]
        if kind == "not_found":
            planned.append(
                PlannedResponse(
                    framework, 404, "not_found", False, f"missing{i}.txt", i % 3 == 0,
                    [("stat", us(10, 80)), *wait], us(5, 50),
                )
            )  # fmt: skip
        elif kind == "not_modified":
            phases = [("stat", us(10, 80)), ("precondition", us(2, 30)), *wait]
            planned.append(
                PlannedResponse(
                    framework, 304, "not_modified", False, f"app{i}.js", i % 3 == 0,
                    phases, us(5, 50),
                )
            )  # fmt: skip
        else:
            status = 200 if kind == "sent" else 206
            phases = [
                ("stat", us(10, 80)),
                ("precondition", us(2, 30)),
                *wait,
                ("open", us(15, 200)),
                ("threadpool.wait", us(5, 900)),
                ("send", us(50, 40_000)),
            ]
            planned.append(
                PlannedResponse(
                    framework, status, kind, True, f"big{i}.bin", i % 3 == 0,
                    phases, us(5, 50),
                )
            )  # fmt: skip
    # The regression the check exists for: a 304 that opened the file.
    planned.append(
        PlannedResponse(
            "aiohttp", 304, "not_modified", True, "regressed.css", True,
            [("threadpool.wait", 40), ("open", 120), ("stat", 30), ("precondition", 8)], 11,
        )
    )  # fmt: skip
    return planned


def record_spans(planned: list[PlannedResponse]) -> Sequence[ReadableSpan]:
    """Create the spans with the SDK; the exporter gets them in end order, children first."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "report-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("otel_fileresp", "0.1.0")
    clock = T0_NS
    for response in planned:
        context = None
        server = None
        if response.with_server_span:
            server = tracer.start_span("GET /static", kind=trace.SpanKind.SERVER, start_time=clock)
            context = trace.set_span_in_context(server)
        span = tracer.start_span("fileresp.response", context=context, start_time=clock)
        child_context = trace.set_span_in_context(span)
        at = clock
        for phase, us in response.phases:
            child = tracer.start_span(PHASE_SPAN_NAMES[phase], context=child_context, start_time=at)
            at += us * NS_PER_US
            child.end(end_time=at)
        span.set_attributes(
            {
                "fileresp.framework": response.framework,
                "http.response.status_code": response.status,
                "fileresp.outcome": response.outcome,
                "fileresp.opened": response.opened,
                "file.name": response.file_name,
                "fileresp.transfer": "read" if response.opened else "none",
            }
        )
        end = clock + response.duration_us * NS_PER_US
        span.end(end_time=end)
        if server is not None:
            server.end(end_time=end + 7 * NS_PER_US)
        response.trace_id = format(span.get_span_context().trace_id, "032x")
        response.span_id = format(span.get_span_context().span_id, "016x")
        clock = end + 1000 * NS_PER_US
    spans = exporter.get_finished_spans()
    provider.shutdown()
    return spans


def expected_durations(planned: Iterable[PlannedResponse]) -> dict[tuple[str, str], list[int]]:
    durations: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
    for response in planned:
        durations[response.framework, "response"].append(response.duration_us * NS_PER_US)
        for phase, us in response.phases:
            durations[response.framework, phase].append(us * NS_PER_US)
    return dict(durations)


def reference_percentile(values: Iterable[int], p: int) -> int:
    """Nearest rank, computed independently: rank ceil(p/100 * n), 1-based."""
    ordered = sorted(values)
    rank = math.ceil(Fraction(p, 100) * len(ordered))
    return ordered[rank - 1]


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    planned = plan_responses()
    spans = record_spans(planned)
    return Scenario(planned, spans, expected_durations(planned))


# --- writing the spans as backends do --------------------------------------------


def write_tempo_batches(spans: Sequence[ReadableSpan], path: Path) -> Path:
    """Tempo v1 trace-by-ID: ``{"batches": [...]}`` with base64 IDs, pretty-printed."""
    path.write_text(json.dumps({"batches": otlp_dict(spans)["resourceSpans"]}, indent=2))
    return path


def write_tempo_v2(spans: Sequence[ReadableSpan], path: Path) -> Path:
    """Tempo v2 trace-by-ID: ``{"trace": {"resourceSpans": [...]}}``."""
    document = {"trace": otlp_dict(spans), "metrics": {"inspectedBytes": "123"}}
    path.write_text(json.dumps(document))
    return path


#: Lines a server writes on the same standard output as the console exporter
#: (uvicorn's access log, a gunicorn-style line that starts with "[").
LOG_LINES = (
    'INFO:     127.0.0.1:52814 - "GET /static/app.js HTTP/1.1" 200 OK\n',
    "[2026-12-01 21:00:00 +0000] [4242] [INFO] Booting worker with pid: 4242\n",
    'INFO:     127.0.0.1:52816 - "GET /static/app.js HTTP/1.1" 304 Not Modified\n',
)


def write_console(spans: Sequence[ReadableSpan], path: Path, *, logs_every: int = 3) -> Path:
    """The SDK's ConsoleSpanExporter output, a log line after every ``logs_every`` spans."""
    with path.open("w") as out:
        exporter = ConsoleSpanExporter(out=out)
        for number, span in enumerate(spans):
            exporter.export([span])
            if number % logs_every == 0:
                out.write(LOG_LINES[number % len(LOG_LINES)])
    return path


Writer = Callable[[Sequence[ReadableSpan], Path], Path]


def jaeger_tag(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    return {"key": key, "type": "string", "value": str(value)}


def jaeger_traces(
    spans: Sequence[ReadableSpan], *, short_ids: bool = False
) -> list[dict[str, Any]]:
    """Jaeger JSON traces (query API shape), one per trace ID."""
    by_trace: defaultdict[int, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        by_trace[span.context.trace_id].append(span)

    def trace_hex(trace_id: int) -> str:
        # Jaeger writes the high half without leading zeros.
        return format(trace_id, "x") if short_ids else format(trace_id, "032x")

    traces = []
    for trace_id, members in by_trace.items():
        jaeger_spans = []
        for span in members:
            assert span.start_time is not None and span.end_time is not None
            references = []
            if span.parent is not None:
                references.append(
                    {
                        "refType": "CHILD_OF",
                        "traceID": trace_hex(trace_id),
                        "spanID": format(span.parent.span_id, "016x"),
                    }
                )
            jaeger_spans.append(
                {
                    "traceID": trace_hex(trace_id),
                    "spanID": format(span.context.span_id, "016x"),
                    "operationName": span.name,
                    "references": references,
                    "startTime": span.start_time // NS_PER_US,
                    "duration": (span.end_time - span.start_time) // NS_PER_US,
                    "tags": [jaeger_tag(k, v) for k, v in (span.attributes or {}).items()],
                    "logs": [],
                    "processID": "p1",
                    "warnings": None,
                }
            )
        traces.append(
            {
                "traceID": trace_hex(trace_id),
                "spans": jaeger_spans,
                "processes": {"p1": {"serviceName": "report-test", "tags": []}},
                "warnings": None,
            }
        )
    return traces


def write_jaeger(spans: Sequence[ReadableSpan], path: Path, **kwargs: Any) -> Path:
    document = {"data": jaeger_traces(spans, **kwargs), "total": 0, "limit": 0, "errors": None}
    path.write_text(json.dumps(document, indent=2))
    return path


def write_jaeger_bare_array(spans: Sequence[ReadableSpan], path: Path) -> Path:
    """An older Jaeger UI download: the traces, without ``{"data": ...}`` around them."""
    path.write_text(json.dumps(jaeger_traces(spans), indent=1))
    return path


# --- what the report must say ----------------------------------------------------


def expected_status_counts(
    planned: Iterable[PlannedResponse],
) -> dict[str, dict[int, tuple[int, ...]]]:
    counts: defaultdict[str, defaultdict[int, list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0])
    )
    for response in planned:
        entry = counts[response.framework][response.status]
        entry[0] += 1
        entry[1] += int(response.opened)
    return {fw: {status: tuple(c) for status, c in by.items()} for fw, by in counts.items()}


def report_status_counts(report: Report) -> dict[str, dict[int | None, tuple[int, int]]]:
    return {
        fw: {status: (c.responses, c.opened) for status, c in by.items()}
        for fw, by in report.status_counts.items()
    }


def assert_matches_scenario(report: Report, scenario: Scenario) -> None:
    expected = scenario.expected_durations
    assert {(fw, phase) for fw, by in report.durations.items() for phase in by} == set(expected)
    for (framework, phase), values in expected.items():
        stats = report.durations[framework][phase]
        assert stats.count == len(values)
        assert stats.p50_ns == reference_percentile(values, 50)
        assert stats.p95_ns == reference_percentile(values, 95)
        assert stats.p99_ns == reference_percentile(values, 99)
        assert stats.max_ns == max(values)
    assert report.span_count == sum(s.name.startswith("fileresp.") for s in scenario.spans)
    assert report.response_count == len(scenario.responses)
    assert report.unresolved_phase_spans == 0
    assert report_status_counts(report) == expected_status_counts(scenario.responses)

    slowest = sorted(scenario.responses, key=lambda r: r.duration_us, reverse=True)[:10]
    assert [(s.trace_id, s.span_id, s.duration_ns) for s in report.slowest] == [
        (r.trace_id, r.span_id, r.duration_us * NS_PER_US) for r in slowest
    ]
    assert [(s.status_code, s.outcome, s.file_name, s.framework) for s in report.slowest] == [
        (r.status, r.outcome, r.file_name, r.framework) for r in slowest
    ]

    regressed = [r for r in scenario.responses if r.status == 304 and r.opened]
    assert report.not_modified_opened_count == len(regressed) == 1
    assert [(s.trace_id, s.span_id, s.file_name) for s in report.not_modified_opened] == [
        (r.trace_id, r.span_id, r.file_name) for r in regressed
    ]


# --- the summary, per input format -----------------------------------------------


def test_collector_json_lines_match_reference_percentiles(
    scenario: Scenario, tmp_path: Path
) -> None:
    path = write_collector_jsonl(scenario.spans, tmp_path / "traces.jsonl")
    assert len(path.read_text().splitlines()) > 10  # traces really straddle lines

    report = summarize([path])

    assert_matches_scenario(report, scenario)
    assert report.files == (str(path),)
    assert report.opens_by_status() == {
        "aiohttp": {200: 8, 206: 4, 304: 1},
        "starlette": {200: 8, 206: 4},
    }


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(write_tempo_batches, id="tempo-batches-base64"),
        pytest.param(write_tempo_v2, id="tempo-v2-trace"),
        pytest.param(write_jaeger, id="jaeger"),
        pytest.param(
            lambda spans, path: write_jaeger(spans, path, short_ids=True), id="jaeger-short-ids"
        ),
        pytest.param(
            lambda spans, path: write_collector_jsonl(spans, path, reverse=True),
            id="collector-parents-before-children",
        ),
        pytest.param(
            lambda spans, path: write_collector_jsonl(spans, path, batch=len(spans)),
            id="collector-one-line",
        ),
        pytest.param(write_console, id="sdk-console-exporter"),
    ],
)
def test_every_format_gives_the_same_report(
    scenario: Scenario, tmp_path: Path, write: Writer
) -> None:
    path = write(scenario.spans, tmp_path / "traces.json")

    assert_matches_scenario(summarize([path]), scenario)


def test_legacy_instrumentation_library_spans(scenario: Scenario, tmp_path: Path) -> None:
    document = ids_to_hex(otlp_dict(scenario.spans))
    for resource in document["resourceSpans"]:
        resource["instrumentationLibrarySpans"] = resource.pop("scopeSpans")
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps(document))

    assert_matches_scenario(summarize([path]), scenario)


def test_old_jaeger_ui_download_is_a_bare_array(scenario: Scenario, tmp_path: Path) -> None:
    path = write_jaeger_bare_array(scenario.spans, tmp_path / "traces-1700000000000.json")

    assert_matches_scenario(summarize([path]), scenario)


def test_trace_split_across_files_is_resolved_at_the_end(
    scenario: Scenario, tmp_path: Path
) -> None:
    lines = write_collector_jsonl(scenario.spans, tmp_path / "all.jsonl").read_text().splitlines()
    first, second = tmp_path / "part1.jsonl", tmp_path / "part2.jsonl"
    first.write_text("\n".join(lines[::2]) + "\n")
    second.write_text("\n".join(lines[1::2]) + "\n")

    assert_matches_scenario(summarize([first, second]), scenario)


def test_phase_spans_without_their_parent_are_unknown(scenario: Scenario, tmp_path: Path) -> None:
    phases_only = [s for s in scenario.spans if s.name.startswith("fileresp.") and s.parent]
    phases_only = [s for s in phases_only if s.name != "fileresp.response"]
    path = write_collector_jsonl(phases_only, tmp_path / "orphans.jsonl")

    report = summarize([path])

    assert report.response_count == 0
    assert report.unresolved_phase_spans == len(phases_only)
    assert list(report.durations) == ["(unknown)"]
    assert report.durations["(unknown)"]["send"].count == sum(
        s.name == "fileresp.send" for s in phases_only
    )


def test_jaeger_phase_spans_without_parent_are_unknown(scenario: Scenario, tmp_path: Path) -> None:
    regressed = next(r for r in scenario.responses if r.status == 304 and r.opened)
    kept = [
        s
        for s in scenario.spans
        if not (s.name == "fileresp.response" and s.context.span_id == int(regressed.span_id, 16))
    ]
    path = write_jaeger(kept, tmp_path / "jaeger.json")

    report = summarize([path])

    assert report.unresolved_phase_spans == len(regressed.phases)
    assert {phase: stats.count for phase, stats in report.durations["(unknown)"].items()} == {
        "stat": 1,
        "precondition": 1,
        "open": 1,
        "threadpool.wait": 1,
    }
    assert report.not_modified_opened_count == 0


def test_a_complete_trace_stops_waiting_for_parents() -> None:
    builder = ReportBuilder()
    trace_id, first, second = "ab" * 16, "cd" * 8, "ef" * 8
    builder.add(SpanRecord(trace_id, "01" * 8, first, "open", 5_000))
    builder.end_unit()  # a Collector line: the parent may come later
    builder.add(SpanRecord(trace_id, first, None, "response", 9_000, framework="aiohttp"))
    builder.end_unit()
    builder.add(SpanRecord(trace_id, "02" * 8, second, "send", 7_000))
    builder.end_unit(complete_traces=True)  # a whole Jaeger trace: it will not
    builder.add(SpanRecord(trace_id, second, None, "response", 8_000, framework="aiohttp"))

    report = builder.build(("x",))

    assert report.durations["aiohttp"]["open"].count == 1
    assert "send" not in report.durations["aiohttp"]
    assert report.durations["(unknown)"]["send"].count == 1
    assert report.unresolved_phase_spans == 1
    assert builder.build(("x",)) == report  # building twice counts once


def test_gzip_and_stdin(scenario: Scenario, tmp_path: Path) -> None:
    plain = write_collector_jsonl(scenario.spans, tmp_path / "traces.jsonl")
    packed = tmp_path / "traces.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))

    assert_matches_scenario(summarize([packed]), scenario)

    result = subprocess.run(
        [sys.executable, "-m", "otel_fileresp", "report", "--format", "json", "-"],
        input=plain.read_bytes(),
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["responses"] == len(scenario.responses)


class CountingBackend:
    """An ijson backend that counts the documents it streams."""

    def __init__(self, name: str) -> None:
        self.backend = ijson.get_backend(name)
        self.streamed = 0

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self.backend.parse(*args, **kwargs)

    def items(self, *args: Any, **kwargs: Any) -> Any:
        self.streamed += 1
        return self.backend.items(*args, **kwargs)


def _compact(write: Writer) -> Writer:
    """The same document, written on one line (as curl saves an API answer)."""

    def write_compact(spans: Sequence[ReadableSpan], path: Path) -> Path:
        write(spans, path)
        path.write_text(json.dumps(json.loads(path.read_text())))
        return path

    return write_compact


@pytest.mark.parametrize("backend", ["yajl2_c", "python"])
@pytest.mark.parametrize(
    "write",
    [
        pytest.param(write_tempo_batches, id="tempo-batches"),
        pytest.param(_compact(write_tempo_v2), id="tempo-v2-one-line"),
        pytest.param(write_jaeger, id="jaeger"),
        pytest.param(_compact(write_jaeger), id="jaeger-one-line"),
        pytest.param(write_jaeger_bare_array, id="jaeger-bare-array"),
        pytest.param(write_collector_jsonl, id="collector"),
    ],
)
def test_streamed_documents_give_the_same_report(
    scenario: Scenario,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write: Writer,
    backend: str,
) -> None:
    """Documents larger than the limits are streamed with ijson, by either backend."""
    path = write(scenario.spans, tmp_path / "traces.json")
    counting = CountingBackend(backend)
    monkeypatch.setattr(readers, "ijson_backend", lambda: counting)
    monkeypatch.setattr(readers, "LINE_BYTES_PARSED_WHOLE", 512)
    monkeypatch.setattr(readers, "MULTILINE_BYTES_PARSED_WHOLE", 512)

    assert_matches_scenario(summarize([path]), scenario)
    assert counting.streamed == 1


def test_a_long_line_is_parsed_whole_and_a_long_document_streamed(
    scenario: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line up to LINE_BYTES_PARSED_WHOLE is parsed whole, even over the multi-line limit."""
    one_line = write_collector_jsonl(
        scenario.spans, tmp_path / "one.jsonl", batch=len(scenario.spans)
    )
    pretty = write_tempo_batches(scenario.spans, tmp_path / "tempo.json")
    sizes = one_line.stat().st_size, pretty.stat().st_size
    assert min(sizes) > readers.MULTILINE_BYTES_PARSED_WHOLE
    assert sizes[0] < readers.LINE_BYTES_PARSED_WHOLE
    counting = CountingBackend("yajl2_c")
    monkeypatch.setattr(readers, "ijson_backend", lambda: counting)

    assert_matches_scenario(summarize([one_line]), scenario)
    assert counting.streamed == 0
    assert_matches_scenario(summarize([pretty]), scenario)
    assert counting.streamed == 1


def test_a_streamed_document_cut_short_is_an_error(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jaeger(scenario.spans, tmp_path / "jaeger.json")
    text = path.read_text()
    path.write_text("INFO: downloaded\n" + text[: len(text) // 2])

    assert main(["report", str(path)]) == 2

    assert capsys.readouterr().err == (
        f"otel-fileresp: error: {path}: not JSON: parse error: premature EOF"
        " (in the document from line 2)\n"
    )


def test_the_compiled_ijson_backend_is_used() -> None:
    assert readers.ijson_backend().backend_name == "yajl2_c"


# ijson is the report extra: without it, what is read whole still is.
_WITHOUT_IJSON = (
    "import sys; sys.modules['ijson'] = None;"  # `import ijson` fails, as when not installed
    " from otel_fileresp.report.cli import main; raise SystemExit(main(sys.argv[1:]))"
)


def _report(path: Path, *, ijson_installed: bool) -> subprocess.CompletedProcess[str]:
    command = ["-m", "otel_fileresp"] if ijson_installed else ["-c", _WITHOUT_IJSON]
    return subprocess.run(
        [sys.executable, *command, "report", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(write_collector_jsonl, id="collector"),
        pytest.param(write_console, id="console"),
        pytest.param(_compact(write_jaeger), id="jaeger-one-line"),
    ],
)
def test_without_ijson_documents_read_whole_give_the_same_report(
    scenario: Scenario, tmp_path: Path, write: Writer
) -> None:
    """Collector lines, console spans and one-line documents up to 1 MiB need no ijson."""
    path = write(scenario.spans, tmp_path / "traces.json")
    assert path.stat().st_size < readers.LINE_BYTES_PARSED_WHOLE

    without = _report(path, ijson_installed=False)
    with_ijson = _report(path, ijson_installed=True)

    assert without.returncode == 0, without.stderr
    assert without.stdout == with_ijson.stdout
    assert json.loads(without.stdout)["responses"] == len(scenario.responses)


@pytest.mark.parametrize(
    "write",
    [pytest.param(write_jaeger, id="jaeger"), pytest.param(write_tempo_batches, id="tempo")],
)
def test_without_ijson_a_streamed_document_names_the_extra(
    scenario: Scenario, tmp_path: Path, write: Writer
) -> None:
    """A document too large to be read whole is not read whole: one line, exit 2."""
    path = tmp_path / "traces.json"
    path.write_text("INFO: downloaded\n" + write(scenario.spans, path).read_text())
    assert path.stat().st_size > readers.MULTILINE_BYTES_PARSED_WHOLE

    result = _report(path, ijson_installed=False)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"otel-fileresp: error: {path}: the JSON document from line 2 is too large to be"
        " read whole and ijson, which streams it, is not installed:"
        " pip install 'otel-fileresp[report]'\n"
    )
    assert _report(path, ijson_installed=True).returncode == 0


def test_console_exporter_output_with_log_lines(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_console(scenario.spans, tmp_path / "spans.json")
    text = path.read_text()
    log_lines = sum(line in LOG_LINES for line in text.splitlines(keepends=True))
    assert log_lines > 10 and text.startswith("{\n")  # real interleaving

    report = summarize([path])

    assert_matches_scenario(report, scenario)
    assert report.ignored_lines == log_lines
    assert main(["report", "--format", "json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["ignored_lines"] == log_lines
    assert main(["report", str(path)]) == 0
    header = capsys.readouterr().out.split("\n\n")[0].splitlines()
    assert header[1] == f"Ignored {log_lines} lines that are not JSON (log lines, for example)."


def test_text_lines_are_ignored_and_counted(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any non-blank line outside a JSON document is skipped, also between Collector lines."""
    collector = write_collector_jsonl(scenario.spans, tmp_path / "traces.jsonl").read_text()
    lines = collector.splitlines(keepends=True)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("starting up\n\n   \n" + "".join(line + "[note] not json\n" for line in lines))
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not json\n{not json either}\n")

    report = summarize([mixed, notes])

    assert_matches_scenario(report, scenario)
    assert report.ignored_lines == 1 + len(lines) + 2
    assert main(["report", str(notes)]) == 0
    out = capsys.readouterr().out
    assert "Ignored 2 lines that are not JSON" in out
    assert "No file responses found" in out


def test_file_without_fileresp_spans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("app").start_span("GET /").end()
    path = write_collector_jsonl(exporter.get_finished_spans(), tmp_path / "other.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")

    assert main(["report", str(path), str(empty)]) == 0

    out = capsys.readouterr().out
    assert "2 files, 0 fileresp spans, 0 file responses" in out
    assert "No file responses found" in out
    assert "Check" not in out


@pytest.mark.parametrize("content", ["", "\n", "INFO:     Started server process [1]\n"])
def test_check_fails_without_file_responses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    """An empty export is a broken pipeline, not a pass: exit 3, unless --allow-empty."""
    path = tmp_path / "spans.json"
    path.write_text(content)

    assert main(["report", "--check", str(path)]) == 3

    out = capsys.readouterr().out
    assert out.splitlines()[-2:] == [
        "Check FAILED: no file responses (no fileresp.response span), so nothing was checked.",
        "Are the spans exported, and is otel_fileresp instrumenting the app?"
        " Pass --allow-empty if no file response is expected.",
    ]
    assert main(["report", "--check", "--allow-empty", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "Check passed: no file responses, as --allow-empty allows."
    )


def test_check_fails_on_traces_without_a_fileresp_response(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Other spans, and even phase spans whose responses were lost, are not file responses."""
    without_responses = [s for s in scenario.spans if s.name != "fileresp.response"]
    path = write_console(without_responses, tmp_path / "spans.json")

    assert main(["report", "--check", "--format", "json", str(path)]) == 3

    document = json.loads(capsys.readouterr().out)
    assert document["responses"] == 0
    assert document["spans"] > 0
    assert (document["check"], document["check_failure"]) == ("failed", "no_file_responses")
    assert main(["report", "--check", "--allow-empty", "--format", "json", str(path)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["check"], document["check_failure"]) == ("passed", None)


# --- percentiles -----------------------------------------------------------------


def test_nearest_rank_definition() -> None:
    twenty = list(range(1, 21))
    assert nearest_rank(twenty, 50) == 10
    assert nearest_rank(twenty, 95) == 19
    assert nearest_rank(twenty, 99) == 20
    assert nearest_rank([42], 50) == nearest_rank([42], 99) == 42
    hundred = list(range(1, 101))
    assert [nearest_rank(hundred, p) for p in (50, 95, 99, 100)] == [50, 95, 99, 100]
    # ceil(0.07 * 100) is 8 in floating point; the rank must still be 7.
    assert nearest_rank(hundred, 7) == 7
    with pytest.raises(ValueError):
        nearest_rank([], 50)


# --- the command line ------------------------------------------------------------


@pytest.fixture
def collector_file(scenario: Scenario, tmp_path: Path) -> Path:
    return write_collector_jsonl(scenario.spans, tmp_path / "traces.jsonl")


def test_check_fails_and_lists_each_304_that_opened(
    scenario: Scenario, collector_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    regressed = next(r for r in scenario.responses if r.status == 304 and r.opened)

    assert main(["report", "--check", str(collector_file)]) == 1

    out = capsys.readouterr().out
    listing = out[out.index("Check FAILED") :].splitlines()
    assert listing[0] == (
        "Check FAILED: 1 response with status 304 opened the file (fileresp.opened=true):"
    )
    assert listing[1].split() == ["trace_id", "span_id", "framework", "file.name"]
    assert listing[2].split() == [regressed.trace_id, regressed.span_id, "aiohttp", "regressed.css"]


def test_check_passes_without_such_response(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    regressed = next(r for r in scenario.responses if r.status == 304 and r.opened)
    clean = [s for s in scenario.spans if format(s.context.trace_id, "032x") != regressed.trace_id]
    path = write_jaeger(clean, tmp_path / "clean.json")

    assert main(["report", "--check", str(path)]) == 0
    assert "Check passed: no response with status 304 opened the file." in capsys.readouterr().out
    assert main(["report", str(path)]) == 0


def test_without_check_a_304_that_opened_does_not_fail(collector_file: Path) -> None:
    assert main(["report", str(collector_file)]) == 0


def test_json_output(
    scenario: Scenario, collector_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--format", "json", "--check", "--top", "3", str(collector_file)]) == 1

    document = json.loads(capsys.readouterr().out)
    assert document["percentile_method"] == "nearest-rank"
    assert document["duration_unit"] == "ms"
    assert document["responses"] == len(scenario.responses)
    assert document["check"] == "failed"
    for (framework, phase), values in scenario.expected_durations.items():
        stats = document["frameworks"][framework]["phases"][phase]
        assert stats["count"] == len(values)
        assert stats["p50_ms"] == reference_percentile(values, 50) / 1e6
        assert stats["p95_ms"] == reference_percentile(values, 95) / 1e6
        assert stats["p99_ms"] == reference_percentile(values, 99) / 1e6
        assert stats["max_ms"] == max(values) / 1e6
    assert document["frameworks"]["aiohttp"]["status_codes"]["304"] == {
        "responses": 9,
        "opened": 1,
    }
    assert document["frameworks"]["starlette"]["status_codes"]["304"]["opened"] == 0
    slowest = sorted(scenario.responses, key=lambda r: r.duration_us, reverse=True)[:3]
    assert [(s["trace_id"], s["duration_ms"]) for s in document["slowest"]] == [
        (r.trace_id, r.duration_us / 1000) for r in slowest
    ]
    assert document["not_modified_opened"]["count"] == 1
    assert document["not_modified_opened"]["listed"][0]["file_name"] == "regressed.css"
    assert document["check_failure"] == "not_modified_opened"
    assert document["ignored_lines"] == 0


def test_text_output_is_an_aligned_table(
    scenario: Scenario, collector_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--top", "4", str(collector_file)]) == 0

    out = capsys.readouterr().out
    sections = out.split("\n\n")
    fileresp_spans = sum(s.name.startswith("fileresp.") for s in scenario.spans)
    assert sections[0] == (
        f"otel-fileresp report: 1 file, {fileresp_spans} fileresp spans,"
        f" {len(scenario.responses)} file responses"
    )
    durations = sections[1].splitlines()
    assert durations[0] == "Span durations, ms (nearest-rank percentiles)"
    table = durations[1:]
    assert table[0].split() == ["framework", "phase", "count", "p50", "p95", "p99", "max"]
    assert len({len(line) for line in table}) == 1  # right-aligned numbers: equal widths
    send = next(line.split() for line in table if line.split()[:2] == ["aiohttp", "send"])
    values = scenario.expected_durations["aiohttp", "send"]
    assert send[2:] == [
        str(len(values)),
        *(f"{reference_percentile(values, p) / 1e6:.3f}" for p in (50, 95, 99)),
        f"{max(values) / 1e6:.3f}",
    ]
    assert "Responses and file opens by status" in sections[2]
    slowest = sections[3].splitlines()
    assert slowest[0] == "Slowest 4 file responses"
    assert len(slowest) == 2 + 4
    # The spans may be a sample; the output says so and names the complete count.
    assert sections[4] == (
        "Traces may be sampled or dropped (head sampling, a full span queue): these are the"
        " responses that were exported, not all; the metric fileresp.opens is the complete"
        " count.\n"
    )


# --- errors ----------------------------------------------------------------------


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 64)
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"status": "success", "values": [1, 2, 3]}')
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text('{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "fileresp.')
    not_a_list = tmp_path / "prometheus.json"
    not_a_list.write_text('{"status": "success", "data": {"resultType": "vector"}}')
    bad_line = tmp_path / "bad-line.jsonl"
    bad_line.write_text('{"resourceSpans": []}\n{"resourceSpans": []}\n[1, 2]\n')
    directory = tmp_path / "a-directory"
    directory.mkdir()
    return {
        "missing": (tmp_path / "missing.jsonl", "no such file"),
        "directory": (directory, "is a directory"),
        "binary": (binary, "not UTF-8 text"),
        "unknown-shape": (
            unknown,
            "unknown JSON shape: expected OTLP (resourceSpans), Tempo (batches, trace),"
            " Jaeger (data) traces or console exporter spans (name, context),"
            " found keys: status, values (line 1)",
        ),
        "truncated": (truncated, "not JSON: Unterminated string starting at (line 1, column 56)"),
        "data-not-a-list": (not_a_list, "unknown JSON shape: data is not a list (line 1)"),
        "bad-line": (
            bad_line,
            "unknown JSON shape: an element of the top-level array (expected a Jaeger trace)"
            " is not an object (line 3)",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "directory",
        "binary",
        "unknown-shape",
        "truncated",
        "data-not-a-list",
        "bad-line",
    ],
)
def test_unreadable_input_is_one_line_and_exit_2(
    case: str, tmp_path: Path, collector_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, reason = _bad_inputs(tmp_path)[case]

    assert main(["report", str(collector_file), str(path)]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"otel-fileresp: error: {path}: {reason}\n"


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_fileresp", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_module_reports_errors_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"foo": 1}')

    for path, reason in [(missing, "no such file"), (unknown, "unknown JSON shape")]:
        result = run_module("report", str(path))
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.startswith(f"otel-fileresp: error: {path}: {reason}")
        assert result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr


def test_module_runs_the_report(scenario: Scenario, collector_file: Path) -> None:
    result = run_module("report", "--check", str(collector_file))

    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("otel-fileresp report: 1 file,")
    assert "regressed.css" in result.stdout


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["report"], ["report", "--top", "-1", "x"], ["report", "--format", "xml", "x"]):
        with pytest.raises(SystemExit) as raised:
            main(argv)
        assert raised.value.code == 2
    assert "usage: otel-fileresp" in capsys.readouterr().err


# --- streaming: memory does not grow with the file -------------------------------


def _replicated_trace_ids(text: str, trace_ids: Iterable[str], copy: int) -> str:
    """``text`` with each trace ID made unique to this copy."""
    for trace_id in trace_ids:
        text = text.replace(trace_id, f"{copy:08x}{trace_id[8:]}")
    return text


def _peak_traced_memory(paths: list[Path]) -> tuple[Report, int]:
    tracemalloc.start()
    try:
        report = summarize(paths)
        return report, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_large_json_lines_file_is_streamed(scenario: Scenario, tmp_path: Path) -> None:
    template = write_collector_jsonl(scenario.spans, tmp_path / "one.jsonl", batch=40)
    text = template.read_text()
    trace_ids = {r.trace_id for r in scenario.responses}
    path = tmp_path / "big.jsonl"
    copies = 0
    with path.open("w") as big:
        while big.tell() < 6_000_000:
            big.write(_replicated_trace_ids(text, trace_ids, copies))
            copies += 1

    report, peak = _peak_traced_memory([path])

    size = path.stat().st_size
    assert peak < size / 4, (peak, size)
    assert report.response_count == copies * len(scenario.responses)
    assert report.not_modified_opened_count == copies
    assert report.unresolved_phase_spans == 0


def test_large_jaeger_document_is_streamed(scenario: Scenario, tmp_path: Path) -> None:
    traces = [json.dumps(t, indent=2) for t in jaeger_traces(scenario.spans)]
    trace_ids = {r.trace_id for r in scenario.responses}
    path = tmp_path / "big-jaeger.json"
    copies = 0
    with path.open("w") as big:
        big.write('{\n "data": [\n')
        while big.tell() < 6_000_000:
            if copies:
                big.write(",\n")
            big.write(",\n".join(_replicated_trace_ids(t, trace_ids, copies) for t in traces))
            copies += 1
        big.write('\n ],\n "total": 0,\n "limit": 0,\n "offset": 0,\n "errors": null\n}\n')

    report, peak = _peak_traced_memory([path])

    size = path.stat().st_size
    assert peak < size / 4, (peak, size)
    assert report.response_count == copies * len(scenario.responses)
    assert report.durations["aiohttp"]["response"].max_ns == max(
        scenario.expected_durations["aiohttp", "response"]
    )
