"""The job: sources -> workers -> sink, wired together under one task group.

    producer (1 task)       walks folders / reads manifests in a worker thread, in batches;
        │                   skips ids already recorded and duplicates; bad rows become rows
        ▼  bounded stream
    workers (N tasks)       read + base64 (inline while reads are fast, else in a thread),
        │                   wait for the rate controller, POST, retry what is retryable;
        │                   one row per item, handed to the sink with a plain call
        ▼
    sink                    buffers rows; a timer task flushes them every half second

The item stream is bounded, so memory stays flat however many items there are; the producer
waits when the workers are busy. Everything runs on one event loop thread, so handing a row
to the sink needs no stream or lock: ``_record`` is synchronous and only it touches the sink.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import replace
from functools import partial
from typing import Any, TextIO

import anyio
from anyio.abc import TaskGroup
from anyio.from_thread import BlockingPortal, start_blocking_portal
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .answers import CachingClassifier, open_answers
from .cache import KeySettings
from .client import ClassificationClient
from .config import HttpConfig, JobConfig
from .counting import count_items
from .encoding import EncodedImage, OpenFilesExhausted, read_and_encode
from .errors import BatchClassifyError, FatalApiError, ItemError, OutputError, RetryableError
from .fdlimit import fit_open_files
from .health import HealthMonitor, Watchdog, Watched
from .hedging import HedgePolicy
from .models import Item, Prediction, error_row, ok_row
from .objectstore import object_scheme, read_encoded_object
from .outputs import hold_output
from .progressfile import FanOut, ProgressFile
from .ratelimit import RateController
from .readpolicy import ReadPolicy
from .resume import QUEUED, QUEUED_AGAIN, RECORDED_FAILED, RECORDED_OK, PriorState, prepare_output
from .retry import Backoff
from .sinks import Sink, open_sink
from .sources import check_sources, iter_item_batches
from .summary import JobSummary, ProgressListener, SilentProgress
from .waiting import WaitDescriber

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
    """One run of a classification job. ``run()`` once; ``request_stop()`` from anywhere."""

    def __init__(
        self,
        config: JobConfig,
        *,
        progress: ProgressListener | None = None,
        stdin: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        counter: ItemCounter = count_items,
    ) -> None:
        self.config = config
        self._counter = counter
        self._stdin = stdin
        self._clock = clock
        self._summary = JobSummary(output=config.output, started_over=config.overwrite)
        # <output>.progress.json for `batchclassify status`, fed like the progress display.
        self._status_file = ProgressFile(
            config.output, self._summary, live=self._live_status, clock=clock
        )
        self._progress = FanOut(progress or SilentProgress(), self._status_file)
        self._stopping = False
        self._stop_requested: anyio.Event | None = None
        self._waits: set[anyio.CancelScope] = set()
        self._requeued = 0
        self._fatal_error: BatchClassifyError | None = None
        self._cancel: anyio.CancelScope | None = None
        self._rate = RateController(
            rate=config.rate.requests_per_second, adaptive=config.rate.adaptive, clock=clock
        )
        self._health = HealthMonitor(
            max_outage=config.rate.max_outage,
            outage_after=config.rate.outage_after,
            probe_initial=config.rate.probe_initial,
            probe_max=config.rate.probe_max,
            clock=clock,
            notify=self._progress.note,
            api_url=config.http.api_url,
        )
        # Stuck requests: the deadline, learned from latencies, and the budget of copies.
        self._hedge = HedgePolicy(timeout=config.http.timeout, concurrency=config.http.concurrency)
        self._watchdog = Watchdog(
            stall_after=config.rate.stall_after or 3 * config.http.timeout,
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
        self._workers: TaskGroup | None = None
        self._spares = 0  # workers standing in for ones whose request is stuck
        self._stuck = 0
        self._backoff = Backoff(config.retry)
        self._sink: Sink = open_sink(config.output, config.format)
        # Inline reads while they are fast, threads while most recent reads are slow
        # (readpolicy.py); downscaling always runs in threads.
        self._read_policy = ReadPolicy()
        # The answer cache (--cache) and in-flight sharing; opened by run().
        self._answers = CachingClassifier(None, KeySettings(model=config.model))

    # -- control --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop taking new items; let requests in flight finish. A second call cuts them off."""
        if self._stopping and self._cancel is not None:
            self._cancel.cancel()
        self._stopping = True
        if self._stop_requested is not None:
            self._stop_requested.set()
        for scope in list(self._waits):
            scope.cancel()
        self._summary.interrupted = True
        self._progress.note("stopping: finishing requests in flight (Ctrl-C again to quit now)")

    # -- the job --------------------------------------------------------------------------

    async def run(self) -> JobSummary:
        # One job per output: the lock is held for the whole run, before anything reads,
        # repairs or removes the output; a second job is refused before any request.
        with hold_output(self.config):
            return await self._run_holding_output()

    async def _run_holding_output(self) -> JobSummary:
        # Before anything opens a file: raise the open-file limit, or lower concurrency to it.
        self.config, notice = fit_open_files(self.config)
        config = self.config
        check_sources(config.sources, stdin=self._stdin)
        # Before the output is touched: a cache file that is not one refuses the job.
        self._answers = open_answers(config)
        sink = self._sink
        try:
            prior = prepare_output(config, sink)
        except BaseException:
            self._answers.close()
            raise
        started = self._clock()
        self._progress.started(already_done=prior.ok + (0 if config.retry_failed else prior.failed))
        if notice is not None:
            self._summary.notes.append(notice)
            self._progress.note(notice)
        try:
            sink.open()
            try:
                async with self._api_url() as api_url:
                    http = _with_api_url(config.http, api_url)
                    async with ClassificationClient(
                        http, model=config.model, confidence=config.confidence
                    ) as client:
                        await self._pipeline(client, prior)
            finally:
                sink.close()
                self._summary.elapsed = self._clock() - started
            if prior.needs_compaction() or self._requeued:
                sink.compact()
        finally:
            self._close_answers()
            self._summary.rate_limited = self._rate.rate_limited_count
            self._progress.finished()
        return self._summary

    def _api_url(self) -> Any:
        """The API's URL; for ``local``, an embedded server started for this job."""
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def serve() -> Any:
            if self.config.http.api_url != "local":
                yield self.config.http.api_url
                return
            from .server import ServerConfig, start_server

            server = await start_server(ServerConfig(api_key=self.config.http.api_key))
            try:
                yield server.url
            finally:
                await server.stop()

        return serve()

    async def _pipeline(self, client: ClassificationClient, prior: PriorState) -> None:
        size = max(16, self.config.http.concurrency * 2)
        items_out, items_in = anyio.create_memory_object_stream[Item](size)
        try:
            # The outer group runs the timers (flush, watchdog, stop grace) and is what a fatal
            # error cancels; once the producer and workers are done, the timers are cut too.
            async with anyio.create_task_group() as group:
                self._cancel = group.cancel_scope
                group.start_soon(self._flush_periodically)
                group.start_soon(self._watchdog.run)
                group.start_soon(self._tick_periodically)
                group.start_soon(self._count)
                async with anyio.create_task_group() as workers:
                    self._workers = workers
                    group.start_soon(self._cut_after_grace, workers.cancel_scope)
                    workers.start_soon(self._produce, items_out, prior)
                    for _ in range(self.config.http.concurrency):
                        workers.start_soon(self._work, items_in.clone(), client)
                    items_in.close()
                self._workers = None
                group.cancel_scope.cancel()
        finally:
            self._flush()
        if isinstance(self._fatal_error, OutputError):
            raise self._fatal_error

    def _fail(self, error: BatchClassifyError) -> None:
        """Stop everything at once: every further request would fail the same way."""
        if self._summary.fatal is None:
            self._summary.fatal = str(error)
            self._fatal_error = error
        if self._cancel is not None:
            self._cancel.cancel()

    async def _cut_after_grace(self, workers_scope: anyio.CancelScope) -> None:
        """After a stop request, give requests in flight ``STOP_GRACE`` seconds, then cut."""
        self._stop_requested = anyio.Event()
        if self._stopping:
            self._stop_requested.set()
        await self._stop_requested.wait()
        await anyio.sleep(STOP_GRACE)
        workers_scope.cancel()

    # -- what the progress display hears --------------------------------------------------

    async def _count(self) -> None:
        """Count the sources' items in a thread, beside the walk (never before it: the first
        request must not wait for a count of a million files), and pass the count on."""
        stop = threading.Event()
        config = self.config
        try:
            total = await anyio.to_thread.run_sync(
                lambda: self._counter(config.sources, extensions=config.extensions, stop=stop),
                abandon_on_cancel=True,
            )
        finally:
            stop.set()  # a cancelled count's thread ends at its next look at the flag
        if total is not None:
            self._progress.counted(total)

    async def _tick_periodically(self) -> None:
        while True:
            await anyio.sleep(TICK_INTERVAL)
            self._progress.waiting(self._wait_describer.describe())
            self._progress.tick()

    # -- producer -------------------------------------------------------------------------

    async def _produce(self, items_out: MemoryObjectSendStream[Item], prior: PriorState) -> None:
        index = prior.index
        retry_failed = self.config.retry_failed
        summary = self._summary
        batches: Iterator[list[Item]] = iter_item_batches(
            self.config.sources,
            extensions=self.config.extensions,
            stdin=self._stdin,
            report=summary.inputs,  # filled in by the walk, in the worker thread
        )
        async with items_out:
            while not self._stopping:
                batch = await anyio.to_thread.run_sync(next, batches, None, abandon_on_cancel=True)
                if batch is None:
                    summary.nothing_found = summary.found == 0
                    self._progress.listing_finished()
                    break
                summary.found += len(batch)
                fresh: list[Item] = []
                skipped_before = self._summary.already_done + self._summary.previously_failed
                for item in batch:
                    tag = index.get(item.id)
                    if tag in (QUEUED, QUEUED_AGAIN):
                        summary.duplicates += 1
                    elif tag == RECORDED_OK:
                        summary.already_done += 1
                    elif tag == RECORDED_FAILED and not retry_failed:
                        summary.previously_failed += 1
                    else:
                        if tag == RECORDED_FAILED:
                            self._requeued += 1
                        index.set(item.id, QUEUED_AGAIN if tag == RECORDED_FAILED else QUEUED)
                        fresh.append(item)
                recorded = self._summary.already_done + self._summary.previously_failed
                self._progress.listed(seen=len(batch), recorded=recorded - skipped_before)
                self._progress.add_total(len(fresh))
                for item in fresh:
                    if self._stopping:
                        break
                    if item.problem is not None:
                        self._record(
                            error_row(
                                item,
                                error=item.problem,
                                error_type=item.problem_kind or "bad_input",
                                attempts=0,
                            ),
                            group=item.problem_group,
                            at=item.problem_at,
                        )
                        await anyio.lowlevel.checkpoint()
                    else:
                        try:
                            try:  # skips send()'s extra event-loop turn while there is room
                                items_out.send_nowait(item)
                            except anyio.WouldBlock:
                                await items_out.send(item)
                        except anyio.BrokenResourceError:
                            return  # every worker has stopped (a stop request)

    # -- workers --------------------------------------------------------------------------

    async def _work(
        self,
        items_in: MemoryObjectReceiveStream[Item],
        client: ClassificationClient,
        until: anyio.Event | None = None,
    ) -> None:
        """Classify items until there are none; a spare worker (``until`` given) stops once
        the stuck request it stands in for has settled."""
        try:
            async with items_in:
                while not self._stopping and (until is None or not until.is_set()):
                    try:  # skips receive()'s extra event-loop turn when an item is waiting
                        item = items_in.receive_nowait()
                    except anyio.WouldBlock:
                        try:
                            item = await items_in.receive()
                        except anyio.EndOfStream:
                            break
                    except anyio.EndOfStream:
                        break
                    try:
                        row = await self._classify(item, client, items_in)
                    except FatalApiError as error:
                        self._fail(error)
                        return
                    if row is not None:
                        self._record(row)
        finally:
            if until is not None:
                self._spares -= 1

    async def _classify(
        self,
        item: Item,
        client: ClassificationClient,
        items_in: MemoryObjectReceiveStream[Item],
    ) -> dict[str, Any] | None:
        """Classify one item, retrying what is retryable. ``None`` means: left for a rerun."""
        config = self.config
        encoded: EncodedImage | None = None
        if item.path is not None:
            try:
                if object_scheme(item.path) is not None:  # s3://...: read through fsspec
                    encoded = await read_encoded_object(
                        item.path,
                        max_upload_bytes=config.max_upload_bytes,
                        max_size=config.max_size,
                        jpeg_quality=config.jpeg_quality,
                    )
                else:
                    encoded = await self._encode(item.path)
            except ItemError as error:
                return error_row(item, error=str(error), error_type=error.kind, attempts=0)
            if encoded is None:
                return None  # stopping while waiting for a file descriptor
        return await self._answers.classify(
            item, encoded, lambda: self._request(item, encoded, client, items_in)
        )

    async def _request(
        self,
        item: Item,
        encoded: EncodedImage | None,
        client: ClassificationClient,
        items_in: MemoryObjectReceiveStream[Item],
    ) -> dict[str, Any] | None:
        """Send one item until it has a row, retrying what is retryable."""
        config = self.config
        attempts = 0
        budget_used = 0  # attempts that count: those not made while the API was down
        first_start = self._clock()
        first_failure: float | None = None
        while True:
            # Usually a slot is free at once; a cancel scope only for a real wait.
            if self._health.is_down or self._rate.try_acquire() > 0:
                with self._unless_stopping():
                    await self._health.wait_until_available()
                    if not self._health.gave_up:
                        await self._rate.acquire()
            if self._stopping:
                return None
            if self._health.gave_up:
                self._fail(FatalApiError(self._health.stop_reason()))
                return None
            attempts += 1
            started = self._clock()
            try:
                prediction, race = await self._send(item, encoded, client, started, items_in)
            except RetryableError as error:
                first_failure = self._clock() if first_failure is None else first_failure
                self._health.failure(error, item.id)
                if error.http_status == 429:
                    self._rate.on_rate_limited(error.retry_after, started)
                elif not self._health.is_down:
                    budget_used += 1
                # Give up only while the API works for others: if other items fail too and
                # nothing sent since this one first failed was answered, an outage is starting.
                if (
                    not self._health.is_down
                    and self._health.others_fine_since(item.id, first_failure)
                    and (
                        budget_used >= config.retry.attempts
                        or self._clock() - first_start >= config.retry.max_elapsed
                    )
                ):
                    return error_row(
                        item,
                        error=f"{error} (gave up after {attempts} attempts)",
                        error_type=error.kind,
                        attempts=attempts,
                        http_status=error.http_status,
                        elapsed_ms=(self._clock() - started) * 1000,
                    )
                if self._stopping:
                    return None
                self._summary.retries += 1
                self._progress.retried()
                delay = error.retry_after
                if delay is None:
                    delay = self._backoff.delay(max(budget_used, 1))
                with self._unless_stopping():
                    await anyio.sleep(delay)
                continue
            except ItemError as error:
                self._health.success(started)
                return error_row(
                    item,
                    error=str(error),
                    error_type=error.kind,
                    attempts=attempts,
                    http_status=error.http_status,
                    elapsed_ms=(self._clock() - started) * 1000,
                )
            return self._answered(item, encoded, prediction, started, attempts, race)

    def _answered(
        self,
        item: Item,
        encoded: EncodedImage | None,
        prediction: Prediction,
        started: float,
        attempts: int,
        race: _Race,
    ) -> dict[str, Any]:
        """The row of an item the server classified; the answer feeds rate and deadline."""
        now = self._clock()
        self._health.success(started)
        if race.answer is None:
            self._rate.on_success(started)
            self._hedge.record(now - started)
        else:
            # A copy answered first and told the rate controller itself; the original's time
            # is only known to be longer than the deadline.
            self._hedge.record_censored()
        attempts += race.copies
        if encoded is not None and encoded.original_size is not None:
            # The server measured the downscaled copy; report the image the user has.
            prediction = replace(
                prediction,
                image_width=encoded.original_size[0],
                image_height=encoded.original_size[1],
            )
        return ok_row(item, prediction, attempts=attempts, elapsed_ms=(now - started) * 1000)

    @contextmanager
    def _unless_stopping(self) -> Iterator[None]:
        """A wait for a turn (outage, rate limit, backoff) that a stop request ends at once:
        only requests on the wire are let finish."""
        scope = anyio.CancelScope()
        if self._stopping:
            scope.cancel()
        self._waits.add(scope)
        try:
            with scope:
                yield
        finally:
            self._waits.discard(scope)

    # -- one request, and copies of a stuck one ---------------------------------------------

    async def _send(
        self,
        item: Item,
        encoded: EncodedImage | None,
        client: ClassificationClient,
        started: float,
        items_in: MemoryObjectReceiveStream[Item],
    ) -> tuple[Prediction, _Race]:
        """One request under the watchdog, and its race: copies sent, whether one won.

        A slow request (``hedging.py``) gets ``_overdue`` called by the watchdog: a spare
        worker takes this worker's place; past the deadline a copy goes out; the first answer
        wins.
        A request the watchdog cuts for a stall counts as a timeout.
        """
        # Also before the deadline is known: a request sent in the first burst can hang too.
        race = _Race(item, encoded, client, items_in, started)
        self._hedge.sent()
        watched = race.watched = self._watchdog.watch(started, partial(self._overdue, race))
        try:
            async with watched:
                prediction = await _post(item, encoded, client)
                return prediction, race
        finally:
            self._settle(race)
        if race.answer is not None:
            if isinstance(race.answer, Exception):
                raise race.answer
            return race.answer, race
        raise RetryableError(
            "no answer, and no other request completed either, for "
            f"{self._watchdog.stall_after:g} s: the connection was stuck; cancelled by the "
            "watchdog",
            kind="timeout",
        )

    def _overdue(self, race: _Race) -> bool:
        """Called by the watchdog, for the original and each copy, once past ``slow_after``
        and again on each check while it returns ``False``: frees the worker's place, then,
        past the deadline, sends a copy if the budget allows (``hedging.py``)."""
        workers = self._workers
        if race.done or self._stopping or workers is None:
            return True
        if race.spare is None and self._spares < self.config.http.concurrency:
            # The slow request no longer counts against --concurrency: a spare worker takes
            # the next items until it settles. At most one spare per worker.
            race.spare = anyio.Event()
            self._spares += 1
            workers.start_soon(self._work, race.items_in.clone(), race.client, race.spare)
        deadline = self._hedge.deadline
        if race.copies >= HedgePolicy.max_copies or deadline is None:
            return race.copies >= HedgePolicy.max_copies
        if self._clock() - race.last_sent < deadline:
            return False
        if not race.stuck:
            race.stuck = True
            self._stuck += 1
        if self._health.is_down or not self._hedge.try_copy(first_try=not race.refused):
            if not race.refused:
                race.refused = True
                self._progress.note(
                    f"{self._stuck} request(s) with no answer after {deadline:.1f} s; copies "
                    f"are capped at {HedgePolicy.budget_ratio:.0%} of requests, so waiting (up "
                    f"to --timeout {self.config.http.timeout:g} s)"
                )
            return False
        race.copies += 1
        race.last_sent = self._clock()
        self._summary.hedged += 1
        workers.start_soon(self._send_copy, race)
        self._progress.note(
            f"{self._stuck} request(s) with no answer after {deadline:.1f} s: sent again "
            f"({self._summary.hedged:,} so far)"
        )
        return True

    async def _send_copy(self, race: _Race) -> None:
        """A copy of a stuck request; if it is answered first, its answer is the item's."""
        scope = anyio.CancelScope()
        race.scopes.append(scope)
        with scope:
            if race.done:
                return
            if self._rate.try_acquire() > 0:
                await self._rate.acquire()
            started = self._clock()
            watched = self._watchdog.watch(started, partial(self._overdue, race))
            answer: Prediction | Exception
            try:
                async with watched:
                    answer = await _post(race.item, race.encoded, race.client)
            except RetryableError as error:
                # The original may still answer, or time out and be retried as usual.
                self._health.failure(error, race.item.id)
                if error.http_status == 429:
                    self._rate.on_rate_limited(error.retry_after, started)
                return
            except (ItemError, FatalApiError) as error:
                self._health.success(started)
                answer = error
            else:
                if watched.cut:
                    return
                self._health.success(started)
                self._rate.on_success(started)
                self._hedge.record(self._clock() - started)
            if not race.done and race.watched is not None:
                race.answer = answer
                race.watched.cut_now()

    def _settle(self, race: _Race) -> None:
        """The item's request is over: cancel copies still out, send its spare home."""
        race.done = True
        for scope in race.scopes:
            scope.cancel()
        if race.spare is not None:
            race.spare.set()
        if race.stuck:
            self._stuck -= 1

    # -- reading files ----------------------------------------------------------------------

    async def _encode(self, path: str) -> EncodedImage | None:
        """Read and encode one file, inline while reads are fast, else in a thread.

        Out of file descriptors (EMFILE/ENFILE) is the process's trouble, not the image's:
        wait for requests to finish and free some, then read again. ``None``: stopping.
        """
        config = self.config
        waited = 0.0
        delay = 0.05
        while True:
            try:
                if self._read_policy.inline() and config.max_size is None:
                    encoded, seconds = self._read(path)
                else:
                    encoded, seconds = await anyio.to_thread.run_sync(self._read, path)
            except OpenFilesExhausted as error:
                if waited >= config.retry.max_elapsed:
                    raise FatalApiError(
                        f"{error}; for {waited:.0f} s: lower --concurrency or raise the "
                        "limit (ulimit -n), then rerun the same command to resume"
                    ) from None
                self._progress.note(f"{error}: waiting for requests to finish")
                with self._unless_stopping():
                    await anyio.sleep(delay)
                if self._stopping:
                    return None
                waited += delay
                delay = min(delay * 2, 1.0)
                continue
            self._read_policy.record(seconds)
            return encoded

    def _read(self, path: str) -> tuple[EncodedImage, float]:
        """Read and encode one file; also return how long that took."""
        config = self.config
        started = time.perf_counter()
        encoded = read_and_encode(
            path,
            max_upload_bytes=config.max_upload_bytes,
            max_size=config.max_size,
            jpeg_quality=config.jpeg_quality,
        )
        return encoded, time.perf_counter() - started

    # -- sink -----------------------------------------------------------------------------

    def _record(
        self, row: dict[str, Any], *, group: str | None = None, at: str | None = None
    ) -> None:
        """Hand one finished row to the sink and count it. Called on the event loop only.

        ``group`` (with ``at``, where in its source) counts the error under one entry for its
        kind of problem instead of its own message: a manifest's bad rows are one line of the
        summary, with a few line numbers, not one line each.
        """
        if isinstance(self._fatal_error, OutputError):
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
            key = f"{row['error_type']}: {group or _strip_gave_up(row['error'])}"
            if key in errors or len(errors) < _MAX_DISTINCT_ERRORS:
                errors[key] += 1
                if at is not None:
                    places = summary.error_lines.setdefault(key, [])
                    if len(places) < _ERROR_PLACES:
                        places.append(at)
            max_failures = self.config.max_failures
            if max_failures is not None and summary.failed >= max_failures:
                self._fail(
                    BatchClassifyError(
                        f"stopped after {summary.failed} failed items (--max-failures); "
                        "see the error column of the output, then rerun to resume"
                    )
                )
        if row.get("cached"):
            summary.cache_hits, summary.shared = self._answers.hits, self._answers.shared
        elif row.get("credits") is not None:
            summary.credits += row["credits"]
            summary.costed += 1
        self._progress.row(row["status"])

    async def _flush_periodically(self) -> None:
        while True:
            await anyio.sleep(FLUSH_INTERVAL)
            self._flush()

    def _live_status(self) -> dict[str, Any]:
        """Rate control and outage facts for the progress file."""
        rate, health = self._rate, self._health
        return {
            "rate_limit_per_s": None if rate.rate is None else round(rate.rate, 2),
            "answered_429": rate.rate_limited_count,
            "paused_for_s": round(max(0.0, rate.paused_until - self._clock()), 1),
            "outage": health.is_down,
            "outage_error": health.last_error if health.is_down else None,
        }

    def _flush(self) -> None:
        try:
            self._sink.flush()
        except OutputError as error:
            self._fail(error)
        # Answers are stored with the rows they came in, so a kill -9 loses as few of them.
        if (problem := self._answers.commit()) is not None:
            self._progress.note(problem)

    def _close_answers(self) -> None:
        if (problem := self._answers.close()) is not None:
            self._progress.note(problem)


