"""``otel-fileresp report NEW --baseline OLD`` and ``report FILE --by ATTRIBUTE``
on generated traces with known distributions, in every format ``report`` reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.trace_files import Response, draw, response_spans, write_otlp

from otel_fileresp.report.baseline import parse_growth
from otel_fileresp.report.cli import EXIT_ERROR, EXIT_OK, EXIT_WORSE_THAN_BASELINE, main
from otel_fileresp.report.render import SAMPLE_NOTE

# -- the other two formats (OTLP: support.trace_files) -------------------------


def write_jaeger(path: Path, responses: list[Response]) -> Path:
    """Jaeger query API: traces with their processes; resource attributes are process tags."""
    traces: dict[str, dict[str, object]] = {}
    for response, name, trace, span, parent, start, end, attributes in response_spans(responses):
        entry = traces.setdefault(
            trace,
            {
                "traceID": trace,
                "spans": [],
                "processes": {
                    "p1": {
                        "serviceName": "shop",
                        "tags": [
                            {"key": k, "type": "string", "value": v}
                            for k, v in response.resource.items()
                        ],
                    }
                },
            },
        )
        entry["spans"].append(  # type: ignore[attr-defined]
            {
                "traceID": trace,
                "spanID": span,
                "operationName": name,
                "references": (
                    [{"refType": "CHILD_OF", "traceID": trace, "spanID": parent}] if parent else []
                ),
                "startTime": start // 1000,
                "duration": (end - start) // 1000,
                "tags": [
                    {"key": k, "type": type(v).__name__, "value": v} for k, v in attributes.items()
                ],
                "processID": "p1",
            }
        )
    path.write_text(json.dumps({"data": list(traces.values())}))
    return path


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_console(path: Path, responses: list[Response]) -> Path:
    """The SDK's ConsoleSpanExporter: one indented JSON object per span, with its resource."""
    documents = []
    for response, name, trace, span, parent, start, end, attributes in response_spans(responses):
        documents.append(
            json.dumps(
                {
                    "name": name,
                    "context": {"trace_id": f"0x{trace}", "span_id": f"0x{span}"},
                    "kind": "SpanKind.INTERNAL",
                    "parent_id": f"0x{parent}" if parent else None,
                    "start_time": _iso(start),
                    "end_time": _iso(end),
                    "attributes": attributes,
                    "resource": {
                        "attributes": {"service.name": "shop", **response.resource},
                        "schema_url": "",
                    },
                },
                indent=4,
            )
        )
    path.write_text("\n".join(documents) + "\n")
    return path


