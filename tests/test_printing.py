"""What batchclassify prints is safe to print (issue 18).

File names and class names may hold terminal escapes (``\\e]0;...\\a`` retitles the terminal,
``\\e[2J`` clears it) or newlines; every printer shows them escaped (``names.printable``), the
text report's table keeps one line per class with capped columns, and a reader that goes
away (``| head``) ends any command quietly.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import orjson

from batchclassify.error_types import ErrorType
from batchclassify.models import Item, Prediction, error_row, ok_row
from batchclassify.output.resume import write_settings
from batchclassify.output.sidecars import settings_path
from batchclassify.server import BackgroundServer
from batchclassify.version import __version__

from .conftest import PYTHON, Cli, make_image, run_args, subprocess_env

TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"


def classified(item_id: str, top: str) -> dict[str, Any]:
    """The row of an image the model put in class ``top``."""
    prediction = Prediction(
        multilabel=False,
        top=top,
        confidence=0.9,
        predictions=[{"class": top, "confidence": 0.9}, {"class": "other", "confidence": 0.1}],
        predicted_classes=[top],
        image_width=8,
        image_height=8,
        inference_id=None,
    )
    return ok_row(Item(id=item_id, path=item_id), prediction, attempts=1, elapsed_ms=1.0)


def write_output(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A JSONL output as ``run`` leaves it: its rows and its settings file."""
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    settings = {"model": "colors/1", "format": "jsonl", "api_url": "local", "shard": None}
    write_settings(settings_path(path), {**settings, "batchclassify_version": __version__})
    return path


def test_file_names_with_terminal_escapes_are_printed_escaped(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    images = tmp_path / "imgs"
    make_image(images / "good-red.png", "red")
    (images / f"{TITLE}bad.png").write_text("not an image")
    (images / f"notes.{CLEAR}").write_text("skipped: not an image extension")
    output = tmp_path / f"out{CLEAR}.jsonl"

    run = cli(*run_args(server, output, images))
    assert run.code == 1, run.err
    report = cli("report", output)
    status = cli("status", output)
    for printed in (run.err, report.out, status.out):
        assert "\x1b" not in printed and "\x07" not in printed
        assert "out\\x1b[2J.jsonl" in printed
    assert ".\\x1b[2j" in run.err  # the extension passed over, lowercased
    assert f"{images}/\\x1b]0;pwned\\x07bad.png" in report.out  # the failed image, e.g.


def test_class_names_with_escapes_and_newlines_keep_the_table(tmp_path: Path, cli: Cli) -> None:
    long = "a-very-long-class-name-" * 12
    names = [f"{TITLE}title", f"two\nlines{CLEAR}", long, "plain"]
    rows = [classified(f"/data/{n}.png", name) for n, name in enumerate(names)]
    item = Item(id="/data/x.png", path="/data/x.png")
    failed = error_row(item, error="bad", error_type=ErrorType.BAD_IMAGE, attempts=1)
    failed["error_type"] = CLEAR  # as an output of another version may hold
    output = write_output(tmp_path / "out.jsonl", [*rows, failed])

    report = cli("report", output)
    assert report.code == 0, report.err
    assert "\x1b" not in report.out and "\x07" not in report.out
    table = report.out.split("\nclasses (")[1].split("\n\n")[0].splitlines()[2:]
    assert len(table) == len(names)  # one line per class: the newline did not break it
    shown = {line.split()[0] for line in table}
    assert shown == {"\\x1b]0;pwned\\x07title", "two\\x0alines\\x1b[2J", long[:39] + "…", "plain"}
    # The count column lines up, whatever the names were.
    assert len({line.index(" 1 ") for line in table}) == 1
    assert all(len(line) < 120 for line in report.out.splitlines())
    assert "quantiles: nearest rank" in report.out

    status = cli("status", output)
    assert status.code == 0, status.err
    assert "\x1b" not in status.out and "\\x1b[2J" in status.out  # the error type


def _closed_early(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``batchclassify ARGS | head -1``: read one line, then close the pipe."""
    process = subprocess.Popen(
        [PYTHON, "-m", "batchclassify", *args],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()
    err = process.stderr.read()
    code = process.wait(timeout=60)
    return subprocess.CompletedProcess(args, code, first, err)


def test_a_reader_gone_ends_every_command_quietly(tmp_path: Path) -> None:
    # Thousands of classes: more lines than a pipe holds, so the writer meets the closed pipe.
    names = [f"kind/{n:05d}" for n in range(3000)]
    output = write_output(
        tmp_path / "out.jsonl", [classified(f"/data/{n}.png", name) for n, name in enumerate(names)]
    )
    # export prints a line per renamed class ('/' in a class name): many writes.
    done = _closed_early(["export", str(output), "--to", "folders", str(tmp_path / "dest")])
    assert done.stdout, done.stderr
    assert (done.returncode, done.stderr) == (141, "")
    # report writes its text at once; a write the closed pipe cuts short can end without an
    # error (CPython takes the partial write as done), so either code is quiet and right.
    done = _closed_early(["report", str(output)])
    assert done.stdout.startswith("report of"), done.stderr
    assert done.returncode in (0, 141) and done.stderr == ""


def test_a_closed_pipe_is_not_mistaken_for_other_errors(tmp_path: Path) -> None:
    """Without a closed stdout, a command's output arrives whole and its exit code stands."""
    output = write_output(tmp_path / "out.jsonl", [classified("/data/a.png", "red")])
    done = subprocess.run(
        [PYTHON, "-m", "batchclassify", "report", str(output)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        check=False,
        cwd=os.fspath(tmp_path),
    )
    assert done.returncode == 0 and "red" in done.stdout, done.stderr