class _Race:
    """One item's request and the copies sent once it was stuck: the first answer wins."""

    __slots__ = (
        "answer",
        "client",
        "copies",
        "done",
        "encoded",
        "item",
        "items_in",
        "last_sent",
        "refused",
        "scopes",
        "spare",
        "stuck",
        "watched",
    )

    def __init__(
        self,
        item: Item,
        encoded: EncodedImage | None,
        client: ClassificationClient,
        items_in: MemoryObjectReceiveStream[Item],
        started: float,
    ) -> None:
        self.item = item
        self.last_sent = started  # when the latest request for the item went out
        self.encoded = encoded
        self.client = client
        self.items_in = items_in
        self.watched: Watched | None = None
        self.answer: Prediction | Exception | None = None
        self.copies = 0
        self.scopes: list[anyio.CancelScope] = []
        self.spare: anyio.Event | None = None
        self.stuck = False
        self.refused = False
        self.done = False


def _post(
    item: Item, encoded: EncodedImage | None, client: ClassificationClient
) -> Awaitable[Prediction]:
    if encoded is not None:
        return client.classify_bytes(encoded.body)
    return client.classify_url(item.url or "")


def _strip_gave_up(message: str | None) -> str:
    message = message or ""
    cut = message.rfind(" (gave up after ")
    return message[:cut] if cut != -1 else message