FORMATS: dict[str, Callable[[Path, list[Response]], Path]] = {
    "otlp": write_otlp,
    "jaeger": write_jaeger,
    "console": write_console,
}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(["report", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


# -- --baseline --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_noise_is_not_flagged(fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write = FORMATS[fmt]
    old = write(tmp_path / f"old.{fmt}", draw(1, 400))
    new = write(tmp_path / f"new.{fmt}", draw(2, 400))
    status, out = run(capsys, new, "--baseline", old, "--max-p99-growth", "1.5")
    assert status == EXIT_OK, out
    assert "nothing worse than the baseline" in out
    assert "400 -> 400" in out  # both sides counted, per phase
    # A pass is over the exported spans: the output says so, and names the complete count.
    assert out.rstrip("\n").endswith(SAMPLE_NOTE)
    for phase in ("response", "stat", "open", "threadpool.wait", "send"):
        assert f"\n  {phase} " in out


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_slower_send_is_flagged(
    fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write = FORMATS[fmt]
    old = write(tmp_path / f"old.{fmt}", draw(1, 400))
    new = write(tmp_path / f"new.{fmt}", draw(2, 400, send_scale=3.0))
    status, out = run(capsys, new, "--baseline", old, "--max-p99-growth", "50%")
    assert status == EXIT_WORSE_THAN_BASELINE, out
    worse = out.split("WORSE than the baseline", 1)[1]
    assert "aiohttp: send p99" in worse
    assert "aiohttp: stat p99" not in worse
    # Without --max-p99-growth the same traces are shown, not judged.
    status, out = run(capsys, new, "--baseline", old)
    assert status == EXIT_OK, out
    assert "p99 not judged" in out


def test_too_few_samples_are_not_judged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = write_otlp(tmp_path / "old.jsonl", draw(1, 50))
    new = write_otlp(tmp_path / "new.jsonl", draw(2, 50, send_scale=3.0))
    status, out = run(capsys, new, "--baseline", old, "--max-p99-growth", "1.5")
    assert status == EXIT_OK, out
    assert "too few samples" in out
    status, out = run(
        capsys, new, "--baseline", old, "--max-p99-growth", "1.5", "--min-samples", "50"
    )
    assert status == EXIT_WORSE_THAN_BASELINE, out


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_status_that_never_opened_now_opens(
    fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write = FORMATS[fmt]
    stable = draw(1, 100) + draw(3, 30, status=304, opened=False)
    stable += draw(4, 10, status=416, opened=False)
    old = write(tmp_path / f"old.{fmt}", stable)
    same = write(tmp_path / f"same.{fmt}", draw(2, 100) + draw(5, 30, status=304, opened=False))
    status, out = run(capsys, same, "--baseline", old)
    assert status == EXIT_OK, out
    regressed = draw(2, 100) + draw(5, 29, status=304, opened=False)
    regressed += draw(6, 1, status=304, opened=True)
    regressed += draw(7, 10, status=416, opened=True)
    regressed += draw(8, 5, status=206, opened=True)  # not in the baseline: shown, not judged
    new = write(tmp_path / f"new.{fmt}", regressed)
    status, out = run(capsys, new, "--baseline", old)
    assert status == EXIT_WORSE_THAN_BASELINE, out
    worse = out.split("WORSE than the baseline", 1)[1]
    assert "aiohttp: status 304 opened the file 1 time(s)" in worse
    assert "aiohttp: status 416 opened the file 10 time(s)" in worse
    assert "status 206" not in worse
    assert "not in the baseline: not judged" in out


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = write_otlp(tmp_path / "old.jsonl", draw(1, 200))
    new = write_otlp(tmp_path / "new.jsonl", draw(2, 200, send_scale=3.0))
    status, out = run(capsys, new, "--baseline", old, "--max-p99-growth", "2", "--format", "json")
    assert status == EXIT_WORSE_THAN_BASELINE
    document = json.loads(out)
    assert document["failed"] is True
    (comparison,) = document["comparisons"]
    send = next(p for p in comparison["phases"] if p["phase"] == "send")
    assert send["worse"] and send["judged"] and send["p99_growth"] > 2
    assert send["baseline"]["count"] == send["now"]["count"] == 200
    assert comparison["baseline_report"]["responses"] == 200


# -- --by ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_by_resource_attribute_compares_a_canary(
    fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write = FORMATS[fmt]
    stable = draw(1, 300, resource={"service.version": "1.4.2"})
    canary = draw(2, 120, send_scale=3.0, resource={"service.version": "1.5.0"})
    both = write(tmp_path / f"both.{fmt}", stable + canary)
    status, out = run(capsys, both, "--by", "service.version", "--max-p99-growth", "1.5")
    assert status == EXIT_WORSE_THAN_BASELINE, out
    assert "baseline: service.version=1.4.2 (300 responses)" in out
    assert "now: service.version=1.5.0 (120 responses)" in out
    assert "aiohttp: send p99" in out.split("WORSE than the baseline", 1)[1]
    quiet = draw(3, 120, resource={"service.version": "1.5.0"})
    both = write(tmp_path / f"quiet.{fmt}", stable + quiet)
    status, out = run(capsys, both, "--by", "service.version", "--max-p99-growth", "1.5")
    assert status == EXIT_OK, out


def test_by_span_attribute(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stable = draw(1, 200, attributes={"app.canary": False})
    canary = draw(2, 100, attributes={"app.canary": True}) + draw(
        3, 1, status=304, opened=True, attributes={"app.canary": True}
    )
    both = write_otlp(tmp_path / "both.jsonl", stable + canary)
    status, out = run(capsys, both, "--by", "app.canary")
    assert status == EXIT_WORSE_THAN_BASELINE, out
    assert "baseline: app.canary=false" in out
    assert "aiohttp: status 304 opened the file 1 time(s)" in out


def test_by_needs_two_groups_or_a_named_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    three = (
        draw(1, 100, resource={"service.version": "1"})
        + draw(2, 100, resource={"service.version": "2"})
        + draw(3, 50, resource={"service.version": "3"})
        + draw(4, 10)  # no version: the group (none), never compared
    )
    path = write_otlp(tmp_path / "three.jsonl", three)
    status, out = run(capsys, path, "--by", "service.version")
    assert status == EXIT_ERROR
    assert "found 3 groups" in out
    status, out = run(capsys, path, "--by", "service.version", "--baseline-group", "1")
    assert status == EXIT_OK, out
    assert out.count("baseline: service.version=1 ") == 2
    status, out = run(capsys, path, "--by", "service.version", "--baseline-group", "9")
    assert status == EXIT_ERROR
    assert "no group '9'" in out


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_otlp(tmp_path / "t.jsonl", draw(1, 5))
    assert run(capsys, path, "--max-p99-growth", "1.5")[0] == EXIT_ERROR
    assert run(capsys, path, "--baseline", path, "--by", "x")[0] == EXIT_ERROR
    assert run(capsys, path, "--baseline-group", "1")[0] == EXIT_ERROR
    with pytest.raises(SystemExit):
        main(["report", str(path), "--baseline", str(path), "--max-p99-growth", "0.5"])
    status, out = run(capsys, path, "--baseline", tmp_path / "missing.jsonl")
    assert status == EXIT_ERROR
    assert "missing.jsonl: no such file" in out


def test_growth_spellings() -> None:
    assert parse_growth("1.5") == parse_growth("50%") == 1.5
    assert parse_growth("0%") == 1.0
    for bad in ("x", "0.9", "-10%"):
        with pytest.raises(ValueError):
            parse_growth(bad)


def test_plain_report_is_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_otlp(tmp_path / "t.jsonl", draw(1, 20, resource={"service.version": "1"}))
    status, out = run(capsys, path, "--check")
    assert status == EXIT_OK
    assert "aiohttp" in out
    assert "\x1f" not in out
