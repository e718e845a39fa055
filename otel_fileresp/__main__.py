# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""``python -m otel_fileresp report FILE...``: the same as the ``otel-fileresp`` command."""

from otel_fileresp.report.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