def _with_api_url(http: HttpConfig, api_url: str) -> HttpConfig:
    return http if http.api_url == api_url else replace(http, api_url=api_url)


async def run_job(
    config: JobConfig,
    *,
    progress: ProgressListener | None = None,
    stdin: TextIO | None = None,
) -> JobSummary:
    """Run one job to the end and return its summary.

    Raises ``UsageError`` or ``OutputError`` before anything is sent if the input or output is
    unusable. A fatal API answer (bad key, unknown model) ends the job early: the summary's
    ``fatal`` says why and its ``exit_code`` is 3.
    """
    return await Job(config, progress=progress, stdin=stdin).run()


def classify(
    config: JobConfig,
    *,
    progress: ProgressListener | None = None,
    stdin: TextIO | None = None,
) -> JobSummary:
    """Run one job to the end and return its summary: ``run_job`` for synchronous code.

    Works in scripts and inside a running event loop alike (a Jupyter notebook): the job runs
    on a worker thread with its own event loop while the caller waits, so ``progress``'s
    methods are called on that thread. Ctrl-C (or a notebook's interrupt) stops the job as
    the CLI's does: requests in flight finish, every row is written, then
    ``KeyboardInterrupt`` is raised; a second one cuts the requests off. Rerun to resume.
    """
    with start_blocking_portal() as portal:
        job = portal.call(lambda: Job(config, progress=progress, stdin=stdin))
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
