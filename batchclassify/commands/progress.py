"""What a person sees: a progress bar on a terminal, log lines off one, a summary at the end.

On a terminal (stderr is a tty) a tqdm bar; elsewhere (a log file of an overnight job, CI)
a line a minute with done/total/rate/ETA, plus a line whenever the job starts or stops
waiting for something (a rate-limit pause, an outage, stuck requests).

The total comes from the job's snapshots (``summary.Progress``, kept by
``job/tracking.py``): the items the sources hold, less those the job skips (recorded by an
earlier run, duplicates). Until it is known, the bar shows items done and the rate without
a percentage or a total.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TextIO

from ..cost import cost_text
from ..names import printable
from ..summary import JobSummary, Progress

if TYPE_CHECKING:  # imported when a bar is drawn: off a terminal a job never loads tqdm
    from tqdm import tqdm

Style = Literal["bar", "log", "off"]

#: Off a terminal, a progress line this often (seconds).
LOG_INTERVAL = 60.0


class ProgressBar:
    """The job's progress for a person: a tqdm bar, log lines, or nothing. A
    ``ProgressListener``: ``run`` shows it its job's snapshots, ``run --processes`` the sum
    of its shards' progress files.

    ``enabled``: ``True`` draws the bar (on any stream), ``False`` shows nothing, ``None``
    (default) draws the bar on a terminal and writes log lines anywhere else.
    """

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        log_interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        desc: str = "classifying",
    ) -> None:
        self._stream = stream or sys.stderr
        self._desc = desc
        self.style: Style = (
            ("bar" if self._stream.isatty() else "log")
            if enabled is None
            else ("bar" if enabled else "off")
        )
        self._log_interval = log_interval
        self._clock = clock
        self._bar: tqdm | None = None
        self._started = False
        self._already_done = 0
        self._ok = 0
        self._failed = 0
        self._retried = 0
        self._total: int | None = None
        self._told_total = False  # the total has been logged
        self._note: str | None = None
        self._wait_text: str | None = None
        self._last_postfix = 0.0
        self._last_line = clock()  # the last progress line (not news) written
        self._rows_at_last_line = 0

    @property
    def _done(self) -> int:
        return self._already_done + self._ok + self._failed

    def progress(self, progress: Progress) -> None:
        """A snapshot: the counts and total to show; on the first, the display starts; on a
        ``finished`` one, it ends."""
        if not self._started:
            self._start(progress.already_done)
        self._already_done = progress.already_done
        self._ok, self._failed, self._retried = progress.ok, progress.failed, progress.retries
        self._set_total(progress.total)
        if progress.waiting != self._wait_text:
            self._log_change(progress.waiting, self._wait_text)
            self._wait_text = progress.waiting
        if self._bar is not None:
            self._postfix(force=True)
        elif self.style == "log" and self._clock() - self._last_line >= self._log_interval:
            self._log(self._progress_line())
        if progress.finished:
            self._finish()

    def _start(self, already_done: int) -> None:
        self._started = True
        self._last_line = self._clock()
        if self.style != "bar":
            return
        from tqdm import tqdm  # here, not at the top: ~10 ms of import a log-only job skips

        sized = _terminal_width(self._stream) > 0
        self._bar = tqdm(
            total=None,  # unknown until counted: no percentage rather than a wrong one
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
            desc=self._desc,
        )

    def _set_total(self, total: int | None) -> None:
        self._total = total
        if total is not None and not self._told_total and self.style == "log":
            self._told_total = True
            before = self._already_done
            done = f" ({before:,} of them done before)" if before else ""
            self._log(f"{total:,} items in all{done}")
        # tqdm's ETA is (total - n) / rate, its rate counts only update()s (this run's rows,
        # not the ``initial`` done before): both right once the total is.
        bar = self._bar
        if bar is None:
            return
        if bar.n != self._done:  # progress told whole (run --processes), not row by row
            bar.initial = self._already_done
            bar.n = self._done
        if total != bar.total:
            bar.total = total
            bar.refresh()

    def row(self, row: Mapping[str, Any]) -> None:
        if row["status"] == "ok":
            self._ok += 1
        else:
            self._failed += 1
        if self._bar is not None:
            if self._bar.total is not None and self._done > self._bar.total:
                self._bar.total = self._done  # more than counted: files added meanwhile
            self._bar.update(1)
            self._postfix()

    def note(self, text: str | None) -> None:
        """News from the job (an outage, stuck requests, a stop); ``None`` clears it."""
        if text != self._note:
            self._log_change(text, self._note)
        self._note = text
        self._postfix(force=True)

    def _postfix(self, force: bool = False) -> None:
        # set_postfix redraws the bar; doing it for every row would cost more than the row.
        now = time.monotonic()
        if self._bar is None or (not force and now - self._last_postfix < 0.5):
            return
        self._last_postfix = now
        text = self._counts()
        news = self._news()
        if news:
            # First: tqdm cuts the line at the terminal's width, and the note is the news.
            text = f"{news} | {text}"
        self._bar.set_postfix_str(printable(text), refresh=force)

    def _counts(self) -> str:
        return f"ok={self._ok} failed={self._failed} retried={self._retried}"

    def _news(self) -> str:
        return " | ".join(text for text in (self._note, self._wait_text) if text)

    # -- off a terminal -------------------------------------------------------------------

    def _progress_line(self) -> str:
        """Done/total (%), the rate since the last line, ETA, counts, and what the job waits
        for: the line written off a terminal."""
        now = self._clock()
        done, total, rows = self._done, self._total, self._ok + self._failed
        elapsed = now - self._last_line
        rate = (rows - self._rows_at_last_line) / elapsed if elapsed > 0 else 0.0
        self._last_line, self._rows_at_last_line = now, rows
        if total is None:
            head = f"{done:,} done (total not counted yet)"
        else:
            share = 100.0 * done / total if total else 100.0
            head = f"{done:,}/{total:,} done ({share:.1f}%)"
        line = f"{head}, {rate:,.1f} images/s"
        if total is not None and done < total:
            line += f", ETA {_duration((total - done) / rate)}" if rate > 0 else ", ETA unknown"
        line += f" ({self._counts().replace('=', ' ')})"
        news = self._news()
        return f"{line}; waiting: {news}" if news else line

    def _log_change(self, text: str | None, previous: str | None) -> None:
        if self.style != "log":
            return
        if text is not None:
            self._log(text)
        elif previous is not None:
            self._log(f"no longer waiting ({_first_clause(previous)})")

    def _log(self, text: str) -> None:
        stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
        print(printable(f"[{stamp}] batchclassify: {text}"), file=self._stream, flush=True)

    def _finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 05 min``: an ETA a person reads at a glance."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _first_clause(text: str) -> str:
    """``API unavailable`` of ``API unavailable, retrying in 4 s (...)``."""
    for stop in (",", " (", ":"):
        cut = text.find(stop)
        if cut > 0:
            text = text[:cut]
    return text


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
    lines.extend(_saving_lines(summary))
    lines.extend(_input_lines(summary))
    if summary.servers:
        from ..api.fleet import server_lines

        lines.append(f"servers ({len(summary.servers)}):")
        lines.extend(server_lines(summary.servers))
    if summary.errors:
        lines.append("top errors:")
        for message, count in summary.errors.most_common(top_errors):
            places = summary.error_lines.get(message)
            if places:
                message = f"{message} ({_places(places, count)})"
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


def _saving_lines(summary: JobSummary) -> list[str]:
    """Requests not made (cache, identical images in flight, resume) and what was paid."""
    lines = []
    saved = []
    if summary.cache_hits:
        saved.append(f"{summary.cache_hits:,} answered from the cache")
    if summary.shared:
        saved.append(f"{summary.shared:,} shared an identical image's request")
    if summary.already_done:
        saved.append(f"{summary.already_done:,} done in an earlier run")
    if saved and (summary.requests_saved or summary.costed):
        total = summary.requests_saved + summary.already_done
        lines.append(f"requests saved: {total:,} ({', '.join(saved)})")
    lines.extend(
        cost_text(
            credits=summary.credits,
            costed=summary.costed,
            uncosted=summary.uncosted,
            billing=summary.billing,
            max_credits=summary.max_credits,
            spent=summary.budget_spent,
        )
    )
    return lines


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
        files = "file" if total == 1 else "files"
        skipped.append(f"{total:,} {files} with an extension not in --extensions ({seen})")
    if inputs.skipped_hidden:
        skipped.append(f"{inputs.skipped_hidden:,} hidden (names starting with '.')")
    if skipped:
        lines.append("skipped in folders: " + "; ".join(skipped))
    if inputs.skipped_exports:
        count = len(inputs.skipped_exports)
        lines.append(
            f"note: {count:,} folder{'s' if count != 1 else ''} written by batchclassify export "
            f"not walked ({_sources(inputs.skipped_exports)}): their images are links to images "
            "classified already"
        )
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
