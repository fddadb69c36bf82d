"""Progress that means something, and no long silences (issue 9).

The count ahead of the walk (``counting.py``) must agree with what the job does; the bar's
total accounts for resumed and duplicate items and shows no percentage before it is known;
the count never delays the first request; off a terminal, log lines say what the job does
and waits for; a job that never reached its API stops in seconds, naming the URL.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import re
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchclassify import HttpConfig, JobConfig
from batchclassify.commands.progress import ProgressBar
from batchclassify.error_types import ErrorType
from batchclassify.errors import RetryableError
from batchclassify.inputs.counting import count_items
from batchclassify.inputs.sources import iter_items
from batchclassify.job.health import HealthMonitor, Watchdog
from batchclassify.job.ratelimit import RateController
from batchclassify.job.runner import Job, JobSummary, classify
from batchclassify.job.tracking import ItemCount
from batchclassify.job.waiting import WaitDescriber
from batchclassify.server import BackgroundServer, Fault
from batchclassify.summary import Progress

from .conftest import KEY, Cli, MakeServer, make_images, png, read_rows

EXTENSIONS = frozenset({"jpg", "png"})


def config(server: BackgroundServer, output: Path, *sources: Path, **changes: Any) -> JobConfig:
    http = changes.pop("http", {})
    return JobConfig(
        sources=tuple(map(str, sources)),
        model="colors/1",
        output=output,
        http=HttpConfig(api_url=server.url, api_key=KEY, **http),
        **changes,
    )


def frames(stream: io.StringIO) -> list[str]:
    return [frame for frame in stream.getvalue().split("\r") if frame.strip()]


def snap(
    *,
    already_done: int = 0,
    ok: int = 0,
    total: int | None = None,
    waiting: str | None = None,
    finished: bool = False,
) -> Progress:
    """A snapshot as the job shows its listeners."""
    return Progress(
        already_done=already_done,
        ok=ok,
        failed=0,
        retries=0,
        total=total,
        total_is_exact=False,
        found=already_done + ok,
        waiting=waiting,
        finished=finished,
    )


OK = {"status": "ok"}


# -- the count agrees with the walk ---------------------------------------------------------


def awkward_folder(root: Path) -> Path:
    """Everything the walk has a rule for: hidden names, other extensions, upper case,
    nesting, a symlink loop, a broken symlink with an image's name, an unreadable folder."""
    folder = root / "photos"
    for name in ("a.jpg", "B.PNG", "c.Jpg", "sub/d.png", "sub/deeper/e.jpg", "other/f.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(png("red"))
    for name in (".hidden.jpg", ".cache/g.jpg", "notes.txt", "raw.heic", "noext", "sub/h.gif"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    (folder / "sub" / "loop").symlink_to(folder)  # back up the current path: not entered
    (folder / "other" / "again").symlink_to(folder / "sub" / "deeper")  # entered: 2nd copy
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")  # a problem row
    locked = folder / "locked"
    locked.mkdir()
    (locked / "x.jpg").write_bytes(png("red"))
    locked.chmod(0)  # a row saying it cannot be read (unless root reads it anyway)
    return folder


def test_count_agrees_with_the_walk_over_an_awkward_folder(tmp_path: Path) -> None:
    folder = awkward_folder(tmp_path)
    try:
        walked = list(iter_items([str(folder)], extensions=EXTENSIONS))
        assert len(walked) >= 8  # the six images, e.jpg again via other/again, dangling.jpg
        assert count_items([str(folder)], extensions=EXTENSIONS) == len(walked)
        # Extensions are matched as the job matches them: case and a leading dot aside.
        gif = frozenset({".GIF"})
        assert count_items([str(folder)], extensions=gif) == len(
            list(iter_items([str(folder)], extensions=gif))
        )
    finally:
        (folder / "locked").chmod(0o755)


def test_count_agrees_with_the_readers_of_every_manifest_kind(tmp_path: Path) -> None:
    txt = tmp_path / "list.txt"
    txt.write_bytes(b"a.jpg\r\n\r\n# a comment\n  b.jpg  \n   \nhttp://x/c.jpg\n\xff\xfe.jpg\n")
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(
        'path,label\na.jpg,cat\n\nb.jpg,dog\n"multi\nline.jpg",x\nc.jpg,"bad"quote\n,\n'
    )
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text('{"path": "a.jpg"}\n\n   \nnot json\n[1]\n{"url": "http://x/y.jpg"}\n')
    parquet = tmp_path / "list.parquet"
    pq.write_table(pa.table({"path": ["a.jpg", None, "b.jpg"]}), parquet, row_group_size=2)
    for source in (txt, csv_file, jsonl, parquet):
        items = list(iter_items([str(source)], extensions=EXTENSIONS))
        assert count_items([str(source)], extensions=EXTENSIONS) == len(items), source.name
    everything = [str(txt), str(csv_file), str(jsonl), str(parquet)]
    assert count_items(everything, extensions=EXTENSIONS) == len(
        list(iter_items(everything, extensions=EXTENSIONS))
    )


def test_count_is_unknown_for_stdin_and_when_stopped(tmp_path: Path) -> None:
    make_images(tmp_path / "in", 3)
    assert count_items(["-"], extensions=EXTENSIONS) is None
    assert count_items([str(tmp_path / "in"), "-"], extensions=EXTENSIONS) is None
    stop = threading.Event()
    stop.set()
    assert count_items([str(tmp_path / "in")], extensions=EXTENSIONS, stop=stop) is None


# -- the expected total ---------------------------------------------------------------------


def test_total_is_unknown_until_counted_then_exact_once_listed() -> None:
    count = ItemCount()
    assert count.total is None
    count.seen, count.queued = 512, 512
    assert count.total is None  # 512 found so far is not a total
    count.counted = 100_000
    assert count.total == 100_000
    count.rows = 700
    count.seen, count.queued = 1024, 1024
    assert count.total == 100_000
    count.listing_done = True  # the walk found 1,024 after all (files deleted meanwhile)
    assert count.total == 1024


def test_total_of_a_resumed_job_with_duplicates_ends_at_what_was_done() -> None:
    """30 items in the sources, 12 recorded by an earlier run, 3 listed twice."""
    count = ItemCount()
    count.base = 12
    count.counted = 33
    # The 12 done are expected among the 33 and skipped; duplicates are not known yet.
    assert count.total == 33
    # The first batch: 20 items, 10 of them recorded, 2 duplicates: 8 queued.
    count.seen, count.recorded_seen, count.queued = 20, 10, 8
    assert count.total == 12 + 8 + (13 - 2)
    count.seen, count.recorded_seen, count.queued = 33, 12, 18
    count.rows = 18
    assert count.total == 30 == count.done
    count.listing_done = True
    assert count.total == 30 == count.done


def test_total_never_drops_below_what_is_done() -> None:
    """Files added after the count: the bar grows rather than passing 100%."""
    count = ItemCount()
    count.counted = 10
    count.seen = count.queued = 15
    count.rows = 14
    assert count.total == 15
    count.rows = 16  # even a row the listing has not reported yet
    assert count.total == 16


# -- the bar ----------------------------------------------------------------------------------


def test_bar_shows_no_percentage_until_the_count_then_a_true_one() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, enabled=True)
    bar.progress(snap())
    for _ in range(100):
        bar.row(OK)
    bar.progress(snap(ok=100))
    before = frames(stream)[-1]
    assert "100img" in before and "%" not in before and "/" not in before.split("[")[0]
    bar.progress(snap(ok=100, total=100_000))
    after = frames(stream)[-1]
    assert "100/100000" in after and " 0%" in after
    bar.progress(snap(ok=100, total=100_000, finished=True))


def test_bar_says_what_the_job_waits_for() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, enabled=True)
    bar.progress(snap())
    bar.progress(snap(waiting="HTTP 429: no new requests until 12:00:00 (60 s)"))
    assert "HTTP 429: no new requests until 12:00:00" in frames(stream)[-1]
    bar.progress(snap())
    assert "HTTP 429" not in frames(stream)[-1]
    bar.progress(snap(finished=True))


