"""What a person sees: a tqdm progress bar while the job runs, a summary when it ends."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
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
    if summary.rate_limited:
        extra += f", {summary.rate_limited:,} answered 429"
    lines.append(f"{summary.processed:,} images in {summary.elapsed:,.1f} s ({rate}), {extra}")
    lines.extend(_input_lines(summary))
    if summary.errors:
        lines.append("top errors:")
        for message, count in summary.errors.most_common(top_errors):
            places = summary.error_lines.get(message)
            if places:
                message = f"{message} ({_places(places, count)})"
            lines.append(f"  {count:>7,} × {message}")
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


def _places(places: list[str], count: int) -> str:
    """``["line 3", "line 7"]`` -> ``"lines 3, 7"``, with ``…`` when there are more."""
    words = {place.partition(" ")[0] for place in places}
    if len(places) > 1 and len(words) == 1:
        text = f"{words.pop()}s " + ", ".join(place.partition(" ")[2] for place in places)
    else:
        text = ", ".join(places)
    return text + (", …" if count > len(places) else "")


def _input_lines(summary: JobSummary) -> list[str]:
    """Files passed over, and a warning for each source (or the job) with nothing to do."""
    inputs = summary.inputs
    lines = []
    skipped = []
    if inputs.skipped_extensions:
        total = sum(inputs.skipped_extensions.values())
        seen = ", ".join(
            f"{count:,} .{ext}" if ext else f"{count:,} without one"
            for ext, count in inputs.skipped_extensions.most_common(5)
        )
        skipped.append(f"{total:,} files with an extension not in --extensions ({seen})")
    if inputs.skipped_hidden:
        skipped.append(f"{inputs.skipped_hidden:,} hidden (names starting with '.')")
    if skipped:
        lines.append("skipped in folders: " + "; ".join(skipped))
    hint = _extensions_hint(inputs.skipped_extensions)
    if summary.nothing_found:
        lines.append(f"nothing to classify: no images found in {_sources(inputs.empty_sources)}")
        lines.append(hint or "check the paths, and that folders hold images")
    elif inputs.empty_sources:
        lines.append(f"warning: no images found in {_sources(inputs.empty_sources)}")
    return lines


def _sources(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _extensions_hint(skipped: Counter[str]) -> str | None:
    """An ``--extensions`` naming the commonest extensions passed over, if any had one."""
    named = [ext for ext, _ in skipped.most_common(3) if ext]
    if not named:
        return None
    return (
        "to pick them up, name them in --extensions (which replaces the default list), "
        f"e.g. --extensions {','.join(named)}"
    )
