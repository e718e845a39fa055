"""Small Starlette and aiohttp apps served by the tests.

Run as servers (``uvicorn starlette_app:app``, ``python aiohttp_app.py``) by
the auto-instrumentation tests, and built in-process (``build_app``,
``make_app``) by the OTLP wire tests. Neither contains instrumentation code.
"""
