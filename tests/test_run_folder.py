"""Relative paths of an output are relative to the folder ``run`` started in, which the
output's settings record: ``export`` and ``report`` run from another folder never take a
different file that happens to have the same relative path there."""

from __future__ import annotations

import json
import os
from pathlib import Path

import orjson
import pytest
from PIL import Image

from batchclassify.server import BackgroundServer

from .conftest import COLORS, Cli, run_args


def _image(path: Path, color: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), COLORS[color]).save(path)


def _exported(dest: Path) -> dict[str, str]:
    """ImageFolder's view of DEST/train: each linked file's real path -> its class folder."""
    return {
        os.path.realpath(image): folder.name
        for folder in (dest / "train").iterdir()
        for image in folder.iterdir()
    }


@pytest.mark.parametrize("how", ["run", "merge", "processes"])
def test_export_from_another_folder_links_the_runs_file_not_a_namesake_there(
    tmp_path: Path,
    server: BackgroundServer,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _image(a / "img" / "one.png", "red")
    _image(a / "img" / "two.png", "blue")
    _image(b / "img" / "one.png", "green")  # same relative path, another image
    _image(b / "img" / "two.png", "green")
    # A manifest's own id column: the id is not the file, so its relative path is all there is.
    (a / "list.csv").write_text("id,path\nfirst,img/one.png\nsecond,img/two.png\n")
    monkeypatch.chdir(a)
    if how == "merge":
        shards = [tmp_path / f"part-{n}.jsonl" for n in (0, 1)]
        for n, shard in enumerate(shards):
            result = cli(*run_args(server, shard, "list.csv"), "--shard", f"{n}/2", "-q")
            assert result.code == 0, result.err
        output = tmp_path / "merged.jsonl"
        result = cli("merge", *shards, "--output", output)
        assert result.code == 0, result.err
    else:
        output = tmp_path / "out.jsonl"
        extra = ["--processes", "2"] if how == "processes" else []
        result = cli(*run_args(server, output, "list.csv"), "-q", *extra)
        assert result.code == 0, result.err

    settings = orjson.loads(Path(f"{output}.job.json").read_bytes())
    assert settings["workdir"] == str(a)  # --processes and merge carry their shards' too

    monkeypatch.chdir(b)
    dest = tmp_path / "dataset"
    result = cli("export", output, "--to", "folders", dest)
    assert result.code == 0, result.err
    assert _exported(dest) == {
        os.path.realpath(a / "img" / "one.png"): "red",
        os.path.realpath(a / "img" / "two.png"): "blue",
    }


def test_an_output_without_a_recorded_folder_is_read_beside_itself(
    tmp_path: Path, server: BackgroundServer, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _image(a / "img" / "one.png", "red")
    _image(b / "img" / "one.png", "green")
    (a / "list.csv").write_text("id,path\nfirst,img/one.png\n")
    monkeypatch.chdir(a)
    output = a / "out.jsonl"
    assert cli(*run_args(server, output, "list.csv"), "-q").code == 0
    settings_file = Path(f"{output}.job.json")
    settings = json.loads(settings_file.read_text())
    del settings["workdir"]  # as an older version wrote it
    settings_file.write_text(json.dumps(settings))
    _as_older_versions_wrote(output, "img/one.png")

    monkeypatch.chdir(b)
    dest = tmp_path / "dataset"
    assert cli("export", output, "--to", "folders", dest).code == 0
    assert _exported(dest) == {os.path.realpath(a / "img" / "one.png"): "red"}


def _as_older_versions_wrote(output: Path, relative: str) -> None:
    """Rows with a manifest's relative path as given, as earlier versions wrote them:
    relative to the folder ``run`` started in."""
    rows = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    for row in rows:
        row["path"] = relative
    output.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))


@pytest.mark.parametrize("rows", ["this version's", "an older version's"])
def test_a_rerun_from_another_folder_leaves_each_row_its_own_file(
    tmp_path: Path,
    server: BackgroundServer,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    rows: str,
) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _image(a / "img" / "one.png", "red")
    _image(a / "img" / "two.png", "green")
    _image(b / "img" / "one.png", "green")  # same relative paths, other images
    _image(b / "img" / "two.png", "blue")
    c.mkdir()
    (a / "list.csv").write_text("id,path\nfirst,img/one.png\n")
    (b / "more.csv").write_text("id,path\nsecond,img/two.png\n")
    output = tmp_path / "out.jsonl"
    monkeypatch.chdir(a)
    assert cli(*run_args(server, output, "list.csv"), "-q").code == 0
    if rows == "an older version's":
        _as_older_versions_wrote(output, "img/one.png")

    # The same job, resumed from another folder with more of its images.
    monkeypatch.chdir(b)
    result = cli(*run_args(server, output, "more.csv"), "-q")
    assert result.code == 0, result.err
    settings = json.loads(Path(f"{output}.job.json").read_text())
    assert settings["workdir"] == str(a)  # where the first rows' relative paths start

    # Before: the rerun recorded b, so "first" was exported as b's one.png (green) under red.
    monkeypatch.chdir(c)
    dest = tmp_path / "dataset"
    result = cli("export", output, "--to", "folders", dest)
    assert result.code == 0, result.err
    assert _exported(dest) == {
        os.path.realpath(a / "img" / "one.png"): "red",
        os.path.realpath(b / "img" / "two.png"): "blue",
    }
