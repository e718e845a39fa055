"""The settings' values, from the environment and from keywords, bad ones
included: parsing only, no framework."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from otel_fileresp import _names as n
from otel_fileresp.settings import Settings

# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, frozenset({"threadpool.wait"})),
        ("all", frozenset(n.PHASES)),
        ("ALL", frozenset(n.PHASES)),
        ("none", frozenset()),
        ("", frozenset()),
        ("stat, open", frozenset({"stat", "open"})),
        ("threadpool.wait,send", frozenset({"threadpool.wait", "send"})),
    ],
)
def test_phase_metrics_values(
    raw: str | None, expected: frozenset[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if raw is None:
        monkeypatch.delenv(n.ENV_PHASE_METRICS, raising=False)
    else:
        monkeypatch.setenv(n.ENV_PHASE_METRICS, raw)
    assert Settings.resolve().phase_metrics == expected


@pytest.mark.parametrize(
    ("variable", "raw", "field", "default"),
    [
        (n.ENV_PHASE_METRICS, "stat,bogus", "phase_metrics", frozenset({"threadpool.wait"})),
        (n.ENV_PHASE_METRICS, "threadpool", "phase_metrics", frozenset({"threadpool.wait"})),
        (n.ENV_METRICS, "maybe", "metrics", True),
        (n.ENV_PHASE_SPANS, "sometimes", "phase_spans", True),
        (n.ENV_CAPTURE_PATH, "absolute", "capture_path", "name"),
    ],
)
def test_a_bad_value_warns_once_and_uses_the_default(
    variable: str,
    raw: str,
    field: str,
    default: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(variable, raw)
    caplog.set_level(logging.WARNING, logger="otel_fileresp")
    assert getattr(Settings.resolve(), field) == default
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert variable in warnings[0] and repr(raw) in warnings[0]


@pytest.mark.parametrize(
    ("raw", "expected"), [("false", False), ("0", False), ("off", False), ("true", True)]
)
def test_metrics_values(raw: str, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(n.ENV_METRICS, raw)
    assert Settings.resolve().metrics is expected


def test_keywords_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(n.ENV_PHASE_METRICS, "all")
    monkeypatch.setenv(n.ENV_METRICS, "false")
    settings = Settings.resolve(phase_metrics=["open"], metrics=True)
    assert settings.phase_metrics == frozenset({"open"})
    assert settings.metrics is True


def test_a_bad_keyword_warns_naming_the_keyword(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="otel_fileresp")
    assert Settings.resolve(phase_metrics=["open", 3]).phase_metrics == frozenset(
        {"threadpool.wait"}
    )
    assert "phase_metrics" in caplog.records[-1].getMessage()
