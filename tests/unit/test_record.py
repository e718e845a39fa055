"""The response record's rules, one by one, without a server (fast).

The record is driven through its verbs as the framework modules drive it;
what it reports is read from its facts (the value it freezes at its end). The sink is
the smallest real one: it keeps the records that started and ended.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest
from opentelemetry import context as context_api

from otel_fileresp import _names as n
from otel_fileresp._finished import FinishedResponse
from otel_fileresp._record import (
    ResponseRecord,
    State,
    current_record,
    serve_as_current,
    serve_as_current_sync,
)


class Sink:
    """A response consumer: the keys of the responses started and ended, and
    what each end handed over (None for a discarded record)."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.ended: list[int] = []
        self.finished: list[FinishedResponse | None] = []

    def response_started(self, key: int, framework: str) -> None:
        self.started.append(key)

    def response_ended(self, key: int, finished: FinishedResponse | None) -> None:
        self.ended.append(key)
        self.finished.append(finished)


def new(detailed: bool = True, head: bool = False) -> tuple[ResponseRecord, Sink]:
    sink = Sink()
    record = ResponseRecord(sink, "starlette", context_api.Context(), detailed=detailed)
    record.begin(head=head, started_ns=1_000)
    return record, sink


def run_job(record: ResponseRecord, kind: str | None, **options: Any) -> Any:
    """Submit and run a job at once (a worker thread's view)."""
    job = record.wrap_job(lambda *args: args[0] if args else None, kind, **options)
    assert job is not None
    return job


# -- the served file ------------------------------------------------------------


def test_only_the_served_file_is_opened() -> None:
    record, _ = new()
    record.looked_up("/srv/app.js", 16)
    run_job(record, n.JOB_OPEN, opens="/srv/manifest.json")(object())
    assert not record.facts().opened
    run_job(record, n.JOB_OPEN, opens="/srv/app.js")(object())
    assert record.facts().opened


def test_a_file_opened_in_the_context_before_anything_is_served_is_not_the_open() -> None:
    record, _ = new()
    assert not record.file_opened("/srv/manifest.json", 5, 6)
    assert not record.facts().opened


def test_reads_of_another_file_object_are_not_body_reads() -> None:
    record, _ = new()
    record.serves("/srv/app.js", 16)
    served, other = object(), object()
    run_job(record, n.JOB_OPEN, opens="/srv/app.js")(served)
    run_job(record, n.JOB_READ, reads=other)()
    assert record.facts().read_count == 0
    run_job(record, n.JOB_READ, reads=served)()
    assert record.facts().read_count == 1
    assert record.facts().transfer == n.TRANSFER_READ


def test_the_variant_the_stat_chose_is_served_but_the_name_stays() -> None:
    record, _ = new()
    record.serves("/srv/page.html")
    record.stat(10, 20, "/srv/page.html.br", 7, "br")
    assert record.file_opened("/srv/page.html.br", 30, 31)
    assert record.facts().file_path == "/srv/page.html"
    assert (record.facts().file_size, record.facts().content_encoding) == (7, "br")


# -- complete or not ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "head", "content_length", "sent", "error"),
    [
        (200, False, 0, 0, None),  # a 0-byte file
        (304, False, 1024, 0, None),  # bodiless status, whatever it announced
        (204, False, None, 0, None),
        (200, True, 1024, 0, None),  # HEAD
        (200, False, 1024, 1024, None),  # all announced bytes handed over
        (200, False, 1024, 512, n.ERROR_INCOMPLETE_BODY),
        (200, False, None, 512, n.ERROR_INCOMPLETE_BODY),  # unknown length, no final message
    ],
)
def test_complete_responses_are_never_errors(
    status: int, head: bool, content_length: int | None, sent: int, error: str | None
) -> None:
    record, _ = new(head=head)
    record.head_sent(status, 2_000, content_length)
    record.body_sent(sent, 3_000)
    record.end()  # the framework returned without the final body message
    assert record.facts().error_type == error
    assert (record.facts().outcome == n.OUTCOME_ERROR) == (error is not None)


