"""The public API is what the README documents: the names each public module
exports (``__all__``) are the names the README's "Use" section lists."""

from __future__ import annotations

import re
from pathlib import Path

import otel_fileresp
import otel_fileresp.testing

README = Path(__file__).resolve().parents[2] / "README.md"


def _documented(module: str, until: str) -> set[str]:
    """The backticked names the README says ``module`` exports (the list
    runs up to ``until``)."""
    text = " ".join(README.read_text().split())
    sentence = re.search(rf"`{re.escape(module)}` exports (.+?){re.escape(until)}", text)
    assert sentence is not None, f"the README no longer says what {module} exports"
    return set(re.findall(r"`(\w+)`", sentence.group(1)))


def test_the_exports_are_what_the_readme_lists() -> None:
    assert set(otel_fileresp.__all__) == _documented("otel_fileresp", ";")
    assert set(otel_fileresp.testing.__all__) == _documented("otel_fileresp.testing", " (")


def test_the_record_and_its_machinery_are_not_public() -> None:
    for internal in ("ResponseRecord", "State", "ResponseListener", "add_response_listener"):
        assert not hasattr(otel_fileresp, internal), internal
