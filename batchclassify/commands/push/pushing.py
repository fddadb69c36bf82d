"""The push: bounded workers upload each image, then save its classes as a prediction.

The same machinery as a classification job: ``--concurrency`` workers under one task group,
a request starts only when the rate controller (``ratelimit.py``) gives a slot and the API is
not down (``health.py``: an outage pauses new work and is probed), the attempt policy
(``attempts.py``) decides after each failure (retry after ``Retry-After`` or backoff, give
up, stop), and a fatal answer (401/402/403/404/423) stops the push at once. Every outcome
is a ledger event as soon as it is known (``ledger.py``): an item already uploaded is only
annotated, one annotated is left alone, so a rerun after Ctrl-C or kill -9 sends only what
is missing. A file is read and checked to be an image before its upload; one that is not,
or cannot be read, is a failure in the ledger, never sent.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio

from ...api.dataset import DatasetClient, Uploaded, annotation_text
from ...api.transport import Transport
from ...config import MAX_UPLOAD_BYTES, HttpConfig
from ...error_types import ErrorType
from ...errors import ItemError, JobStopped, OutputError, RetryableError
from ...inputs.encoding import image_type
from ...job.attempts import AttemptPolicy, GiveUp, StopJob
from ...job.health import HealthMonitor, flow_status
from ...job.ratelimit import RateController
from ...job.stopping import StopSignal
from ...summary import Progress, ProgressListener, SilentProgress
from .ledger import Ledger
from .options import PushOptions
from .progressfile import PushProgressFile
from .selection import PushItem
from .summary import PushSummary

_T = TypeVar("_T")


class _Stopped:
    """The push is stopping: the item is left for a rerun."""


class _Failed:
    """The item failed (recorded in the ledger)."""


_STOPPED = _Stopped()
_FAILED = _Failed()


def is_done(item: PushItem, ledger: Ledger, *, overwrite: bool) -> bool:
    """Whether the ledger says ``item`` needs nothing more: annotated (with the same
    classes, when annotations are overwritten), or uploaded with no class to annotate."""
    entry = ledger.entries.get(item.id)
    if entry is None or entry.image_id is None:
        return False
    if not item.classes:
        return True
    if not entry.annotated:
        return False
    return not overwrite or entry.annotation == _annotation(item)


def _annotation(item: PushItem) -> str:
    return annotation_text(item.classes, multilabel=item.multilabel)


class Pusher:
    """One push of ``items`` (already selected) to ``options.project``."""

    def __init__(
        self,
        options: PushOptions,
        http: HttpConfig,
        items: list[PushItem],
        ledger: Ledger,
        *,
        model: str | None,
        progress: ProgressListener | None = None,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._options = options
        self._http = http
        self._ledger = ledger
        self._model = model
        self._display = progress or SilentProgress()
        self._transport = transport
        self._clock = clock
        self.summary = PushSummary(selected=len(items))
        # OUTPUT.push-TARGET.progress.json for `batchclassify status`, shown what the display is.
        self.progress_file = PushProgressFile(
            options.output,
            self.summary,
            project=options.project,
            api_url=options.http.servers[0],
            ledger=ledger.path,
            secret=http.api_key,
            live=self._live_status,
            clock=clock,
        )
        self._listeners: tuple[ProgressListener, ...] = (self._display, self.progress_file)
        self._in_flight: Counter[str] = Counter()
        overwrite = options.overwrite_annotations
        self._todo = [item for item in items if not is_done(item, ledger, overwrite=overwrite)]
        self.summary.done_before = len(items) - len(self._todo)
        self._stop = StopSignal()
        self._rate = RateController(
            rate=options.rate.requests_per_second, adaptive=options.rate.adaptive, clock=clock
        )
        self._health = HealthMonitor(
            max_outage=options.outage.max_outage,
            outage_after=options.outage.outage_after,
            probe_initial=options.outage.probe_initial,
            probe_max=options.outage.probe_max,
            clock=clock,
            notify=self._note,
            servers=http.servers,
        )
        self._policy = AttemptPolicy(
            options.retry, health=self._health, rate=self._rate, clock=clock
        )
        self._cancel: anyio.CancelScope | None = None

    @property
    def pending(self) -> int:
        """Items this run has to push (the selection less what the ledger says is done)."""
        return len(self._todo)

    def request_stop(self) -> None:
        """Stop gently: no new item, no new wait; requests on the wire finish."""
        self.summary.interrupted = True
        self._stop.request()

    def cancel(self) -> None:
        """Stop at once: requests in flight are cut (their items are left for a rerun)."""
        self.request_stop()
        if self._cancel is not None:
            self._cancel.cancel()

    async def run(self) -> PushSummary:
        started = self._clock()
        self._show(self._snapshot())
        queue = iter(self._todo)
        try:
            async with (
                DatasetClient(
                    self._http, project=self._options.project, transport=self._transport
                ) as client,
                anyio.create_task_group() as group,
            ):
                self._cancel = group.cancel_scope
                group.start_soon(self._tick)
                async with anyio.create_task_group() as workers:
                    for _ in range(min(self._http.concurrency, max(1, len(self._todo)))):
                        workers.start_soon(self._work, queue, client)
                group.cancel_scope.cancel()  # the ticker
        finally:
            self.summary.elapsed = self._clock() - started
            self._show(self._snapshot(finished=True))
        if self.summary.stopped_by is not None:
            self.summary.interrupted = False
        return self.summary

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(1.0)
            self._show(self._snapshot())

    def _show(self, progress: Progress) -> None:
        for listener in self._listeners:
            listener.progress(progress)

    def _note(self, text: str | None) -> None:
        for listener in self._listeners:
            listener.note(text)

    def _live_status(self) -> dict[str, Any]:
        """What the push is doing now, for its progress file: the stage, the requests in
        flight by kind, rate control and outages."""
        if self._stop.requested:
            stage = "stopping"  # requests on the wire finish; no new ones
        elif self._health.is_down:
            stage = "waiting for the API"
        else:
            stage = "pushing"
        return {
            "stage": stage,
            "in_flight": {kind: self._in_flight[kind] for kind in ("upload", "annotate")},
            **flow_status(self._rate, self._health, self._clock()),
        }

    def _snapshot(self, *, finished: bool = False) -> Progress:
        """Where the push stands, for the progress bar: every selected item is known from
        the start, so the total is exact."""
        total = self.summary.done_before + len(self._todo)
        return Progress(
            already_done=self.summary.done_before,
            ok=self.summary.pushed,
            failed=self.summary.failed,
            retries=self.summary.retries,
            total=total,
            total_is_exact=True,
            found=total,
            waiting=None,
            finished=finished,
        )

    def _fail(self, error: JobStopped | OutputError) -> None:
        """Stop the push at once for ``error`` (the first one wins)."""
        if self.summary.stopped_by is None:
            self.summary.stopped_by = error
        self._stop.request()
        if self._cancel is not None:
            self._cancel.cancel()

    async def _work(self, queue: Iterator[PushItem], client: DatasetClient) -> None:
        for item in queue:
            if self._stop.requested:
                return
            try:
                await self._push(item, client)
            except (JobStopped, OutputError) as error:
                self._fail(error)
                return

    async def _push(self, item: PushItem, client: DatasetClient) -> None:
        """Upload the item unless the ledger has its image id, then annotate it."""
        summary, options = self.summary, self._options
        entry = self._ledger.entries.get(item.id)
        image_id = entry.image_id if entry is not None else None
        if image_id is None:
            uploaded = await self._upload(item, client)
            if not isinstance(uploaded, Uploaded):
                return
            image_id = uploaded.image_id
            self._ledger.record(
                {
                    "id": item.id,
                    "uploaded": image_id,
                    "duplicate": uploaded.duplicate,
                    "split": item.split,
                }
            )
            summary.uploaded += 1
            summary.duplicates += uploaded.duplicate
        if not item.classes:
            summary.unlabelled += 1
            summary.pushed += 1
            return
        overwrite = options.overwrite_annotations
        saved = await self._send(
            item,
            "annotate",
            lambda: client.annotate(
                image_id,
                item.classes,
                multilabel=item.multilabel,
                job_name=self._job_name,
                prediction=True,
                overwrite=overwrite,
            ),
        )
        if not isinstance(saved, bool):
            return
        self._ledger.record(
            {
                "id": item.id,
                "annotated": image_id,
                "annotation": _annotation(item),
                "already": not saved,
            }
        )
        summary.annotated += saved
        summary.already_annotated += not saved
        summary.pushed += 1

    @property
    def _job_name(self) -> str:
        return self._options.batch or default_batch(self._model)

    async def _upload(self, item: PushItem, client: DatasetClient) -> Uploaded | _Failed | _Stopped:
        options = self._options
        batch = options.batch or default_batch(self._model)
        metadata = self._metadata(item)
        if item.path is None:
            assert item.url is not None
            url = item.url
            name = os.path.basename(url.split("?", 1)[0].rstrip("/")) or "image"
            return await self._send(
                item,
                "upload",
                lambda: client.upload_url(
                    url,
                    name=name,
                    split=item.split,
                    batch=batch,
                    tags=options.tags,
                    metadata=metadata,
                ),
            )
        try:
            data, content_type = await anyio.to_thread.run_sync(read_image, item.path)
        except ItemError as error:
            self._failed(item, "read", error)
            return _FAILED
        name = os.path.basename(item.path)
        result = await self._send(
            item,
            "upload",
            lambda: client.upload_file(
                data,
                name=name,
                split=item.split,
                content_type=content_type,
                batch=batch,
                tags=options.tags,
                metadata=metadata,
            ),
        )
        if isinstance(result, Uploaded):
            self.summary.bytes_sent += len(data)
        return result

    def _metadata(self, item: PushItem) -> dict[str, Any]:
        """What Roboflow keeps with the image: where it came from and what the model said."""
        metadata: dict[str, Any] = {"batchclassify_id": item.id}
        if self._model is not None:
            metadata["model"] = self._model
        if item.confidence is not None:
            metadata["confidence"] = round(item.confidence, 4)
        return metadata

    async def _send(
        self, item: PushItem, stage: str, call: Callable[[], Awaitable[_T]]
    ) -> _T | _Failed | _Stopped:
        """One request until it has an answer, doing what the attempt policy decides after
        each failure; a fatal answer raises (``FatalApiError``) and stops the push.

        The rule is ``attempts.py``'s, shared; this loop only carries out its decisions, as
        ``job/requesting.ItemRequests.request`` does for classifications (that one builds
        rows from a ``Prediction`` and feeds the hedging deadline, inline for the hot path)."""
        attempts = self._policy.start(item.id)
        health, rate, stop = self._health, self._rate, self._stop
        while True:
            if health.is_down or rate.try_acquire() > 0:
                with stop.unless_stopping():
                    await health.wait_until_available()
                    if not health.gave_up:
                        await rate.acquire()
            if stop.requested:
                return _STOPPED
            decision = attempts.next_request()
            if isinstance(decision, StopJob):
                self._fail(decision.error)
                return _STOPPED
            started = attempts.sending()
            self.summary.requests += 1
            self._in_flight[stage] += 1
            try:
                try:
                    result = await call()
                finally:
                    self._in_flight[stage] -= 1
            except RetryableError as error:
                after = attempts.failed(error, started)
                if isinstance(after, GiveUp):
                    self._failed(item, stage, after.error, message=after.message)
                    return _FAILED
                if stop.requested:
                    return _STOPPED
                self.summary.retries += 1
                await stop.pause(after.seconds)
                continue
            except ItemError as error:
                health.success(started)
                rate.on_answer(started)  # a 4xx about the image: the server saw the request
                self._failed(item, stage, error)
                return _FAILED
            health.success(started)
            rate.on_success(started)
            return result

    def _failed(
        self, item: PushItem, stage: str, error: ItemError, *, message: str | None = None
    ) -> None:
        text = message or str(error)
        self._ledger.record(
            {
                "id": item.id,
                "failed": stage,
                "error_type": str(error.kind),
                "http_status": error.http_status,
                "error": text,
            }
        )
        self.summary.failed += 1
        self.summary.errors[f"{stage}: {error}"] += 1


def default_batch(model: str | None) -> str:
    """The upload batch (and annotation job) name when ``--batch`` is not given."""
    return f"batchclassify {model}" if model else "batchclassify"


def read_image(path: str) -> tuple[bytes, str]:
    """A file's bytes and MIME type; ``ItemError`` for a file that cannot be uploaded: gone,
    unreadable, empty, over the 20 MB upload limit, or not an image."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_UPLOAD_BYTES + 1)
    except FileNotFoundError:
        raise ItemError(f"{path}: no such file", kind=ErrorType.MISSING_FILE) from None
    except OSError as exc:
        raise ItemError(
            f"{path}: cannot read it ({exc.strerror})", kind=ErrorType.UNREADABLE
        ) from None
    if not data:
        raise ItemError(f"{path}: the file is empty", kind=ErrorType.EMPTY_FILE)
    if len(data) > MAX_UPLOAD_BYTES:
        raise ItemError(
            f"{path}: over Roboflow's {MAX_UPLOAD_BYTES // (1024 * 1024)} MB upload limit",
            kind=ErrorType.TOO_LARGE,
        )
    try:
        return data, image_type(data)
    except ItemError as error:
        raise ItemError(f"{path}: {error}", kind=error.kind) from None