def test_an_exception_after_a_complete_body_is_not_an_error() -> None:
    record, _ = new()
    record.head_sent(200, 2_000, 10)
    record.body_sent(10, 3_000)
    record.end(ConnectionResetError())
    assert record.facts().error_type is None
    assert record.facts().end_ns == 3_000  # the last byte, not the exception


def test_nothing_sent_and_no_exception_is_incomplete() -> None:
    record, _ = new()
    record.end()
    assert record.facts().error_type == n.ERROR_INCOMPLETE_BODY
    assert record.status is None


# -- statuses and outcomes -------------------------------------------------------------


class HTTPError(Exception):
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (404, n.OUTCOME_NOT_FOUND),
        (403, n.OUTCOME_FORBIDDEN),
        (401, n.OUTCOME_FORBIDDEN),
        (405, n.OUTCOME_METHOD_NOT_ALLOWED),
        (307, n.OUTCOME_REDIRECT),
    ],
)
def test_raised_http_exceptions_set_the_outcome_not_the_status(status: int, outcome: str) -> None:
    record, _ = new()
    record.end(HTTPError(status))
    assert record.status is None
    assert record.facts().outcome == outcome
    assert record.facts().error_type is None


def test_other_exceptions_are_errors_with_their_type() -> None:
    record, _ = new()
    record.end(HTTPError(500))
    assert (record.facts().outcome, record.facts().error_type) == (n.OUTCOME_ERROR, "HTTPError")
    record, _ = new()
    record.end(FileNotFoundError())
    assert record.facts().error_type == "FileNotFoundError"


@pytest.mark.parametrize(
    ("status", "head", "outcome"),
    [
        (200, False, n.OUTCOME_SENT),
        (200, True, n.OUTCOME_HEAD),
        (206, False, n.OUTCOME_PARTIAL),
        (304, False, n.OUTCOME_NOT_MODIFIED),
        (307, False, n.OUTCOME_REDIRECT),
        (412, False, n.OUTCOME_PRECONDITION_FAILED),
        (416, False, n.OUTCOME_RANGE_NOT_SATISFIABLE),
        (405, False, n.OUTCOME_METHOD_NOT_ALLOWED),
        (500, False, n.OUTCOME_ERROR),
    ],
)
def test_outcome_of_the_status_sent(status: int, head: bool, outcome: str) -> None:
    record, _ = new(head=head)
    record.head_sent(status, 2_000, 0)
    record.body_sent(0, 3_000, final=True)
    record.end()
    assert record.facts().outcome == outcome


def test_a_redirect_names_no_file() -> None:
    record, _ = new()
    record.looked_up("/srv/docs/index.html", 10)
    record.head_sent(307, 2_000, 0)
    record.body_sent(0, 2_500, final=True)
    record.end()
    assert (record.facts().file_path, record.facts().file_size) == (None, None)


# -- jobs and totals ----------------------------------------------------------------------


def test_jobs_after_the_end_are_not_the_responses() -> None:
    record, _ = new()
    record.head_sent(200, 2_000, 0)
    record.body_sent(0, 3_000, final=True)
    assert record.wrap_job(lambda: None, n.JOB_CLOSE) is None


def test_a_wait_counts_only_up_to_the_end() -> None:
    record, _ = new()
    job = record.wrap_job(lambda: None, n.JOB_STAT)
    assert job is not None
    record.head_sent(200, perf_now(), None)
    record.body_sent(0, perf_now(), final=True)  # the response ends while the job is queued
    job()
    assert record.facts().jobs == 1
    assert record.facts().wait_s <= record.facts().duration_s


def perf_now() -> int:
    from time import perf_counter_ns

    return perf_counter_ns()


def test_the_end_is_the_last_byte_owed_not_a_later_empty_message() -> None:
    """v2.1: a response ends when its last byte was handed over; jobs after
    it (the read that finds the end of the file, a close) are not its own."""
    record, _ = new()
    record.begin()
    record.head_sent(200, perf_now(), 5)
    record.body_sent(5, perf_now())
    last_byte = record._last_byte_ns
    job = record.wrap_job(lambda: b"", n.JOB_READ)  # reads EOF after the last byte
    assert job is not None
    job()
    record.body_sent(0, perf_now(), final=True)  # the final, empty, message
    record.end()
    assert record.facts().end_ns == last_byte
    assert record.facts().jobs == 0 and record.facts().wait_s == 0


