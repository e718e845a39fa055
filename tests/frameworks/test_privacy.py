"""What the telemetry never records, on both frameworks.

Requests carry distinctive secrets in every header a client could put one in
(Authorization, Cookie, custom headers, User-Agent, Referer, the conditional
and Range headers) and in the query string. Every exported span of ours (name,
attributes, events, links, status) and every metric point of ours (names and
attributes) is searched for them and for the served directory's absolute path:

- by default none of them appears anywhere (only ``file.name``, the base name,
  is recorded);
- with ``capture_path=full`` the absolute path appears, but only as the value
  of ``file.path``; secrets still never do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from support.apps import FRAMEWORKS, metric_attributes, serve
from support.harness import Telemetry, our_spans, responses

MTIME = 1_600_000_000
SECRETS = {
    "Authorization": "Bearer SECRET-authorization-5c1d",
    "Cookie": "session=SECRET-cookie-77ab",
    "X-Api-Key": "SECRET-api-key-0f3e",
    "User-Agent": "SECRET-user-agent-9d2c",
    "Referer": "http://example.invalid/SECRET-referer-41b0",
    "X-Forwarded-For": "SECRET-forwarded-6e6e",
}
QUERY = "?token=SECRET-query-a1b2&next=/SECRET-query-path"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("privacy") / "deep" / "server-side-dir"
    (root / "sub").mkdir(parents=True)
    (root / "small.txt").write_bytes(b"private bytes\n" * 80)
    (root / "sub" / "page.html").write_bytes(b"<p>page</p>")
    for path in (root / "small.txt", root / "sub" / "page.html"):
        os.utime(path, (MTIME, MTIME))
    return root


def requests(served: Any) -> list[tuple[str, str, dict[str, str]]]:
    """Every kind of answer, each with the secrets attached."""
    head = served.request("HEAD", f"/static/small.txt{QUERY}", SECRETS)
    assert head.status == 200
    etag, modified = head.header("etag") or "", head.header("last-modified") or ""
    return [
        ("GET", "/static/small.txt", {}),
        ("GET", "/static/sub/page.html", {}),
        ("GET", "/static/small.txt", {"If-None-Match": etag}),
        ("GET", "/static/small.txt", {"If-Modified-Since": modified}),
        ("GET", "/static/small.txt", {"If-None-Match": '"SECRET-etag-3f3f"'}),
        ("GET", "/static/small.txt", {"If-Match": '"SECRET-if-match-1a1a"'}),
        ("GET", "/static/small.txt", {"Range": "bytes=0-SECRET"}),
        ("GET", "/static/small.txt", {"Range": "bytes=1-9", "If-Range": '"SECRET-if-range"'}),
        ("GET", "/static/missing.txt", {}),
        ("GET", "/file/small.txt", {}),
        ("HEAD", "/file/small.txt", {}),
    ]


def exported(telemetry: Telemetry) -> list[tuple[str, str]]:
    """(where, text) of everything of ours that was exported."""
    found: list[tuple[str, str]] = []
    for span in our_spans(telemetry):
        found.append((f"{span.name} name", span.name))
        found.append((f"{span.name} status", str(span.status.description)))
        for key, value in (span.attributes or {}).items():
            found.append((f"{span.name} {key}", f"{key}={value}"))
        for span_event in span.events:
            found.append((f"{span.name} event", f"{span_event.name} {span_event.attributes}"))
        for link in span.links:
            found.append((f"{span.name} link", str(link.attributes)))
    for name, point_attributes in metric_attributes(telemetry):
        found.append((f"{name} name", name))
        for key, value in point_attributes.items():
            found.append((f"{name} {key}", f"{key}={value}"))
    return found


def serve_secrets(framework: str, root: Path, **settings: Any) -> Telemetry:
    telemetry = Telemetry()
    with serve(framework, root, telemetry, **settings) as served:
        for method, path, headers in requests(served):
            reply = served.request(method, path + QUERY, {**SECRETS, **headers})
            assert reply.status < 500, (path, headers, reply.status)
        assert served.settled()
    return telemetry


def assert_no_secret(found: list[tuple[str, str]]) -> None:
    for where, text in found:
        assert "SECRET" not in text, where
        for value in SECRETS.values():
            assert value not in text, where


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_default_records_no_path_header_or_query(framework: str, root: Path) -> None:
    telemetry = serve_secrets(framework, root)
    found = exported(telemetry)
    # Something was exported to search: every response, its phases, its metrics.
    assert len(responses(telemetry)) >= 10
    assert any(where.startswith("fileresp.duration") for where, _ in found)

    assert_no_secret(found)
    for where, text in found:
        assert str(root) not in text, where
        assert "server-side-dir" not in text, where
        assert "file.path" not in where
    names = {str((s.attributes or {}).get("file.name")) for s in responses(telemetry)}
    # (Starlette names no file for a path StaticFiles could not find.)
    assert {"small.txt", "page.html"} <= names <= {"small.txt", "page.html", "missing.txt", "None"}
    telemetry.shutdown()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_capture_path_full_puts_the_path_in_file_path_only(framework: str, root: Path) -> None:
    telemetry = serve_secrets(framework, root, capture_path="full")
    found = exported(telemetry)
    assert_no_secret(found)
    with_path = [(where, text) for where, text in found if str(root) in text]
    assert with_path, "file.path was not recorded"
    assert all(where.endswith(" file.path") for where, _ in with_path), with_path
    paths = {
        str(s.attributes["file.path"])
        for s in responses(telemetry)
        if s.attributes and "file.path" in s.attributes
    }
    assert str(root / "small.txt") in paths
    assert all(path.startswith(str(root)) for path in paths)
    telemetry.shutdown()
