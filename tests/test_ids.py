"""One image, one id; two images, two ids (issue 9), and what a job says about its input:
files passed over, sources with nothing in them, manifest errors grouped by kind."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from batchclassify.commands.progress import format_summary
from batchclassify.config import DEFAULT_EXTENSIONS
from batchclassify.inputs.sources import iter_items
from batchclassify.names import as_id, path_id
from batchclassify.server import BackgroundServer
from batchclassify.summary import InputReport

from .conftest import (
    Cli,
    make_image,
    make_images,
    read_rows,
    rows_by_id,
    run_args,
)
from .test_robustness import job_config, run

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names and symlinks")


# -- any spelling, any working directory: the same ids --------------------------------------


def test_a_rerun_spelled_differently_or_from_elsewhere_sends_nothing(
    tmp_path: Path, server: BackgroundServer, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = make_images(tmp_path / "photos", 6)
    output = tmp_path / "out.jsonl"
    monkeypatch.chdir(tmp_path)

    assert cli(*run_args(server, output, "photos")).code == 0
    assert server.stats.requests == 6

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "list.txt").write_text("\n".join(os.path.basename(p) for p in expected))
    for cwd, spelling in [
        (tmp_path, "./photos/"),
        (tmp_path, str(tmp_path / "photos")),
        (tmp_path, "photos/../photos"),
        (tmp_path / "elsewhere", "../photos"),
        (tmp_path / "photos", "."),
    ]:
        monkeypatch.chdir(cwd)
        result = cli(*run_args(server, output, spelling))
        assert result.code == 0, (spelling, result.err)
        assert "6 already done" in result.err
    # A manifest naming the same files relative to itself: the same ids too.
    (tmp_path / "photos" / "list.txt").write_text("\n".join(os.path.basename(p) for p in expected))
    assert cli(*run_args(server, output, tmp_path / "photos" / "list.txt")).code == 0

    assert server.stats.requests == 6  # nothing was sent again
    rows = rows_by_id(output)  # one row per image
    assert {row_id: row["top"] for row_id, row in rows.items()} == expected
    assert {row["path"] for row in rows.values()} == {
        os.path.join("photos", os.path.basename(p)) for p in expected
    }  # the path as the user spelled it on the run that classified it


def test_two_manifests_listing_the_same_name_give_two_rows(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    for folder, color in (("a", "red"), ("b", "blue")):
        make_image(tmp_path / folder / "img001.png", color)
        (tmp_path / folder / "list.txt").write_text("img001.png\n")
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, tmp_path / "a" / "list.txt", tmp_path / "b/list.txt"))

    assert result.code == 0 and "duplicates" not in result.err
    rows = rows_by_id(output)
    assert {row_id: row["top"] for row_id, row in rows.items()} == {
        str(tmp_path / "a" / "img001.png"): "red",
        str(tmp_path / "b" / "img001.png"): "blue",
    }
    assert server.stats.requests == 2


def test_a_manifest_id_column_is_kept_as_given(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_image(tmp_path / "a.png", "red")
    (tmp_path / "m.csv").write_text("ID,Path\nmy-id,a.png\n")  # any case, as written
    output = tmp_path / "out.jsonl"
    assert cli(*run_args(server, output, tmp_path / "m.csv")).code == 0
    assert list(rows_by_id(output)) == ["my-id"]


@posix_only
def test_a_symlinked_root_gives_the_ids_of_the_real_folder(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "real", 3)
    (tmp_path / "link").symlink_to(tmp_path / "real")  # like /tmp -> /private/tmp on macOS
    output = tmp_path / "out.jsonl"

    assert cli(*run_args(server, output, tmp_path / "link")).code == 0
    assert cli(*run_args(server, output, tmp_path / "real")).code == 0

    assert server.stats.requests == 3
    assert all(row["id"].startswith(str(tmp_path / "real") + "/") for row in read_rows(output))


# -- names that are not text ----------------------------------------------------------------


@posix_only
def test_an_undecodable_name_and_its_escape_text_are_two_images(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    raw = Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.png"))  # the byte 0xe9
    make_image(raw, "red")
    make_image(folder / "caf\\xe9.png", "blue")  # the four characters \xe9
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, folder))

    assert result.code == 0 and "duplicates" not in result.err
    rows = rows_by_id(output)
    assert {row["top"] for row in rows.values()} == {"red", "blue"}
    assert sorted(rows) == sorted([f"{folder}/caf\\xe9.png", f"{folder}/caf\\\\xe9.png"])
    assert server.stats.requests == 2


def test_as_id_keeps_text_and_is_one_to_one() -> None:
    names = [
        "a.jpg",
        "café.jpg",
        "back\\slash.jpg",  # a backslash without x: kept
        "caf\\xe9.jpg",
        "caf\\\\xe9.jpg",
        "caf\udce9.jpg",  # the byte 0xe9, as os.fsdecode hands it over
        "caf\udce9\\xe9.jpg",
        "\\x",
        "\\\\x",
    ]
    assert as_id("café.jpg") == "café.jpg" and as_id("back\\slash.jpg") == "back\\slash.jpg"
    ids = [as_id(name) for name in names]
    assert len(set(ids)) == len(names)
    for ident in ids:
        ident.encode("utf-8")  # valid text
    assert path_id("/x/caf\udce9/a\\xb.jpg") == "/x/caf\\xe9/a\\\\xb.jpg"


# -- the settings file records the id scheme ------------------------------------------------


def test_an_output_of_the_old_id_scheme_is_refused(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "photos", 2)
    output = tmp_path / "out.jsonl"
    assert cli(*run_args(server, output, tmp_path / "photos")).code == 0
    settings = tmp_path / "out.jsonl.job.json"
    recorded = orjson.loads(settings.read_bytes())
    assert recorded["id_scheme"] == 2
    del recorded["id_scheme"]  # as written by an earlier batchclassify
    settings.write_bytes(orjson.dumps(recorded))
    before = output.read_bytes()

    result = cli(*run_args(server, output, tmp_path / "photos"))

    assert result.code == 2
    assert "named images differently (id scheme 1, this version uses 2)" in result.err
    assert "--overwrite" in result.err and "another --output" in result.err
    assert server.stats.requests == 2 and output.read_bytes() == before
    assert cli(*run_args(server, output, tmp_path / "photos"), "--overwrite").code == 0


# -- files passed over, nothing to do -------------------------------------------------------


def test_a_folder_of_other_files_is_nothing_to_classify(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    folder = tmp_path / "phone"
    folder.mkdir()
    for n in range(3):
        (folder / f"IMG_{n}.HEIC").write_bytes(b"heic")
    (folder / "clip.mov").write_bytes(b"mov")
    (folder / ".DS_Store").write_bytes(b"x")
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, folder))

    assert result.code == 2
    assert "0 ok, 0 failed" in result.err
    assert (
        "skipped in folders: 4 files with an extension not in --extensions (3 .heic, 1 .mov); "
        "1 hidden (names starting with '.')"
    ) in result.err
    assert f"nothing to classify: no images found in {folder}" in result.err
    assert "e.g. --extensions heic,mov" in result.err
    assert server.stats.requests == 0


def test_an_empty_source_among_others_is_warned_about(
    tmp_path: Path, server: BackgroundServer
) -> None:
    make_images(tmp_path / "good", 2)
    (tmp_path / "typo").mkdir()
    (tmp_path / "good" / "notes.txt").write_text("x")

    config = job_config(server, tmp_path / "good", tmp_path / "out.jsonl")
    summary = run(replace(config, sources=(str(tmp_path / "good"), str(tmp_path / "typo"))))

    assert summary.exit_code == 0 and summary.ok == 2 and not summary.nothing_found
    assert summary.inputs.empty_sources == [str(tmp_path / "typo")]
    assert summary.inputs.skipped_extensions == {"txt": 1}
    text = format_summary(summary)
    assert f"warning: no images found in {tmp_path / 'typo'}" in text
    assert "1 file with an extension not in --extensions (1 .txt)" in text


def test_everything_already_done_is_not_nothing_found(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "photos", 2)
    output = tmp_path / "out.jsonl"
    assert cli(*run_args(server, output, tmp_path / "photos")).code == 0
    assert server.stats.requests == 2
    result = cli(*run_args(server, output, tmp_path / "photos"))
    assert result.code == 0 and "nothing to classify" not in result.err
    assert "2 already done" in result.err
    assert server.stats.requests == 2  # done, not sent again
    assert len(rows_by_id(output)) == 2


def test_the_walk_counts_what_it_passes_over(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.heic", "c.HEIC", "noext", ".hidden.jpg", "sub/d.png", "sub/e."):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".git").mkdir()
    report = InputReport()

    found = list(iter_items([str(tmp_path)], extensions=DEFAULT_EXTENSIONS, report=report))

    assert len(found) == 2
    assert report.skipped_extensions == {"heic": 2, "": 2}
    assert report.skipped_hidden == 2 and report.skipped == 6
    assert report.empty_sources == []


# -- manifest errors, grouped --------------------------------------------------------------


def test_manifest_errors_are_one_summary_line_per_kind(
    tmp_path: Path, server: BackgroundServer
) -> None:
    make_image(tmp_path / "a.png", "red")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label\na.png,x\n" + ",empty\n" * 8 + "b.png,x,extra\nc.png,y,extra,more\n"
    )

    summary = run(job_config(server, manifest, tmp_path / "out.jsonl"))

    assert summary.ok == 1 and summary.failed == 10
    assert len(summary.errors) == 2
    text = format_summary(summary)
    assert (
        f"8 × bad_manifest_row: {manifest}: empty path/url cell; fill it or drop the row "
        "(lines 3, 4, 5, 6, 7, …)"
    ) in text
    assert f"2 × bad_manifest_row: {manifest}: more fields than the header's 2" in text
    assert "(lines 11, 12)" in text
    # Each row still names its own line.
    errors = {row["error"] for row in read_rows(tmp_path / "out.jsonl") if row["error"]}
    assert (
        f"{manifest} line 11: 3 fields but the header has 2; quote values that contain commas"
    ) in errors