def test_an_open_of_the_served_file_seen_by_the_audit_hook_sets_opened() -> None:
    record, _ = new()
    record.begin()
    record.serves("/srv/static/app.js")
    record.open_seen("/srv/static/other.js")
    assert not record.facts().opened
    record.open_seen("/srv/static/./app.js")  # the same file, spelled otherwise
    assert record.facts().opened


def test_an_open_seen_before_the_served_file_is_known_counts_once_it_is() -> None:
    record, _ = new()
    record.begin()
    record.open_seen("/srv/static/app.js")
    assert not record.facts().opened
    record.looked_up("/srv/static/app.js", 5)
    assert record.facts().opened


def test_a_failed_open_of_the_served_file_is_not_opened() -> None:
    record, _ = new()
    record.begin()
    record.serves("/srv/static/app.js")
    record.open_seen("/srv/static/app.js")  # the audit event comes first
    record.open_failed("/srv/static/app.js", perf_now())  # then it raised
    assert not record.facts().opened


def test_opens_after_the_response_completed_are_not_its_own() -> None:
    record, _ = new()
    record.begin()
    record.serves("/srv/static/app.js")
    record.head_sent(304, perf_now(), None)
    record.body_sent(0, perf_now(), final=True)
    record.open_seen("/srv/static/app.js")
    assert not record.facts().opened


def test_a_job_of_unknown_kind_while_sending_is_a_read() -> None:
    record, _ = new()
    record.body_started(2_000, n.TRANSFER_SENDFILE)
    run_job(record, None)()
    assert record.facts().read_count == 1


def test_a_worker_side_hook_says_what_the_job_is() -> None:
    record, _ = new()

    def make_response() -> None:
        scope_record = current_record()
        assert scope_record is record
        from otel_fileresp._record import current_scope

        scope = current_scope()
        assert scope is not None
        record.job_is(scope.job, n.JOB_MAKE_RESPONSE)

    job = record.wrap_job(make_response)
    assert job is not None
    job()
    assert [kind for kind, _, _ in record.facts().wait_spans] == [n.JOB_MAKE_RESPONSE]


def test_a_job_cancelled_while_queued_ends_its_response() -> None:
    sink = Sink()
    record = ResponseRecord(sink, "aiohttp", context_api.Context())
    future: Future[Any] = Future()
    future.add_done_callback(record.job_cancelled)
    assert future.cancel()
    assert record.state is State.ENDED
    assert len(sink.started) == 1 and sink.ended == sink.started  # one key, start to end
    assert (record.facts().outcome, record.facts().error_type) == (
        n.OUTCOME_ERROR,
        "CancelledError",
    )


def test_a_job_that_ran_does_not_end_the_response() -> None:
    record, sink = new()
    future: Future[Any] = Future()
    future.add_done_callback(record.job_cancelled)
    future.set_result(None)
    assert record.state is State.SERVING
    assert sink.ended == []


# -- life ----------------------------------------------------------------------------------


def test_a_record_ends_once() -> None:
    record, sink = new()
    record.end()
    record.end(RuntimeError())
    assert len(sink.started) == 1 and sink.ended == sink.started
    assert record.facts().error_type == n.ERROR_INCOMPLETE_BODY


def test_its_end_hands_over_one_frozen_value() -> None:
    record, sink = new()
    record.serves("/srv/app.js", 16)
    record.head_sent(200, 2_000, 16)
    record.body_sent(16, 3_000, final=True)
    record.end()
    (finished,) = sink.finished
    assert finished is not None
    assert (finished.status, finished.outcome, finished.bytes_sent) == (200, n.OUTCOME_SENT, 16)
    assert (finished.started_ns, finished.end_ns) == (1_000, 3_000)
    with pytest.raises(AttributeError):
        finished.status = 500  # type: ignore[misc]
    record.body_sent(99, 4_000)  # a late verb changes nothing handed over
    assert finished.bytes_sent == 16


