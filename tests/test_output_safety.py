"""batchclassify never destroys what it did not write: --overwrite, repair, cleanup, compaction
and the settings file touch only batchclassify's own files; unusable outputs are refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchclassify.server import BackgroundServer

from .conftest import Cli, CliResult, make_images, png, rows_by_id, run_args


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (or ``root`` itself) with its bytes."""
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def refused(result: CliResult, *phrases: str) -> str:
    """Exit 2 with one line of error naming ``phrases``; returns that line."""
    assert result.code == 2, result.err
    [line] = result.err.splitlines()
    assert line.startswith("batchclassify: error: ")
    for phrase in phrases:
        assert phrase in line, line
    return line


# -- --overwrite ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [None, "jsonl", "parquet"])
def test_overwrite_never_deletes_the_source_folder(
    tmp_path: Path, server: BackgroundServer, cli: Cli, fmt: str | None
) -> None:
    photos = tmp_path / "photos"
    make_images(photos, 5)
    before = snapshot(photos)
    fmt_args = ["--format", fmt] if fmt else []

    result = cli(*run_args(server, photos, photos), *fmt_args, "--overwrite")

    refused(result, str(photos))
    assert snapshot(photos) == before
    assert server.stats.requests == 0


@pytest.mark.parametrize("spelling", [".", "..", "{cwd}"])
def test_overwrite_never_deletes_the_working_directory_or_a_parent(
    tmp_path: Path,
    server: BackgroundServer,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    spelling: str,
) -> None:
    work = tmp_path / "work"
    make_images(work / "photos", 3)
    (tmp_path / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    output = spelling.format(cwd=work)

    result = cli(*run_args(server, Path(output), "photos"), "--format", "parquet", "--overwrite")

    refused(result, "working directory")
    assert snapshot(tmp_path) == before


def test_overwrite_refuses_a_parquet_folder_holding_other_files(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 4)
    output = tmp_path / "out.parquet"
    args = run_args(server, output, tmp_path / "images")
    assert cli(*args, "-q").code == 0
    (output / "notes.txt").write_text("my notes")
    (output / "sub").mkdir()
    (output / "sub" / "more.csv").write_text("a,b\n")
    before = snapshot(output)

    result = cli(*args, "--overwrite")

    refused(result, "notes.txt", "sub", "move those away")
    assert snapshot(output) == before
    assert server.stats.requests == 4


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_overwrite_refuses_what_batchclassify_did_not_write(
    tmp_path: Path, server: BackgroundServer, cli: Cli, kind: str
) -> None:
    make_images(tmp_path / "images", 3)
    if kind == "file":
        output = tmp_path / "results.jsonl"
        output.write_text('{"id": "theirs", "status": "ok"}\n')
    else:
        output = tmp_path / "dataset.parquet"
        output.mkdir()
        pq.write_table(pa.table({"x": [1, 2]}), output / "part-000000.parquet")
    before = snapshot(output)

    result = cli(*run_args(server, output, tmp_path / "images"), "--overwrite")

    refused(result, str(output), "not written by batchclassify")
    assert snapshot(output) == before
    assert server.stats.requests == 0


def test_overwrite_refuses_an_output_that_is_a_source_or_holds_one(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 3)
    # A results file used as the manifest of a new run (e.g. to classify them with another
    # model) must not be deleted by that run.
    output = tmp_path / "out.jsonl"
    assert cli(*run_args(server, output, tmp_path / "images"), "-q").code == 0
    before = snapshot(output)
    result = cli(*run_args(server, output, output), "--overwrite")
    refused(result, "is also a source")
    assert snapshot(output) == before

    parquet = tmp_path / "out.parquet"
    assert cli(*run_args(server, parquet, tmp_path / "images"), "-q").code == 0
    listing = parquet / "list.txt"
    listing.write_text("\n".join(str(p) for p in sorted((tmp_path / "images").iterdir())))
    before = snapshot(parquet)
    result = cli(*run_args(server, parquet, listing), "--overwrite")
    refused(result, f"contains {listing}")
    assert snapshot(parquet) == before
    assert server.stats.requests == 6


def test_overwrite_of_a_parquet_output_removes_its_own_files_and_starts_over(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    expected = make_images(tmp_path / "images", 6)
    output = tmp_path / "out.parquet"
    args = run_args(server, output, tmp_path / "images")
    assert cli(*args, "-q").code == 0
    # What a killed run leaves: a half-written part and a journal.
    (output / ".part-000007.parquet.tmp").write_bytes(b"PAR1 half")
    (output / "_journal-000007.jsonl").write_bytes(b'{"id": "x.png", "status": "ok"}\n')

    result = cli(*args, "--overwrite")

    assert result.code == 0, result.err
    assert server.stats.requests == 12
    assert {item_id: row["top"] for item_id, row in rows_by_id(output).items()} == expected
    assert sorted(os.listdir(output)) == ["part-000000.parquet"]


def test_overwrite_never_replaces_a_foreign_settings_file(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 3)
    output = tmp_path / "out.jsonl"
    settings = Path(f"{output}.job.json")
    settings.write_text('{"name": "my project settings"}')

    for extra in ([], ["--overwrite"]):
        result = cli(*run_args(server, output, tmp_path / "images"), *extra)
        refused(result, str(settings), "not written by batchclassify")
        assert settings.read_text() == '{"name": "my project settings"}'
    assert not output.exists()
    assert server.stats.requests == 0


# -- every other place that removes, truncates or replaces ------------------------------------


def test_the_settings_file_write_clobbers_no_other_file(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 3)
    output = tmp_path / "out.jsonl"
    neighbour = tmp_path / ".out.jsonl.job.json.tmp"
    neighbour.write_text("someone's file")

    assert cli(*run_args(server, output, tmp_path / "images")).code == 0

    assert neighbour.read_text() == "someone's file"
    assert orjson.loads(Path(f"{output}.job.json").read_bytes())["model"] == "colors/1"
    assert not [
        p
        for p in os.listdir(tmp_path)
        if p.startswith(".out.jsonl.job.json.") and p != neighbour.name
    ]


def test_compaction_clobbers_no_other_file_and_keeps_the_output_permissions(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    images = tmp_path / "images"
    make_images(images, 4)
    (images / "zz-bad.png").write_bytes(png("red", side=9))
    server.fail_image(png("red", side=9), 400, times=1)
    output = tmp_path / "out.jsonl"
    args = run_args(server, output, images)
    assert cli(*args).code == 1
    os.chmod(output, 0o640)
    neighbour = tmp_path / ".out.jsonl.compact.tmp"
    neighbour.write_text("someone's file")

    result = cli(*args, "--retry-failed")  # the new row supersedes the old: compaction

    assert result.code == 0, result.err
    assert len(output.read_bytes().splitlines()) == 5
    assert neighbour.read_text() == "someone's file"
    assert stat.S_IMODE(output.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [neighbour.name]


def test_repair_never_cuts_a_last_line_batchclassify_did_not_write(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 4)
    output = tmp_path / "out.jsonl"
    args = run_args(server, output, tmp_path / "images")
    assert cli(*args, "-q").code == 0
    with open(output, "ab") as handle:
        handle.write(b"# checked by Ana, all good")  # no newline: not a row torn by a kill
    before = output.read_bytes()

    result = cli(*args)

    refused(result, str(output), "did not write", "newline")
    assert output.read_bytes() == before
    assert server.stats.requests == 4


def test_parquet_cleanup_deletes_only_its_own_temporary_files(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 4)
    output = tmp_path / "out.parquet"
    args = run_args(server, output, tmp_path / "images")
    assert cli(*args, "-q").code == 0
    theirs = [output / ".part-notes.tmp", output / ".partial.tmp", output / "_journal-draft.jsonl"]
    for path in theirs:
        path.write_text("someone's file")
    (output / ".part-000009.parquet.tmp").write_bytes(b"PAR1 half")  # ours, from a kill

    result = cli(*args)

    assert result.code == 0, result.err
    assert all(path.read_text() == "someone's file" for path in theirs)
    assert not (output / ".part-000009.parquet.tmp").exists()


def test_parquet_journal_recovery_never_deletes_a_journal_of_other_lines(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 4)
    output = tmp_path / "out.parquet"
    args = run_args(server, output, tmp_path / "images")
    assert cli(*args, "-q").code == 0
    journal = output / "_journal-000005.jsonl"
    journal.write_text("my log line one\nmy log line two\n")

    result = cli(*args)

    refused(result, str(journal), "not batchclassify rows")
    assert journal.read_text() == "my log line one\nmy log line two\n"
    assert server.stats.requests == 4


def test_part_rewrites_never_touch_a_parquet_file_batchclassify_did_not_write(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 4)
    output = tmp_path / "out.parquet"
    args = run_args(server, output, tmp_path / "images")
    assert cli(*args, "-q").code == 0
    foreign = output / "part-000003.parquet"
    pq.write_table(pa.table({"id": ["a"], "status": ["ok"], "mine": [1]}), foreign)
    before = foreign.read_bytes()

    result = cli(*args)

    refused(result, str(foreign), "not a part batchclassify wrote")
    assert foreign.read_bytes() == before


def test_a_foreign_lock_file_is_left_alone(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 2)
    output = tmp_path / "out.jsonl"
    lock = Path(f"{output}.lock")
    lock.write_text("my lock notes")

    result = cli(*run_args(server, output, tmp_path / "images"))

    refused(result, str(lock), "not written by batchclassify")
    assert lock.read_text() == "my lock notes"
    assert server.stats.requests == 0


# -- outputs that are not regular files, unknown suffixes ------------------------------------


@pytest.mark.parametrize(
    ("output", "fmt", "phrase"),
    [
        (".", None, "no suffix"),
        (".", "jsonl", "working directory"),
        ("/dev/stdout", None, "no suffix"),
        ("/dev/stdout", "jsonl", "system folder"),
        ("results.csv", None, "'.csv' is not an output format"),
        ("results", None, "no suffix"),
    ],
)
def test_unusable_outputs_are_refused_before_anything_is_written(
    tmp_path: Path,
    server: BackgroundServer,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    output: str,
    fmt: str | None,
    phrase: str,
) -> None:
    make_images(tmp_path / "images", 2)
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    settings = Path(f"{output}.job.json")
    settings_existed = settings.exists()  # /dev/stdout.job.json: only ever by another program
    fmt_args = ["--format", fmt] if fmt else []

    result = cli(*run_args(server, Path(output), "images"), *fmt_args)

    refused(result, phrase)
    assert sorted(os.listdir(tmp_path)) == before
    assert settings.exists() == settings_existed
    assert server.stats.requests == 0


def test_a_pipe_as_output_is_refused(tmp_path: Path, server: BackgroundServer, cli: Cli) -> None:
    make_images(tmp_path / "images", 2)
    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)

    result = cli(*run_args(server, fifo, tmp_path / "images"))

    refused(result, str(fifo), "not a regular file")
    assert not Path(f"{fifo}.job.json").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_wrong_kind_of_existing_output_is_refused_and_kept(
    tmp_path: Path, server: BackgroundServer, cli: Cli, overwrite: bool
) -> None:
    make_images(tmp_path / "images", 2)
    folder = tmp_path / "out.jsonl"  # a folder where a JSONL file is wanted
    (folder / "inside").mkdir(parents=True)
    (folder / "inside" / "keep.txt").write_text("mine")
    file = tmp_path / "out.parquet"  # a file where a Parquet folder is wanted
    file.write_text("not parquet, mine")
    extra = ["--overwrite"] if overwrite else []

    refused(cli(*run_args(server, folder, tmp_path / "images"), *extra), "is a folder")
    refused(cli(*run_args(server, file, tmp_path / "images"), *extra), "is a file")

    assert (folder / "inside" / "keep.txt").read_text() == "mine"
    assert file.read_text() == "not parquet, mine"
    assert server.stats.requests == 0


@pytest.mark.parametrize(
    ("name", "fmt", "kind"),
    [
        ("out.ndjson", None, "jsonl"),
        ("out.JSONL", None, "jsonl"),
        ("out.csv", "jsonl", "jsonl"),
        ("out.data", "parquet", "parquet"),
    ],
)
def test_known_suffixes_or_an_explicit_format_are_accepted(
    tmp_path: Path, server: BackgroundServer, cli: Cli, name: str, fmt: str | None, kind: str
) -> None:
    make_images(tmp_path / "images", 3)
    output = tmp_path / name
    fmt_args = ["--format", fmt] if fmt else []

    result = cli(*run_args(server, output, tmp_path / "images"), *fmt_args)

    assert result.code == 0, result.err
    assert output.is_dir() == (kind == "parquet")
    assert len(rows_by_id(output)) == 3
