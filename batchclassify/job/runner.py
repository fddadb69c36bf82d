"""The job: sources -> workers -> sink, wired together under one task group.

    producer (1 task)       walks folders / reads manifests in a worker thread, in batches;
        │                   skips ids already recorded and duplicates; bad rows become rows
        ▼  bounded stream   (producer.py)
    workers (N tasks)       read + base64 (fileread.py), wait for the API and the rate
        │                   controller, POST under the watchdog, copies of stuck requests
        │                   (sending.py), retry or give up as the attempt policy decides
        │                   (attempts.py); one row per item, handed to the sink with a call
        ▼
    sink                    buffers rows; a timer task flushes them every half second

The item queue is bounded, so memory stays flat however many items there are; the producer
waits when the workers are busy. Everything runs on one event loop thread, so handing a row
to the sink needs no stream or lock: ``_record`` is synchronous and only it touches the sink.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from ..api.client import ClassificationClient
from ..api.transport import Transport
from ..config import HttpConfig, JobConfig
from ..cost import rule_for_url
from ..errors import BudgetReachedError, JobStopped, OutputError, TooManyFailuresError
from ..inputs.counting import count_items, expected_share
from ..inputs.fileread import FileReader
from ..inputs.sources import check_sources
from ..output.cache import KeySettings
from ..output.outputs import hold_output
from ..output.progressfile import ProgressFile
from ..output.resume import PriorState, prepare_output
from ..output.sinks import Sink, open_sink
from ..summary import JobSummary, ProgressListener, SilentProgress
from .answers import CachingClassifier, open_answers
from .attempts import AttemptPolicy
from .budget import Budget
from .fdlimit import fit_open_files
from .gctuning import fewer_collections
from .health import HealthMonitor, Watchdog, flow_status
from .hedging import HedgePolicy
from .itemqueue import ItemQueue
from .producer import Producer
from .ratelimit import RateController
from .stopping import StopSignal
from .tracking import ProgressTracker
from .waiting import WaitDescriber
from .worker import Workers

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal  # classify() only: the CLI never loads it

    from ..api.fleet import FleetTransport  # imported when a job has several servers

#: How often buffered rows are pushed to the file: what a kill -9 can lose, at most.
FLUSH_INTERVAL = 0.5
#: After a stop request, how long in-flight requests may take before they are cut off.
STOP_GRACE = 30.0
_MAX_DISTINCT_ERRORS = 10_000
#: Places (manifest line numbers) kept per grouped error, for the summary.
_ERROR_PLACES = 5
#: How often the progress display hears from the job while nothing else happens.
TICK_INTERVAL = 1.0

#: ``count_items``' signature: the counting walk, a seam for tests.
ItemCounter = Callable[..., int | None]


class Job:
    """One run of a classification job. ``run()`` once; ``request_stop()`` on its event loop."""

    def __init__(
        self,
        config: JobConfig,
        *,
        progress: ProgressListener | None = None,
        stdin: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        counter: ItemCounter = count_items,
        transport: Transport | None = None,
    ) -> None:
        """``clock`` and ``counter`` are seams for tests; ``transport`` sends the HTTP
        requests (``client.py``; default: ``api/http1.py``), for tests or an HTTP stack of your
        own.

        The stages are built when ``run`` starts, from the effective config: ``config`` with
        the concurrency the open-file limit allows (``fdlimit.py``); ``config`` is then that.
        """
        self.config = config
        self._counter = counter
        self._stdin = stdin
        self._clock = clock
        started_over = config.existing == "overwrite"
        self._summary = JobSummary(output=config.output, started_over=started_over)
        # <output>.progress.json for `batchclassify status`, shown what the display is shown.
        self._status_file = ProgressFile(
            config.output, self._summary, live=self._live_status, clock=clock
        )
        display = progress or SilentProgress()
        self._progress = ProgressTracker(self._summary, display, self._status_file)
        # Rows go to the display alone: the progress file reads its counts off the summary.
        self._row_listener = display
        self._stop = StopSignal()
        self._stop_requested: anyio.Event | None = None
        self._fatal_error: JobStopped | OutputError | None = None
        self._cancel: anyio.CancelScope | None = None
        # The billing rule of the endpoint in use (cost.py), and --max-credits (budget.py).
        self._billing = rule_for_url(config.http.servers[0], config.billing)
        self._summary.billing = str(self._billing.kind)
        self._summary.max_credits = config.max_credits
        self._budget = (
            None
            if config.max_credits is None
            else Budget(limit=config.max_credits, rule=self._billing, on_reached=self._reached)
        )
        self._transport = transport
        self._fleet: FleetTransport | None = None
        self.prior: PriorState | None = None
        """What the output held at the start, with the resume index (once ``run`` began)."""
        self._sink: Sink = open_sink(config.output, config.format)

    def _build(self, config: JobConfig) -> None:
        """Every stage, from one config: the effective one (``run``)."""
        self._flow_control(config, self._clock)
        self._stages(config, stdin=self._stdin, clock=self._clock)

    def _flow_control(self, config: JobConfig, clock: Callable[[], float]) -> None:
        """The rate controller, the outage monitor, the stuck-request deadline, the watchdog."""
        self._rate = RateController.from_config(config.rate, clock=clock)
        self._health = HealthMonitor(
            max_outage=config.outage.max_outage,
            outage_after=config.outage.outage_after,
            probe_initial=config.outage.probe_initial,
            probe_max=config.outage.probe_max,
            clock=clock,
            notify=self._progress.note,
            servers=config.http.servers,
        )
        # Stuck requests: the deadline, learned from latencies, and the budget of copies.
        self._hedge = HedgePolicy(
            timeout=config.http.timeout,
            concurrency=config.http.concurrency,
            copies=config.max_credits is None,  # a copy is a request the budget did not admit
        )
        self._watchdog = Watchdog(
            stall_after=config.http.stall_after or 3 * config.http.timeout,
            clock=clock,
            notify=self._progress.note,
            overdue_after=lambda: self._hedge.slow_after,
        )
        self._wait_describer = WaitDescriber(
            rate=self._rate,
            watchdog=self._watchdog,
            health=self._health,
            timeout=config.http.timeout,
            clock=clock,
        )

    def _stages(
        self,
        config: JobConfig,
        *,
        stdin: TextIO | None,
        clock: Callable[[], float],
    ) -> None:
        """The attempt policy, the workers (with their file reader and sender), the producer."""
        policy = AttemptPolicy(config.retry, health=self._health, rate=self._rate, clock=clock)
        reader = FileReader(
            config, notify=self._progress.note, pause=self._stop.pause, stopping=self._stop
        )
        self._workers = Workers(
            policy=policy,
            hedge=self._hedge,
            watchdog=self._watchdog,
            reader=reader,
            answers=CachingClassifier(None, KeySettings(model=config.model)),
            stop=self._stop,
            record=self._record,
            fail=self._fail,
            summary=self._summary,
            notify=self._progress.note,
            timeout=config.http.timeout,
            concurrency=config.http.concurrency,
            clock=clock,
            budget=self._budget,
        )
        self._producer = Producer(
            config,
            summary=self._summary,
            progress=self._progress,
            record=self._record,
            stopping=self._stop,
            stdin=stdin,
        )
        self._following = self._producer.following  # --watch: timed from arrival to row

    # -- control --------------------------------------------------------------------------

    @property
    def summary(self) -> JobSummary:
        """The summary so far: its counts and credits grow as the job runs (read it on the
        job's event loop, from a listener), and ``run`` returns it whole."""
        return self._summary

    def request_stop(self) -> None:
        """Stop taking new items; let requests in flight finish. A second call cuts them off.

        Call it on the job's event loop (a task, a signal receiver, a progress callback): it
        is not thread-safe. From another thread, go through the loop, as ``classify`` does
        (``portal.call(job.request_stop)``, or ``anyio.from_thread.run_sync`` with the loop's
        token).
        """
        if self._stop.requested and self._cancel is not None:
            self._cancel.cancel()
        self._stop.request()
        if self._stop_requested is not None:
            self._stop_requested.set()
        self._summary.interrupted = True
        self._progress.note("stopping: finishing requests in flight (Ctrl-C again to quit now)")

    def _reached(self, budget: Budget) -> None:
        """``--max-credits``: stop as on Ctrl-C (nothing is in flight by now), with a cause of
        its own."""
        self._summary.stop(
            BudgetReachedError(
                f"--max-credits {budget.limit:g} reached: {budget.spent:,.4f} credits spent "
                f"({budget.left:,.4f} left, less than the next request could cost, "
                f"{budget.estimate:,.4f}); rerun with a higher --max-credits to go on",
                spent=budget.spent,
                limit=budget.limit,
            )
        )
        self._stop.request()
        if self._stop_requested is not None:
            self._stop_requested.set()
        self._progress.note("stopping: --max-credits reached")

    # -- the job --------------------------------------------------------------------------

    async def run(self) -> JobSummary:
        self.config.http.check_key()  # before anything is written or sent
        # One job per output: the lock is held for the whole run, before anything reads,
        # repairs or removes the output; a second job is refused before any request.
        with hold_output(self.config), fewer_collections():
            return await self._run_holding_output()

    async def _run_holding_output(self) -> JobSummary:
        # Before anything opens a file: raise the open-file limit, or lower concurrency to it;
        # then every stage is built from the config the job runs with, never patched after.
        config, notice = fit_open_files(self.config)
        self.config = config
        self._build(config)
        if config.watch is not None:  # first: it needs no network to refuse an s3:// source
            from ..inputs.watching import check_followable

            check_followable(config.sources)
        check_sources(config.sources)
        # Before the output is touched: a cache file that is not one refuses the job.
        self._answers = self._workers.answers = open_answers(config)
        sink = self._sink
        try:
            prior = self.prior = prepare_output(config, sink)
        except BaseException:
            self._answers.close()
            raise
        started = self._clock()
        retried = config.existing == "retry_failed"  # the failed rows are to do again
        self._progress.started(already_done=prior.ok + (0 if retried else prior.failed))
        if notice is not None:
            self._summary.notes.append(notice)
            self._progress.note(notice)
        try:
            sink.open()
            try:
                async with self._api_url() as api_url:
                    http = _with_api_url(config.http, api_url)
                    async with ClassificationClient(
                        http,
                        model=config.model,
                        confidence=config.confidence,
                        transport=self._fleet_or_given(http),
                        billing=self._billing,
                    ) as client:
                        await self._pipeline(client, prior)
            finally:
                sink.close()
                self._summary.elapsed = self._clock() - started
            if prior.needs_compaction() or self._producer.requeued:
                sink.compact()
        finally:
            self._close_answers()
            self._summary.rate_limited = self._rate.rate_limited_count
            self._summary.hedged = self._hedge.copies
            if self._budget is not None:
                self._summary.budget_spent = self._budget.spent
            if self._fleet is not None:
                self._summary.servers = self._fleet.snapshot()
            self._progress.finished()
        return self._summary

    def _fleet_or_given(self, http: HttpConfig) -> Transport | None:
        """The transport given (a test's), or a fleet for several servers, or ``None``: the
        client's own, for one server."""
        if self._transport is None and len(http.servers) <= 1:
            return None
        from ..api.fleet import FleetTransport

        if self._transport is None:
            outage = self.config.outage
            self._transport = FleetTransport.over(
                http,
                probe_initial=outage.probe_initial,
                probe_max=outage.probe_max,
                deadline=lambda: self._hedge.deadline,
                notify=self._progress.note,
            )
        if isinstance(self._transport, FleetTransport):
            self._fleet = self._transport
            self._workers.sender.server_failing = self._fleet.routed_around
            budget = self._budget
            if budget is not None:  # probes are inferences too: each takes a ticket
                self._fleet.admit_probe = lambda: (
                    None if (ticket := budget.try_admit()) is None else ticket.settle
                )
        return self._transport

    def _api_url(self) -> Any:
        """The API's URL; for ``local``, an embedded server started for this job."""
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def serve() -> Any:
            if self.config.http.api_url != "local":
                yield self.config.http.api_url  # one server or several: the job's own
                return
            from ..server import ServerConfig, start_server

            server = await start_server(ServerConfig(api_key=self.config.http.api_key))
            try:
                yield server.url
            finally:
                await server.stop()

        return serve()

    async def _pipeline(self, client: ClassificationClient, prior: PriorState) -> None:
        concurrency = self.config.http.concurrency
        queue = ItemQueue(max(16, concurrency * 2))
        for _ in range(concurrency):
            queue.join()  # before any task runs: the producer never finds no worker
        try:
            # The outer group runs the timers (flush, watchdog, stop grace) and is what a fatal
            # error cancels; once the producer and workers are done, the timers are cut too.
            async with anyio.create_task_group() as group:
                self._cancel = group.cancel_scope
                group.start_soon(self._flush_periodically)
                group.start_soon(self._watchdog.run)
                group.start_soon(self._tick_periodically)
                if self._fleet is not None:
                    group.start_soon(self._fleet.watch)  # silent servers out, probes
                work = anyio.Event()  # set by the producer: its first item, or the walk's end
                group.start_soon(self._count, work, prior)
                async with anyio.create_task_group() as workers:
                    self._workers.sender.group = workers
                    group.start_soon(self._cut_after_grace, workers.cancel_scope)
                    workers.start_soon(self._producer.run, queue, prior, work)
                    for _ in range(concurrency):
                        workers.start_soon(self._workers.work, queue, client)
                self._workers.sender.group = None
                producer = self._producer
                if not producer.found_work and producer.listed_all:
                    # Nothing to classify: the walk met every item, its total is exact. Here,
                    # not in _count: that task may be cut below before it runs again.
                    self._progress.counted(self._summary.found)
                group.cancel_scope.cancel()
        finally:
            self._flush()
        if isinstance(self._fatal_error, OutputError):
            raise self._fatal_error

    def _fail(self, error: JobStopped | OutputError) -> None:
        """Stop everything at once: every further request would fail the same way."""
        # No worker takes another item, even one whose answer is in before the cancellation
        # below reaches it (a request goes out without an await when a connection is idle).
        self._stop.request()
        if self._fatal_error is None:
            self._fatal_error = error
            if isinstance(error, JobStopped):
                self._summary.stop(error)
            else:
                self._summary.fatal = str(error)
        if self._cancel is not None:
            self._cancel.cancel()

    async def _cut_after_grace(self, workers_scope: anyio.CancelScope) -> None:
        """After a stop request, give requests in flight ``STOP_GRACE`` seconds, then cut."""
        self._stop_requested = anyio.Event()
        if self._stop.requested:
            self._stop_requested.set()
        await self._stop_requested.wait()
        await anyio.sleep(STOP_GRACE)
        workers_scope.cancel()

    # -- what the progress display hears --------------------------------------------------

    async def _count(self, work: anyio.Event, prior: PriorState) -> None:
        """Count the sources' items in a thread, beside the walk (never before it: the first
        request must not wait for a count of a million files), and pass the count on: to
        the progress display, and to the resume index, sized for it at once.

        The count starts with the job's first item to classify: a walk that ends with nothing
        to do (a finished job's rerun) has met every item itself, and its total is exact, so
        the sources are not read a second time for it.
        """
        await work.wait()
        config = self.config
        if not self._producer.found_work:
            return  # the walk's own total, once it is over (_pipeline)
        stop = threading.Event()
        try:
            total = await anyio.to_thread.run_sync(
                lambda: self._counter(config.sources, extensions=config.extensions, stop=stop),
                abandon_on_cancel=True,
            )
        finally:
            stop.set()  # a cancelled count's thread ends at its next look at the flag
        if total is not None:
            share = expected_share(total, config.shard)
            prior.expect(share)
            self._progress.counted(share)

    async def _tick_periodically(self) -> None:
        while True:
            await anyio.sleep(TICK_INTERVAL)
            self._progress.waiting(self._wait_describer.describe())
            self._progress.tick()

    # -- sink -----------------------------------------------------------------------------

    def _record(
        self, row: dict[str, Any], *, group: str | None = None, at: str | None = None
    ) -> None:
        """Hand one finished row to the sink and count it. Called on the event loop only.

        The summary counts an error under its ``error_type`` and ``group``: the kind of
        problem (a manifest's bad rows are one line of the summary, with a few line numbers
        in ``at``, not one line each) or the failure without the row's request count; by
        default the row's message.
        """
        if self._fatal_error is not None and isinstance(self._fatal_error, OutputError):
            return  # the output is broken; the item stays unrecorded for a rerun
        try:
            self._sink.write(row)
        except OutputError as error:
            self._fail(error)
            return
        summary = self._summary
        if row["status"] == "ok":
            summary.ok += 1
        else:
            summary.failed += 1
            errors = summary.errors
            key = f"{row['error_type']}: {group or row['error']}"
            if key in errors or len(errors) < _MAX_DISTINCT_ERRORS:
                errors[key] += 1
                if at is not None:
                    places = summary.error_lines.setdefault(key, [])
                    if len(places) < _ERROR_PLACES:
                        places.append(at)
            max_failures = self.config.max_failures
            if max_failures is not None and summary.failed >= max_failures:
                self._fail(
                    TooManyFailuresError(
                        f"stopped after {summary.failed} failed items (--max-failures); "
                        "see the error column of the output, then rerun to resume"
                    )
                )
        if row.get("cached"):
            summary.cache_hits, summary.shared = self._answers.hits, self._answers.shared
        elif row.get("credits") is not None:
            summary.credits += row["credits"]
            summary.costed += 1
        elif row["status"] == "ok":
            summary.uncosted += 1  # answered, but its cost could not be read
        self._row_listener.row(row)
        if self._following is not None:
            self._following.latency.row(row["id"])

    async def _flush_periodically(self) -> None:
        while True:
            await anyio.sleep(FLUSH_INTERVAL)
            self._flush()

    def _live_status(self) -> dict[str, Any]:
        """Rate control and outage facts for the progress file."""
        return {
            **flow_status(self._rate, self._health, self._clock()),
            "servers": None if self._fleet is None else self._fleet.snapshot(),
            "billing": self._summary.billing,
            "uncosted": self._summary.uncosted,
            "max_credits": self.config.max_credits,
            "credits_spent": None if self._budget is None else round(self._budget.spent, 6),
            "watching": None if self._following is None else self._following.status(),
        }

    def _flush(self) -> None:
        try:
            self._sink.flush()
        except OutputError as error:
            self._fail(error)
        # Answers are stored with the rows they came in, so a kill -9 loses as few of them.
        self._answers_note(self._answers.commit())

    def _close_answers(self) -> None:
        self._answers_note(self._answers.close())

    def _answers_note(self, problem: str | None) -> None:
        """A problem of the answer cache: shown now, and once in the summary."""
        if problem is not None:
            self._progress.note(problem)
            if problem not in self._summary.notes:
                self._summary.notes.append(problem)


def _with_api_url(http: HttpConfig, api_url: str | tuple[str, ...]) -> HttpConfig:
    return http if http.api_url == api_url else replace(http, api_url=api_url)


async def run_job(
    config: JobConfig,
    *,
    progress: ProgressListener | None = None,
    stdin: TextIO | None = None,
    transport: Transport | None = None,
) -> JobSummary:
    """Run one job to the end and return its summary. ``transport`` sends the HTTP requests,
    as ``Job``'s does (default: ``api/http1.py``).

    Raises ``UsageError`` or ``OutputError`` before anything is sent if the input or output is
    unusable, and ``OutputWriteError`` if writing fails mid-job. Anything else that stops the
    job early (the API refused it or stayed down, ``max_failures``...) ends it with a summary
    whose ``stop_cause`` and ``stopped_by`` say why, and whose ``exit_code`` is
    ``ExitCode.STOPPED``.
    """
    return await Job(config, progress=progress, stdin=stdin, transport=transport).run()


def classify(
    config: JobConfig,
    *,
    progress: ProgressListener | None = None,
    stdin: TextIO | None = None,
    transport: Transport | None = None,
) -> JobSummary:
    """Run one job to the end and return its summary: ``run_job`` for synchronous code.
    ``transport`` sends the HTTP requests, as ``Job``'s does; its methods run on the job's
    thread.

    Works in scripts and inside a running event loop alike (a Jupyter notebook): the job runs
    on a worker thread with its own event loop while the caller waits, so ``progress``'s
    methods are called on that thread. Ctrl-C (or a notebook's interrupt) stops the job as
    the CLI's does: requests in flight finish, every row is written, then
    ``KeyboardInterrupt`` is raised; a second one cuts the requests off. Rerun to resume.

    Like every job (``Job.run``), it raises the process's soft open-file limit as far as the
    job needs (never the hard one), and leaves it raised (``fdlimit.py``, docs/running.md).
    """
    from anyio.from_thread import start_blocking_portal

    with start_blocking_portal() as portal:
        job = portal.call(lambda: Job(config, progress=progress, stdin=stdin, transport=transport))
        finished = portal.start_task_soon(job.run)
        return _wait_stopping_on_interrupt(portal, job, finished)


def _wait_stopping_on_interrupt(
    portal: BlockingPortal, job: Job, finished: Future[JobSummary]
) -> JobSummary:
    """The job's summary; on KeyboardInterrupt, stop the job, wait for it, raise it again."""
    try:
        return finished.result()
    except KeyboardInterrupt:
        pass
    portal.call(job.request_stop)  # gentle: finish requests in flight, write every row
    try:
        finished.result()
    except KeyboardInterrupt:
        portal.call(job.request_stop)  # the second one: cut requests off now
        with suppress(Exception):  # whatever the job says now, the interrupt comes first
            finished.result()
    except Exception as error:  # failed while stopping: the interrupt still comes first
        raise KeyboardInterrupt from error
    raise KeyboardInterrupt


__all__ = ["Job", "JobSummary", "ProgressListener", "classify", "run_job"]
