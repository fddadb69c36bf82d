"""What a person sees: a tqdm progress bar while the job runs, a summary when it ends."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from tqdm import tqdm

from .summary import JobSummary


class ProgressBar:
    """A tqdm bar whose total grows as folders are walked, with ok / failed / retried counts."""

    def __init__(self, *, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._bar: tqdm | None = None
        self._ok = 0
        self._failed = 0
        self._retried = 0
        self._note: str | None = None
        self._last_postfix = 0.0

    def started(self, *, already_done: int) -> None:
        if not self._enabled:
            return
        sized = _terminal_width(self._stream) > 0
        self._bar = tqdm(
            total=already_done,
            initial=already_done,
            unit="img",
            file=self._stream,
            # Follow the terminal's size, unless it reports none (some ptys): tqdm would then
            # draw nothing at all.
            dynamic_ncols=sized,
            ncols=None if sized else 100,
            nrows=None if sized else 24,
            mininterval=0.2,
            smoothing=0.05,
            desc="classifying",
        )

    def add_total(self, count: int) -> None:
        if self._bar is not None and count:
            self._bar.total += count
            self._bar.refresh()

    def row(self, status: str) -> None:
        if status == "ok":
            self._ok += 1
        else:
            self._failed += 1
        if self._bar is not None:
            self._bar.update(1)
            self._postfix()

    def retried(self) -> None:
        self._retried += 1

    def note(self, text: str | None) -> None:
        self._note = text
        self._postfix(force=True)

    def _postfix(self, force: bool = False) -> None:
        # set_postfix redraws the bar; doing it for every row would cost more than the row.
        now = time.monotonic()
        if self._bar is None or (not force and now - self._last_postfix < 0.5):
            return
        self._last_postfix = now
        text = f"ok={self._ok} failed={self._failed} retried={self._retried}"
        if self._note:
            # First: tqdm cuts the line at the terminal's width, and the note is the news.
            text = f"{self._note} | {text}"
        self._bar.set_postfix_str(text, refresh=force)

    def finished(self) -> None:
        if self._bar is not None:
            self._postfix(force=True)
            self._bar.close()
            self._bar = None


def _terminal_width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def format_summary(summary: JobSummary, *, top_errors: int = 5) -> str:
    """The few lines printed at the end of a job."""
    lines = []
    skipped = []
    if summary.already_done:
        skipped.append(f"{summary.already_done:,} already done")
    if summary.previously_failed:
        skipped.append(
            f"{summary.previously_failed:,} failed in an earlier run (--retry-failed retries them)"
        )
    if summary.duplicates:
        skipped.append(f"{summary.duplicates:,} duplicates skipped")
    head = f"{summary.ok:,} ok, {summary.failed:,} failed"
    if skipped:
        head += ", " + ", ".join(skipped)
    lines.append(head)
    rate = f"{summary.images_per_second:,.1f} images/s"
    extra = f"{summary.retries:,} retries"
    if summary.hedged:
        extra += f", {summary.hedged:,} hedged (sent again: no answer in time)"
    if summary.rate_limited:
        extra += f", {summary.rate_limited:,} answered 429"
    lines.append(f"{summary.processed:,} images in {summary.elapsed:,.1f} s ({rate}), {extra}")
    if summary.errors:
        lines.append("top errors:")
        for message, count in summary.errors.most_common(top_errors):
            lines.append(f"  {count:>7,} × {message}")
    lines.extend(f"note: {note}" for note in summary.notes)
    lines.append(f"results: {summary.output}")
    if summary.fatal is not None:
        lines.append(f"stopped: {summary.fatal}")
    elif summary.interrupted:
        # With --overwrite, the same command would start over: say how to resume instead.
        again = (
            "the same command without --overwrite" if summary.started_over else "the same command"
        )
        lines.append(f"interrupted — rerun {again} to resume")
    return "\n".join(lines)