# -- off a terminal: log lines ------------------------------------------------------------------

STAMP = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] batchclassify: "


def test_off_a_terminal_a_progress_line_each_interval_and_news_at_once() -> None:
    now = [0.0]
    stream = io.StringIO()  # not a tty: log lines, not a bar
    bar = ProgressBar(stream=stream, clock=lambda: now[0])
    assert bar.style == "log"
    bar.progress(snap())
    bar.progress(snap(total=1000))
    for _ in range(120):
        bar.row(OK)
    now[0] = 59.0
    bar.progress(snap(ok=120, total=1000))
    assert len(stream.getvalue().splitlines()) == 1  # the total; no progress line yet
    now[0] = 60.0
    bar.progress(snap(ok=120, total=1000))
    counted, line = stream.getvalue().splitlines()
    assert re.fullmatch(STAMP + r"1,000 items in all", counted), counted
    assert re.fullmatch(
        STAMP + r"120/1,000 done \(12\.0%\), 2\.0 images/s, ETA 7 min "
        r"\(ok 120 failed 0 retried 0\)",
        line,
    ), line
    bar.note("API unavailable, retrying in 4 s (cannot connect to host: refused)")
    now[0] = 100.0
    bar.note(None)
    now[0] = 120.0
    bar.progress(snap(ok=120, total=1000))
    lines = stream.getvalue().splitlines()[2:]
    assert re.fullmatch(STAMP + r"API unavailable, retrying in 4 s .*", lines[0]), lines
    assert re.fullmatch(STAMP + r"no longer waiting \(API unavailable\)", lines[1]), lines
    assert re.fullmatch(
        STAMP + r"120/1,000 done \(12\.0%\), 0\.0 images/s, ETA unknown .*", lines[2]
    )