def test_a_discarded_record_ends_with_nothing_to_emit() -> None:
    record, sink = new()
    record.discard()
    assert len(sink.started) == 1 and sink.ended == sink.started and sink.finished == [None]


def test_a_record_never_begun_tells_nobody() -> None:
    sink = Sink()
    record = ResponseRecord(sink, "aiohttp", context_api.Context())
    record.end()
    assert (sink.started, sink.ended) == ([], [])
    assert record.state is State.DISCARDED


def test_a_discarded_record_is_told_as_discarded() -> None:
    record, sink = new()
    record.discard()
    assert len(sink.started) == 1 and sink.ended == sink.started
    assert record.state is State.DISCARDED


# -- phases ---------------------------------------------------------------------------------


def test_lean_records_keep_only_what_the_default_telemetry_needs() -> None:
    record, _ = new(detailed=False)
    record.serves("/srv/app.js", 16)
    record.stat(10, 20, "/srv/app.js", 16, "identity")
    record.precondition(n.PRECONDITION_PASS, "if-none-match", 30, 20)
    run_job(record, n.JOB_OPEN, opens="/srv/app.js")(object())
    record.head_sent(200, 2_000, 16)
    record.body_sent(16, 3_000)
    record.body_sent(0, 3_000, final=True)
    record.end()
    assert record.facts().opened and record.facts().jobs == 1
    assert list(record.facts().phases) == []
    assert record.facts().file_path is None and record.facts().wait_spans == ()
    assert record.facts().outcome == n.OUTCOME_SENT


def test_the_combined_job_splits_into_stat_checks_and_open() -> None:
    record, _ = new()
    record.serves("/srv/app.js")
    record.stat(10, 20, "/srv/app.js", 16, None)
    assert record.file_opened("/srv/app.js", 25, 26)
    record.combined_job_done(30, None, "if-none-match", checked=True)
    phases = {phase: (start, end) for phase, start, end in record.facts().phases}
    assert phases[n.PHASE_STAT] == (10, 20)
    assert phases[n.PHASE_PRECONDITION] == (20, 25)
    assert phases[n.PHASE_OPEN] == (25, 30)  # the fstat after the open included
    assert record.facts().precondition_result == n.PRECONDITION_PASS


def test_an_open_before_the_stat_does_not_end_the_checks() -> None:
    """aiohttp PR #10101's shape: the file opened first, then stat and checks."""
    record, _ = new()
    record.serves("/srv/app.js")
    assert record.file_opened("/srv/app.js", 5, 6)
    record.stat(10, 20, "/srv/app.js", 16, None)
    record.combined_job_done(30, n.PRECONDITION_NOT_MODIFIED, "if-none-match", checked=True)
    phases = {phase: (start, end) for phase, start, end in record.facts().phases}
    assert phases[n.PHASE_PRECONDITION] == (20, 30)
    assert record.facts().opened


def test_the_most_decisive_precondition_wins() -> None:
    record, _ = new()
    record.precondition(n.PRECONDITION_NOT_MODIFIED, "if-none-match", 11, 10)
    record.precondition(n.PRECONDITION_PASS, "if-range", 13, 12)
    assert record.facts().precondition_result == n.PRECONDITION_NOT_MODIFIED
    assert record.facts().precondition_header == "if-none-match"


# -- being current --------------------------------------------------------------------------


def test_serve_as_current_makes_the_record_current_and_ends_it() -> None:
    import asyncio

    record, sink = new()
    seen: list[Any] = []

    async def framework() -> str:
        seen.append(current_record())
        return "done"

    assert asyncio.run(serve_as_current(record, framework)) == "done"
    assert seen == [record]
    assert current_record() is None
    assert len(sink.started) == 1 and sink.ended == sink.started


