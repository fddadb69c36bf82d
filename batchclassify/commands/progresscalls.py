"""``--notify-every PERCENT``: a progress call to ``--notify``'s URL each time the job passes
another PERCENT of its total.

Percent is of the whole collection, as the progress bar and ``status`` count it: items done
(an earlier run's included) over the expected total (the same). A resumed run calls only the
thresholds above where it started. While the total is not known (the count runs beside the
job; stdin has none) nothing is called; once it is, the thresholds passed meanwhile make one
call. Several thresholds passed at once make one call saying where the job is; a threshold is
called once, even if the total (an estimate until the listing ends) grows and the share falls
back; 100% is never called: the end call (``notify.py``) says it.

The job is never slowed: the listener decides on the event loop and hands the body to a
thread that POSTs it (``notify.post``: signed, redacted, few short tries). One call is in
flight at most; a call due while another is being sent waits in a single slot, and a later
one replaces it (coalesced: the receiver hears the newest position, never a backlog). At the
end, the waiting one is dropped and the one in flight may finish its current try, no more,
before the end call goes out. Failures are counted and said once, with the end call's line.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from ..api.redaction import redact
from ..summary import JobSummary, Progress, ProgressListener
from .notify import Notifier, post, shown

#: A progress call's tries, the time they may take in all, and one try's timeout: short,
#: since a newer position will follow, and the end waits for at most one try.
ATTEMPTS = 2
TOTAL_SECONDS = 5.0
ATTEMPT_SECONDS = 2.0

#: ``send(body, closing)``: whether it was delivered, and the answer or the problem; it
#: should stop trying once ``closing`` is set (the job ended).
Send = Callable[[bytes, threading.Event], tuple[bool, str]]


class Thresholds:
    """Which threshold (a multiple of ``every`` below 100) a position has newly passed."""

    def __init__(self, every: float) -> None:
        if not 0 < every < 100:
            raise ValueError(f"every must be between 0 and 100 (exclusive), not {every}")
        self.every = every
        self._top = math.ceil(100 / every - 1e-9) - 1  # the last multiple below 100
        self._passed: int | None = None  # set once the total is known

    def crossed(self, *, done: int, total: int | None, already_done: int) -> float | None:
        """The highest threshold ``done`` of ``total`` passed that was not called before
        (``None``: no call). The thresholds behind ``already_done`` are never called."""
        if total is None or total <= 0:
            return None
        if self._passed is None:
            self._passed = min(self._index(already_done, total), self._top)
        if done >= total:
            return None  # 100%: the end call's
        index = min(self._index(done, total), self._top)
        if index <= self._passed:
            return None
        self._passed = index
        threshold = round(index * float(self.every), 6)
        return int(threshold) if threshold.is_integer() else threshold  # 20, not 20.0

    def _index(self, done: int, total: int) -> int:
        # The small slack keeps 30% of 10 at threshold 3 despite binary fractions.
        return math.floor(100 * done / total / self.every + 1e-9)


class ProgressCalls:
    """A ``ProgressListener`` that makes the progress calls; ``close`` at the end."""

    def __init__(
        self,
        *,
        every: float,
        url: str,
        output: str,
        secret: str | None = None,
        api_key: str | None = None,
        send: Send | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._thresholds = Thresholds(every)
        self._url = url
        self._output = output
        self._api_key = api_key
        self._clock = clock
        if send is None:

            def send(body: bytes, closing: threading.Event) -> tuple[bool, str]:
                # The pause between tries ends at once when the job ends: no more tries then.
                return post(
                    url,
                    body,
                    secret=secret,
                    api_key=api_key,
                    attempts=ATTEMPTS,
                    total_seconds=TOTAL_SECONDS,
                    attempt_seconds=ATTEMPT_SECONDS,
                    sleep=closing.wait,
                    give_up=closing.is_set,
                )

        self._sender = _Sender(send)
        self._summary: JobSummary | None = None
        self._last: Progress | None = None
        self._started: float | None = None
        self._ok_since = self._failed_since = 0  # rows recorded after the last snapshot

    @classmethod
    def wanted_by(cls, notifier: Notifier, output: Path) -> ProgressCalls | None:
        """The listener making ``--notify-every``'s calls (``None`` without it)."""
        if notifier.every is None or notifier.url is None:
            return None
        return cls(
            every=notifier.every,
            url=notifier.url,
            output=str(output),
            secret=notifier.secret,
            api_key=notifier.api_key,
        )

    def follow(self, summary: JobSummary) -> None:
        """Read retries and credits off the job's live summary (a lone job's; without it, as
        under ``--processes``, retries are the snapshots' and credits unknown)."""
        self._summary = summary

    # -- ProgressListener (on the job's event loop) ------------------------------------------

    def progress(self, progress: Progress) -> None:
        if self._started is None:
            self._started = self._clock()
        self._last = progress
        self._ok_since = self._failed_since = 0
        if not progress.finished:
            self._check()

    def row(self, row: Mapping[str, Any]) -> None:
        if row["status"] == "ok":
            self._ok_since += 1
        else:
            self._failed_since += 1
        self._check()

    def note(self, text: str | None) -> None:
        pass

    # -- the calls ---------------------------------------------------------------------------

    def _check(self) -> None:
        last = self._last
        if last is None:
            return
        done = last.done + self._ok_since + self._failed_since
        total = None if last.total is None else max(last.total, done)
        threshold = self._thresholds.crossed(done=done, total=total, already_done=last.already_done)
        if threshold is not None:
            assert total is not None
            body = orjson.dumps(self.payload(threshold, done=done, total=total)).decode()
            self._sender.submit(redact(body, self._api_key).encode())

    def payload(self, threshold: float, *, done: int, total: int) -> dict[str, Any]:
        """The end call's shape (``notify.payload``) with ``event`` telling them apart: where
        the job is, how fast it goes, and what it has spent."""
        last, summary = self._last, self._summary
        assert last is not None and self._started is not None
        elapsed = self._clock() - self._started
        rows = done - last.already_done
        rate = rows / elapsed if elapsed > 0 else None
        eta = (total - done) / rate if rate else None
        spent = None if summary is None else summary.credits
        cap = None if summary is None else summary.max_credits
        return {
            "event": "batchclassify.job.progress",
            "state": "running",
            "output": self._output,
            "threshold": threshold,
            "percent": round(100 * done / total, 2),
            "done": done,
            "total": total,
            "total_is_exact": last.total_is_exact,
            "duration_s": round(elapsed, 3),
            "images_per_s": None if rate is None else round(rate, 2),
            "eta_s": None if eta is None else round(eta),
            "counts": {
                "ok": last.ok + self._ok_since,
                "failed": last.failed + self._failed_since,
                "already_done": last.already_done,
                "retries": last.retries if summary is None else summary.retries,
            },
            "credits": {
                "billing": None if summary is None else summary.billing,
                "spent": None if spent is None else round(spent, 6),
                "max_credits": cap,
                "left": None if cap is None or spent is None else round(max(0.0, cap - spent), 6),
            },
        }

    def close(self) -> list[str]:
        """Stop sending (the waiting call dropped, the one in flight given its current try);
        a line to show if any call failed."""
        self._sender.close(wait=ATTEMPT_SECONDS + 0.5)
        sender = self._sender
        if not sender.failed:
            return []
        return [
            f"notify: {sender.failed} of {sender.tried} progress calls could not be sent to "
            f"{shown(self._url)}: {sender.problem}"
        ]