def test_off_a_terminal_a_resumed_job_rates_only_this_runs_work() -> None:
    """500 done before: they count towards done and the total, never towards the rate."""
    now = [0.0]
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, clock=lambda: now[0])
    bar.progress(snap(already_done=500))
    bar.progress(snap(already_done=500, total=1000))
    for _ in range(120):
        bar.row(OK)
    now[0] = 60.0
    bar.progress(snap(already_done=500, ok=120, total=1000))
    counted, line = stream.getvalue().splitlines()
    assert counted.endswith("1,000 items in all (500 of them done before)")
    assert "620/1,000 done (62.0%), 2.0 images/s, ETA 3 min (ok 120 " in line


def test_a_long_wait_is_repeated_in_the_minute_line() -> None:
    now = [0.0]
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, clock=lambda: now[0])
    bar.progress(snap())
    waiting = "HTTP 429: no new requests until 03:12:09 (600 s)"
    bar.progress(snap(waiting=waiting))
    for minute in (1, 2, 3):
        now[0] = 60.0 * minute
        bar.progress(snap(waiting=waiting))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    for line in lines[1:]:
        assert "0 done (total not counted yet), 0.0 images/s" in line
        assert line.endswith("; waiting: HTTP 429: no new requests until 03:12:09 (600 s)")


def test_nothing_is_written_when_disabled() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, enabled=False, log_interval=0.0)
    bar.progress(snap())
    bar.note("API unavailable")
    bar.row(OK)
    bar.progress(snap(ok=1, finished=True))
    assert stream.getvalue() == ""


# -- the count never delays the job ---------------------------------------------------------------


class Watching(ProgressBar):
    """A bar drawn into a StringIO that also keeps what it was shown."""

    def __init__(self) -> None:
        self.screen = io.StringIO()
        super().__init__(stream=self.screen, enabled=True)
        self.totals: list[int | None] = []
        self.first_row = threading.Event()
        self.waits: list[str] = []
        self.waited = anyio.Event()

    def progress(self, progress: Progress) -> None:
        text = progress.waiting
        if text is not None and text not in self.waits:
            self.waits.append(text)
            self.waited.set()
        if not self.totals or self.totals[-1] != progress.total:
            self.totals.append(progress.total)
        super().progress(progress)

    def row(self, row: Mapping[str, Any]) -> None:
        self.first_row.set()
        super().row(row)


def run_with(job: Job) -> JobSummary:
    async def main() -> JobSummary:
        with anyio.fail_after(30):
            return await job.run()

    return anyio.run(main)


def test_first_request_goes_out_before_a_slow_count_finishes(
    tmp_path: Path, server: BackgroundServer
) -> None:
    """The count waits for the first answer: a job that waited for its count never ends."""
    make_images(tmp_path / "in", 40)
    progress = Watching()

    def slow_count(sources: Any, *, extensions: frozenset[str], stop: threading.Event) -> int:
        assert progress.first_row.wait(20), "no request was answered while counting"
        return count_items(sources, extensions=extensions, stop=stop) or -1

    job = Job(
        config(server, tmp_path / "out.jsonl", tmp_path / "in", http={"concurrency": 1}),
        progress=progress,
        counter=slow_count,
    )
    summary = run_with(job)

    assert summary.exit_code == 0 and summary.ok == 40  # slow_count saw the first row
    shown = frames(progress.screen)
    assert "%" not in shown[0] and "| 40/40 " in shown[-1] and "100%" in shown[-1]


