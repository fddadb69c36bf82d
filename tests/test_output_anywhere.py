"""An output is usable from any folder, on any later day (issue 18).

``run`` is started in one folder with a relative source; ``export`` and ``report --html`` run
from another folder and must still find every image, a file name that is not UTF-8 included:
by the row's id (the absolute path, escaped injectively), not its ``path`` as ``run`` was
given it. An export that exports nothing, or a report that can read no image, says so and
exits non-zero.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from batchclassify.commands.export.dest import MAPPING
from batchclassify.server import BackgroundServer

from .conftest import Cli, make_image, read_rows, run_args

#: A file name whose bytes are not UTF-8 (Latin-1 "café"), as old cameras and zips write them.
LATIN1 = b"caf\xe9-blue.png"


def _job(
    tmp_path: Path, server: BackgroundServer, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Run a job from ``tmp_path/here`` over ``imgs`` (relative); returns the output."""
    here = tmp_path / "here"
    for name, color in (("a-red.png", "red"), ("b-green.png", "green"), ("c-red.jpg", "red")):
        make_image(here / "imgs" / name, color)
    make_image(Path(os.fsdecode(os.fsencode(here / "imgs") + b"/" + LATIN1)), "blue")
    monkeypatch.chdir(here)
    output = tmp_path / "out.jsonl"
    result = cli(*run_args(server, output, "imgs"), "-q")
    assert result.code == 0, result.err
    rows = read_rows(output)
    assert len(rows) == 4 and all(not os.path.isabs(row["path"]) for row in rows)
    return output


def test_export_and_report_from_another_folder_find_every_image(
    tmp_path: Path, server: BackgroundServer, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = _job(tmp_path, server, cli, monkeypatch)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    result = cli("export", output, "--to", "folders", "dest")
    assert result.code == 0, result.err
    assert "exported 4 images" in result.out, result.out
    with open(elsewhere / "dest" / MAPPING, newline="") as handle:
        mapping = list(csv.DictReader(handle, delimiter="\t"))
    assert [row["outcome"] for row in mapping] == ["exported"] * 4
    originals = {
        os.fsencode(entry.path) for entry in os.scandir(os.fsencode(tmp_path / "here" / "imgs"))
    }
    exported = [elsewhere / "dest" / row["exported"] for row in mapping]
    # Each link leads to the very image (the Latin-1 name's bytes included), readable.
    assert {os.fsencode(os.path.realpath(path)) for path in exported} == originals
    assert all(path.read_bytes() for path in exported)

    page = elsewhere / "report.html"
    result = cli("report", output, "--html", page)
    assert result.code == 0, result.err
    html = page.read_text()
    assert "image not found" not in html
    assert html.count("data:image/jpeg;base64,") == 4


def test_nothing_exported_or_no_image_read_exits_non_zero(
    tmp_path: Path, server: BackgroundServer, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = _job(tmp_path, server, cli, monkeypatch)
    (tmp_path / "here" / "imgs").rename(tmp_path / "here" / "moved")

    result = cli("export", output, "--to", "folders", tmp_path / "dest")
    assert result.code == 1
    assert "nothing exported: not one of the 4 images to export was found" in result.err

    result = cli("report", output, "--html", tmp_path / "report.html")
    assert result.code == 1
    assert "no image could be read" in result.err
    assert (tmp_path / "report.html").read_text().count("image not found") == 4


def test_an_id_names_its_file_whatever_its_bytes(tmp_path: Path) -> None:
    from batchclassify.names import id_file, path_id

    names = [b"plain.png", LATIN1, b"back\\xff\\slash.png", b"\xff\\x41.png", "é.png".encode()]
    for raw in names:
        folder = os.fsdecode(os.fsencode(tmp_path) + b"/" + raw + b".d")
        path = os.fsdecode(os.fsencode(folder) + b"/" + raw)
        assert os.fsencode(id_file(path_id(path)) or "") == os.fsencode(path)
    assert id_file("https://example.com/a.png") is None
    assert id_file("line 3 of /data/list.csv") is None
    assert id_file("my-own-id-7") is None