def test_untimed_decisions_run_from_the_stat_and_the_first_counts() -> None:
    record, _ = new()
    record.stat(10, 20, "/srv/a.txt", 3, "identity")
    record.precondition(None, None, 30)  # passed, no header: decided at 30
    record.precondition(n.PRECONDITION_NOT_MODIFIED, "if-none-match", 40)  # too late
    record.precondition(n.PRECONDITION_RANGE_IGNORED, n.HEADER_IF_RANGE)  # after the checks
    facts = record.facts()
    phases = {phase: (start, end) for phase, start, end in facts.phases}
    assert phases[n.PHASE_PRECONDITION] == (20, 30)
    assert (facts.precondition_result, facts.precondition_header) == (
        n.PRECONDITION_RANGE_IGNORED,
        n.HEADER_IF_RANGE,
    )


def test_the_sync_form_serves_a_synchronous_framework_the_same_way() -> None:
    record, sink = new()
    seen: list[Any] = []

    def framework(path: str) -> str:
        seen.append(current_record())
        record.serves(path, 3)
        record.head_sent(200, 2_000, 3)
        raise OSError("the client left")

    def read_final_state(record: ResponseRecord, error: BaseException | None) -> None:
        seen.append(type(error).__name__)

    with pytest.raises(OSError):
        serve_as_current_sync(record, framework, "/srv/a.txt", before_end=read_final_state)
    assert seen == [record, "OSError"]
    assert current_record() is None
    (finished,) = sink.finished
    assert finished is not None
    assert (finished.status, finished.error_type) == (200, "OSError")


def test_jobs_run_with_their_record_current_in_the_worker() -> None:
    record, _ = new()
    seen: list[Any] = []
    job = record.wrap_job(lambda: seen.append(current_record()))
    assert job is not None
    worker = threading.Thread(target=job)
    worker.start()
    worker.join(5)
    assert seen == [record]


def test_an_expected_phase_that_never_came_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    """A future release whose name-matched hook no longer matches: logged, once."""
    import logging

    from otel_fileresp._log import forget_logged

    forget_logged()
    caplog.set_level(logging.WARNING, logger="otel_fileresp")
    for _ in range(2):
        record, _ = new()
        record.expect(n.PHASE_STAT, "the StaticFiles.lookup_path job")
        record.head_sent(200, 2_000, 0)
        record.end()
    [warning] = [r.getMessage() for r in caplog.records]
    assert "without its stat phase" in warning
    assert "StaticFiles.lookup_path" in warning
    # A response that had it, or that served nothing, says nothing.
    caplog.clear()
    forget_logged()
    record, _ = new()
    record.expect(n.PHASE_STAT, "hook")
    record.stat(10, 20)
    record.head_sent(200, 2_000, 0)
    record.end()
    record, _ = new()
    record.expect(n.PHASE_STAT, "hook")
    record.end(HTTPError(404))
    assert caplog.records == []


def test_a_body_not_all_handed_over_is_incomplete_whatever_the_framework_did() -> None:
    """A client that left: the adapter does not hand over what the server
    dropped, so the response ends incomplete, never sent."""
    record, _ = new()
    record.begin()
    record.head_sent(200, perf_now(), 1000)
    record.body_sent(200, perf_now())  # the rest was dropped by the server
    record.end()
    assert record.facts().outcome == n.OUTCOME_ERROR
    assert record.facts().error_type == n.ERROR_INCOMPLETE_BODY
    assert record.facts().bytes_sent == 200


def test_an_error_status_sent_by_the_framework_is_its_error_type() -> None:
    record, _ = new()
    record.begin()
    record.head_sent(400, perf_now(), 0)
    record.body_sent(0, perf_now(), final=True)
    record.end()
    assert (record.facts().outcome, record.facts().error_type) == (n.OUTCOME_ERROR, "400")


# -- the finished value -----------------------------------------------------------------


@pytest.mark.parametrize(("status", "head"), [(200, False), (200, True), (304, False), (304, True)])
@pytest.mark.parametrize("detailed", [True, False], ids=["detailed", "lean"])
def test_the_common_outcomes_follow_the_rules(status: int, head: bool, detailed: bool) -> None:
    """facts() decides a 200 and a 304 without asking the outcome rules (a
    hot path): the same answer as the rules, on both collections."""
    record, _ = new(detailed=detailed, head=head)
    record.head_sent(status, 2_000, 0)
    record.body_sent(0, 3_000, final=True)
    facts = record.facts()
    assert facts.outcome == record._final_outcome()
    assert facts.error_type == record._final_error_type()


