"""What the installed frameworks do for the probe's scenarios, seen without
this package: ``python probe_truth.py ROOT`` (tests/ on ``sys.path``) serves
ROOT (made with ``otel_fileresp.probe.scenarios.make_files``) with each
framework through tests/support/apps.py's ``serve`` (uvicorn for Starlette, an
aiohttp ``AppRunner``), never instrumented, sends every scenario once and
prints JSON: framework -> scenario -> {"status", "opened"}. Whether the file
was opened comes from an audit hook on ``open`` (any opener, any thread): the
scenario's file, or for the compressed scenarios its .gz/.br sibling.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from support.apps import serve

from otel_fileresp.probe.scenarios import PAGE, TEXT, scenarios_for

_LOCK = threading.Lock()
_OPENED: list[str] = []


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        with _LOCK:
            _OPENED.append(os.path.realpath(os.fsdecode(args[0])))


def main(root: Path) -> dict[str, dict[str, dict[str, object]]]:
    sys.addaudithook(_audit)
    truth: dict[str, dict[str, dict[str, object]]] = {}
    for framework in ("starlette", "aiohttp"):
        found: dict[str, dict[str, object]] = {}
        with serve(framework, root) as served:
            warm_up = served.request("GET", f"/static/{PAGE}")
            etag, last_modified = warm_up.header("etag"), warm_up.header("last-modified")
            for scenario in scenarios_for(framework):
                targets = {os.path.realpath(root / scenario.file)}
                if scenario.file == TEXT:
                    targets |= {os.path.realpath(root / f"{TEXT}.{ext}") for ext in ("gz", "br")}
                with _LOCK:
                    _OPENED.clear()
                path = scenario.path.replace("/handler/", "/file/", 1)
                reply = served.request(
                    scenario.method, path, scenario.request_headers(etag, last_modified)
                )
                served.settled()
                with _LOCK:
                    opened = any(p in targets for p in _OPENED)
                found[scenario.name] = {"status": reply.status, "opened": opened}
        truth[framework] = found
    return truth


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