def test_a_count_that_never_finishes_does_not_hold_up_the_job(
    tmp_path: Path, server: BackgroundServer
) -> None:
    make_images(tmp_path / "in", 5)
    release = threading.Event()

    def stuck_count(sources: Any, *, extensions: frozenset[str], stop: threading.Event) -> int:
        while not (release.is_set() or stop.wait(0.01)):
            pass
        return 0

    progress = Watching()
    try:
        summary = run_with(
            Job(
                config(server, tmp_path / "out.jsonl", tmp_path / "in"),
                progress=progress,
                counter=stuck_count,
            )
        )
    finally:
        release.set()
    assert summary.exit_code == 0 and summary.ok == 5
    # The walk's end still gives the exact total, so the bar ends at 100%.
    assert "| 5/5 " in frames(progress.screen)[-1]


def test_resumed_job_with_duplicates_ends_at_100_percent(
    tmp_path: Path, server: BackgroundServer
) -> None:
    """A manifest listing 20 images, 5 of them twice, 8 done by an earlier run: the bar
    starts at 8 with no total, ends at 20/20."""
    images = sorted(make_images(tmp_path / "in", 20))
    first = tmp_path / "first.txt"
    first.write_text("".join(f"{path}\n" for path in images[:8]))
    listing = tmp_path / "all.txt"
    listing.write_text("".join(f"{path}\n" for path in images + images[10:15]))
    output = tmp_path / "out.jsonl"
    assert classify(config(server, output, first)).ok == 8
    progress = Watching()

    summary = classify(config(server, output, listing), progress=progress)

    assert (summary.ok, summary.already_done, summary.duplicates) == (12, 8, 5)
    shown = frames(progress.screen)
    assert shown[0].startswith("classifying: 8img [")
    totals = [frame.split("/", 1)[1].split(" ", 1)[0] for frame in shown if "%|" in frame]
    assert totals and set(totals) <= {"25", "20"}  # the count, less the duplicates found
    assert "| 20/20 " in shown[-1] and "100%" in shown[-1] and "ok=12 " in shown[-1]
    assert len(read_rows(output)) == 20


# -- long silences ------------------------------------------------------------------------------


def test_a_day_long_retry_after_is_capped_and_shown_with_its_end(
    tmp_path: Path, make_server: MakeServer
) -> None:
    """``Retry-After: 86400``: the bar says the job waits, until when, and that it asks again
    after 10 minutes; a stop request ends the wait at once."""
    server = make_server()
    server.script(Fault(status=429, headers={"Retry-After": "86400"}))
    make_images(tmp_path / "in", 5)
    progress = Watching()
    job = Job(
        config(server, tmp_path / "out.jsonl", tmp_path / "in", http={"concurrency": 1}),
        progress=progress,
    )

    async def main() -> JobSummary:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:

                async def stop_once_shown() -> None:
                    await progress.waited.wait()
                    job.request_stop()

                group.start_soon(stop_once_shown)
                return await job.run()
        raise AssertionError("unreachable: the task group returns the job's summary")

    summary = anyio.run(main)

    assert summary.interrupted and summary.ok == 0 and summary.rate_limited == 1
    # Once a second while it lasts: a busy machine may draw a second tick before the stop.
    assert progress.waits
    for text in progress.waits:
        assert re.fullmatch(
            r"HTTP 429: no new requests until \d\d:\d\d:\d\d \(\d+ s\); a Retry-After is "
            r"honoured for at most 10 min, then the server is asked again",
            text,
        ), text
        assert 590 <= int(text.split("(")[1].split(" ")[0]) <= 600
    assert any("HTTP 429: no new requests until" in frame for frame in frames(progress.screen))