def test_the_finished_value_has_every_field() -> None:
    """facts() builds the value from a tuple (no NamedTuple frame): one value
    for every field, each where its name says."""
    record, _ = new(detailed=True)
    record.serves("/srv/a.txt", 5)
    record.head_sent(200, 2_000, 5)
    record.body_sent(5, 3_000, final=True)
    record.end()
    facts = record.facts()
    assert len(facts) == len(FinishedResponse._fields)
    assert (facts.framework, facts.status, facts.outcome, facts.bytes_sent) == (
        "starlette",
        200,
        n.OUTCOME_SENT,
        5,
    )
    assert (facts.started_ns, facts.end_ns, facts.file_size) == (1_000, 3_000, 5)


@pytest.mark.parametrize("detailed", [True, False], ids=["detailed", "lean"])
def test_lean_and_detailed_count_the_same_jobs_and_wait(detailed: bool) -> None:
    """The wait rule has one owner: a job before the end counts up to the
    end, a job after it does not count, whatever the collection."""
    record, _ = new(detailed=detailed)
    before = record.wrap_job(lambda: None, n.JOB_STAT)
    assert before is not None
    before.submitted = 1_500
    record.head_sent(200, 2_000, 0)  # a 0-byte file: complete at its head
    before()  # ran after the end: its wait stops there
    after = record.wrap_job(lambda: None, n.JOB_CLOSE)
    if after is not None:
        after()
    facts = record.facts()
    assert (facts.jobs, facts.wait_ns) == (1, 500)


def _failing(*args: Any) -> Any:
    raise PermissionError(13, "Permission denied")


@pytest.mark.parametrize("detailed", [True, False], ids=["detailed", "lean"])
def test_an_open_job_of_the_served_file_decides_opened_in_both_collections(
    detailed: bool,
) -> None:
    """An open job tells whether the served file was opened (not another
    path's, and not one that failed), lean or detailed alike."""
    failed_open, _ = new(detailed=detailed)
    failed_open.looked_up("/srv/app.js", 16)
    failing = failed_open.wrap_job(_failing, n.JOB_OPEN, opens="/srv/app.js")
    assert failing is not None
    failed_open.open_seen("/srv/app.js")  # the audit event comes before the open
    with pytest.raises(PermissionError):
        failing("/srv/app.js")
    assert not failed_open.facts().opened
    assert failed_open.facts().jobs == 1

    other, _ = new(detailed=detailed)
    other.looked_up("/srv/app.js", 16)
    run_job(other, n.JOB_OPEN, opens="/srv/manifest.json")(object())
    assert not other.facts().opened

    served, _ = new(detailed=detailed)
    served.looked_up("/srv/app.js", 16)
    run_job(served, n.JOB_OPEN, opens="/srv/app.js")(object())  # no audit event seen
    assert served.facts().opened


@pytest.mark.parametrize("detailed", [True, False], ids=["detailed", "lean"])
def test_a_lookup_jobs_callbacks_run_in_both_collections(detailed: bool) -> None:
    """What a lookup found (its result) or raised (its error) reaches the
    adapter's callback whether the record is lean or detailed, and the job
    counts; the job's own result or exception is the framework's, untouched."""
    found: list[Any] = []
    record, _ = new(detailed=detailed)
    job = record.wrap_job(
        lambda path: (path, 16),
        n.JOB_LOOKUP,
        on_result=lambda rec, result: found.append(("result", rec is record, result)),
        on_error=lambda rec, exc: found.append(("error", rec is record, type(exc))),
    )
    assert job is not None and job("/srv/app.js") == ("/srv/app.js", 16)
    failing = record.wrap_job(
        _failing,
        n.JOB_LOOKUP,
        on_result=lambda rec, result: found.append(("result", rec is record, result)),
        on_error=lambda rec, exc: found.append(("error", rec is record, type(exc))),
    )
    assert failing is not None
    with pytest.raises(PermissionError):
        failing()
    assert found == [
        ("result", True, ("/srv/app.js", 16)),
        ("error", True, PermissionError),
    ]
    assert record.facts().jobs == 2