class _Sender:
    """POSTs bodies on a thread of its own, one at a time; a body submitted while one is
    being sent waits in a single slot, where a later one replaces it."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._waiting: bytes | None = None
        self._thread: threading.Thread | None = None
        self.tried = self.failed = self.coalesced = 0
        self.problem = ""

    def submit(self, body: bytes) -> None:
        with self._lock:
            if self._closing.is_set():
                return
            if self._waiting is not None:
                self.coalesced += 1
            self._waiting = body
            if self._thread is not None:
                return  # the running thread takes it when its call is over
            self._thread = threading.Thread(
                target=self._drain, name="batchclassify-notify", daemon=True
            )
            self._thread.start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                body, self._waiting = self._waiting, None
                if body is None or self._closing.is_set():
                    self._thread = None
                    return
                self.tried += 1
            sent, said = self._send(body, self._closing)
            if not sent:
                with self._lock:
                    self.failed += 1
                    self.problem = said

    def close(self, *, wait: float) -> None:
        with self._lock:
            self._closing.set()
            self._waiting = None
            thread = self._thread
        if thread is not None:
            thread.join(wait)


class Tee:
    """Shows every listener what the job shows it, in order."""

    def __init__(self, *listeners: ProgressListener) -> None:
        self._listeners = listeners

    def progress(self, progress: Progress) -> None:
        for listener in self._listeners:
            listener.progress(progress)

    def row(self, row: Mapping[str, Any]) -> None:
        for listener in self._listeners:
            listener.row(row)

    def note(self, text: str | None) -> None:
        for listener in self._listeners:
            listener.note(text)