@pytest.mark.slow
def test_off_a_terminal_the_cli_logs_a_rate_limit_pause(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server()
    server.script(Fault(status=429, headers={"Retry-After": "4"}))
    make_images(tmp_path / "in", 4)

    result = cli(
        "run", tmp_path / "in", "-m", "colors/1", "--api-url", server.url,
        "-o", tmp_path / "out.jsonl", "-c", "1",
    )  # fmt: skip

    assert result.code == 0, result.err
    lines = result.err.splitlines()
    waits = [line for line in lines if "HTTP 429: no new requests until" in line]
    assert len(waits) == 1, lines  # said once, not once a second
    assert re.fullmatch(STAMP + r"HTTP 429: no new requests until \d\d:\d\d:\d\d \(\d s\)",
                        waits[0])  # fmt: skip
    assert any(re.fullmatch(STAMP + r"no longer waiting \(HTTP 429\)", line)
               for line in lines), lines  # fmt: skip
    assert "4 ok, 0 failed" in result.err


def test_quiet_logs_nothing_while_running(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server()
    server.script(Fault(status=429, headers={"Retry-After": "1"}))
    make_images(tmp_path / "in", 2)

    result = cli(
        "run", tmp_path / "in", "-m", "colors/1", "--api-url", server.url,
        "-o", tmp_path / "out.jsonl", "--quiet",
    )  # fmt: skip

    assert result.code == 0 and result.err == ""


@pytest.mark.parametrize(
    "api_url",
    ["http://127.0.0.1:{port}", "http://nonexistent.invalid"],
    ids=["refused", "unresolvable"],
)
@pytest.mark.slow
def test_a_job_that_never_reached_its_api_stops_in_seconds(
    tmp_path: Path, cli: Cli, api_url: str, refusing_port: int
) -> None:
    """A typo'd host or port: exit 3 in seconds (not after --max-outage, 30 minutes), with the
    URL and what to check; nothing recorded, the key nowhere."""
    api_url = api_url.format(port=refusing_port)
    make_images(tmp_path / "in", 6)
    output = tmp_path / "out.jsonl"
    started = time.monotonic()

    result = cli("run", tmp_path / "in", "-m", "colors/1", "--api-url", api_url, "-o", output)

    assert result.code == 3, result.err
    assert time.monotonic() - started < 20
    assert f"cannot reach the API at {api_url} " in result.err
    assert "check --api-url" in result.err and "rerun the same command" in result.err
    assert KEY not in result.err + result.out
    assert not output.exists() or read_rows(output) == []


@pytest.mark.slow
def test_a_job_whose_connections_are_never_accepted_stops_in_seconds(
    tmp_path: Path, cli: Cli
) -> None:
    """An address where nothing accepts the connection (a firewall dropping packets, a wrong
    IP): each connection times out unanswered. Before any answer that is a wrong --api-url,
    stopped after the connect timeout and a few seconds, not after --max-outage."""
    # A listening socket whose accept queue is full and never drained: further connections
    # are left unanswered, as behind a firewall that drops them.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        try:
            make_images(tmp_path / "in", 4)
            output = tmp_path / "out.jsonl"
            api_url = f"http://127.0.0.1:{port}"
            started = time.monotonic()

            result = cli("run", tmp_path / "in", "-m", "colors/1", "--api-url", api_url,
                         "-o", output, "--timeout", "1")  # fmt: skip

            assert result.code == 3, result.err
            assert time.monotonic() - started < 30
            assert f"cannot reach the API at {api_url} " in result.err
            assert "the connection was not accepted within 0.5 s" in result.err
            assert not output.exists() or read_rows(output) == []
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.slow
def test_the_url_in_the_message_holds_no_credentials(
    tmp_path: Path, cli: Cli, refusing_port: int
) -> None:
    make_images(tmp_path / "in", 6)  # more workers retrying: the stop is seen sooner
    url = f"http://user:hunter2@127.0.0.1:{refusing_port}/v1?api_key=secret-in-url"

    result = cli("run", tmp_path / "in", "-m", "colors/1", "--api-url", url,
                 "-o", tmp_path / "out.jsonl")  # fmt: skip

    assert result.code == 3
    assert "cannot reach the API at http://127.0.0.1:" in result.err
    assert "hunter2" not in result.err and "secret-in-url" not in result.err


def refused(unreachable: bool = True) -> RetryableError:
    error = RetryableError("cannot connect to host: refused", kind=ErrorType.CONNECTION)
    error.unreachable = unreachable
    return error


def test_never_answered_stops_after_the_grace_once_answered_waits_as_an_outage() -> None:
    now = [0.0]
    monitor = HealthMonitor(max_outage=1800, first_contact_grace=3.0, clock=lambda: now[0],
                            servers=("http://typo.example:9001",))  # fmt: skip
    monitor.failure(refused(), "a")
    now[0] = 2.9
    monitor.failure(refused(), "a")
    assert not monitor.gave_up
    assert not monitor.others_fine_since("a", 0.0)  # no evidence: the item keeps trying
    now[0] = 3.0
    assert monitor.gave_up
    assert monitor.stop_reason().startswith("cannot reach the API at http://typo.example:9001")

    answered = HealthMonitor(max_outage=1800, first_contact_grace=3.0, clock=lambda: now[0])
    answered.success()
    for moment in range(4, 200, 5):
        now[0] = float(moment)
        answered.failure(refused(), moment % 2)
    assert answered.is_down and not answered.gave_up  # an outage, waited out as before


def test_timeouts_alone_are_not_a_reason_to_stop_early() -> None:
    """No answer yet, but the host resolves and accepts: a slow server, not a typo."""
    now = [0.0]
    monitor = HealthMonitor(max_outage=1800, clock=lambda: now[0])
    for moment in range(0, 120, 2):
        now[0] = float(moment)
        monitor.failure(refused(unreachable=False), moment % 3)
    assert monitor.is_down and not monitor.gave_up


def test_outage_note_says_when_the_job_will_stop() -> None:
    now = [0.0]
    notes: list[str | None] = []
    monitor = HealthMonitor(max_outage=1800, outage_after=5, clock=lambda: now[0],
                            notify=notes.append)  # fmt: skip
    monitor.success()
    for moment, item in ((1, "a"), (3, "b"), (6, "a")):
        now[0] = float(moment)
        monitor.failure(refused(unreachable=False), item)
    [note] = notes
    assert note is not None and note.startswith("API unavailable, retrying in 1 s (")
    assert re.search(r"stopping at \d\d:\d\d:\d\d if still down \(--max-outage\)$", note)


def test_waits_are_described_with_their_moments_once_per_wait() -> None:
    """Requests in flight, none answered for 15 s; then a day-long Retry-After on top."""
    now = [0.0]

    def clock() -> float:
        return now[0]

    rate = RateController(clock=clock)
    dog = Watchdog(stall_after=180, clock=clock)
    noon = datetime.datetime(2026, 11, 27, 12, 0, 0)
    describer = WaitDescriber(
        rate=rate,
        watchdog=dog,
        health=HealthMonitor(max_outage=1800, clock=clock),
        timeout=60,
        clock=clock,
        wall_clock=lambda: noon + datetime.timedelta(seconds=now[0]),
    )
    silence = (
        "no answer since 12:00:00 to the requests in flight (each gives up after --timeout 60 s)"
    )
    texts: list[str | None] = []

    async def main() -> None:
        async with dog.watch(now[0]):
            for moment in (14.0, 15.0, 40.0):
                now[0] = moment
                texts.append(describer.describe())
            rate.on_rate_limited(retry_after=600.0)
            now[0] = 41.0
            texts.append(describer.describe())
        texts.append(describer.describe())

    anyio.run(main)

    pause = (
        "HTTP 429: no new requests until 12:10:40 (599 s); a Retry-After is honoured for "
        "at most 10 min, then the server is asked again"
    )
    assert texts == [None, silence, silence, f"{pause}; {silence}", pause]


def test_a_finished_jobs_rerun_takes_its_total_from_the_walk_not_a_second_read(
    tmp_path: Path, server: BackgroundServer
) -> None:
    """Nothing left to do: the walk met every item, so its total is exact and the sources
    are not read again to count them; a rerun with work left counts them as before."""
    make_images(tmp_path / "in", 12)
    out = tmp_path / "out.jsonl"
    counts: list[str] = []
    begun = threading.Event()

    def counter(sources: Any, *, extensions: frozenset[str], stop: threading.Event) -> int:
        counts.append("counted")
        begun.set()
        return count_items(sources, extensions=extensions, stop=stop) or -1

    class CountBegun(ProgressBar):
        """Holds the first row until the count has begun: the count runs in a worker thread
        beside the job, and a job of a few images can end (abandoning its count) before a
        busy machine gives that thread the CPU; a job of a million images cannot."""

        def row(self, row: Mapping[str, Any]) -> None:
            assert begun.wait(30), "no count was started"
            super().row(row)

    first = run_with(Job(config(server, out, tmp_path / "in"), progress=CountBegun(enabled=False),
                         counter=counter))  # fmt: skip
    assert first.ok == 12 and counts == ["counted"]
    requests = server.stats.requests

    progress = Watching()
    again = run_with(Job(config(server, out, tmp_path / "in"), progress=progress, counter=counter))

    assert again.already_done == 12 and server.stats.requests == requests
    assert counts == ["counted"]  # not read a second time
    assert progress.totals == [None, 12]  # the walk's own total
    assert "| 12/12 " in frames(progress.screen)[-1]

    make_images(tmp_path / "in", 14)  # two more: work to do, so the count runs
    begun.clear()
    run_with(Job(config(server, out, tmp_path / "in"), progress=CountBegun(enabled=False),
                 counter=counter))  # fmt: skip
    assert counts == ["counted", "counted"]
