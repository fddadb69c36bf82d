"""``batchclassify export``: each format read back the way its consumer reads it.

Outputs come from real jobs against the local server (``server``), so rows have the shape
``run`` writes; a few tests write rows by hand to reach a case a real job cannot.
"""

from __future__ import annotations

import csv
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson
import pytest

from batchclassify.commands.export.options import parse_splits, split_of
from batchclassify.server import BackgroundServer

from .conftest import Cli, make_image, png, read_rows, run_args


def _job(tmp_path: Path, server: BackgroundServer, cli: Cli, *, model: str = "colors/1") -> Path:
    """A job over two folders holding the same file names, a broken file and a URL item."""
    for folder, colors in (("a", ["blue", "red", "green"]), ("b", ["yellow", "red", "white"])):
        for n, color in enumerate(colors):
            (tmp_path / "imgs" / folder).mkdir(parents=True, exist_ok=True)
            (tmp_path / "imgs" / folder / f"img{n}.png").write_bytes(png(color))
    (tmp_path / "imgs" / "a" / "broken.png").write_bytes(b"not an image")
    manifest = tmp_path / "urls.txt"
    manifest.write_text(f"{server.url}/_files/red.png\n")
    output = tmp_path / "out.jsonl"
    result = cli(*run_args(server, output, tmp_path / "imgs", manifest, model=model))
    assert result.code == 1, result.err  # the broken file failed
    return output


@pytest.fixture
def files_server(make_server: Callable[..., BackgroundServer], tmp_path: Path) -> BackgroundServer:
    served = tmp_path / "served"
    served.mkdir()
    (served / "red.png").write_bytes(png("red"))
    return make_server(files_dir=served)


def _ok_rows(output: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in read_rows(output) if row["status"] == "ok"}


def _mapping(dest: Path) -> list[dict[str, str]]:
    with open(dest / ".batchclassify-mapping.tsv", newline="") as handle:
        return list(csv.DictReader(handle, dialect="excel-tab"))


def test_folders_tree_matches_rows_collisions_renamed(
    tmp_path: Path, files_server: BackgroundServer, cli: Cli
) -> None:
    output = _job(tmp_path, files_server, cli)
    rows = _ok_rows(output)
    dest = tmp_path / "dataset"
    result = cli("export", output, "--to", "folders", dest)
    assert result.code == 0, result.err
    assert "exported 6 images" in result.out
    assert "1 failed row," in result.out and "1 URL item (" in result.out
    # Walk the tree as ImageFolder does: DEST/train/<class>/<file>.
    seen = {}
    for class_dir in (dest / "train").iterdir():
        for image in class_dir.iterdir():
            assert image.is_symlink()
            seen[os.path.realpath(image)] = class_dir.name
    assert seen == {
        os.path.realpath(row["path"]): row["top"] for row in rows.values() if row["path"]
    }
    # img1.png is red in both folders: neither overwrote the other, both renamed, recorded.
    red = sorted(p.name for p in (dest / "train" / "red").iterdir())
    assert len(red) == 2 and all(name.startswith("img1__") for name in red)
    mapping = _mapping(dest)
    assert len(mapping) == 8
    exported = {m["id"]: m["exported"] for m in mapping if m["outcome"] == "exported"}
    assert {os.path.realpath(dest / path) for path in exported.values()} == set(seen)
    assert sorted(m["outcome"] for m in mapping if m["outcome"] != "exported") == [
        "failed",
        "url_skipped",
    ]


def test_min_confidence_sends_unsure_images_to_review(tmp_path: Path, cli: Cli) -> None:
    output = tmp_path / "out.jsonl"
    rows = [
        _row("sure", make_image(tmp_path / "i" / "sure.png", "red"), "red", 0.95),
        _row("unsure", make_image(tmp_path / "i" / "unsure.png", "blue"), "blue", 0.4),
        _row("none", make_image(tmp_path / "i" / "none.png", "green"), None, None),
    ]
    output.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    dest = tmp_path / "d"
    result = cli("export", output, "--to", "folders", dest, "--min-confidence", "0.5")
    assert result.code == 0, result.err
    assert (dest / "train" / "red" / "sure.png").exists()
    assert (dest / "_review" / "blue" / "unsure.png").exists()
    assert (dest / "_review" / "_no_class" / "none.png").exists()
    assert "2 to review" in result.out
    csv_out = tmp_path / "out.csv"
    assert cli("export", output, "--to", "csv", csv_out, "--min-confidence", "0.5").code == 0
    with open(csv_out, newline="") as handle:
        flags = {line["id"]: line["needs_review"] for line in csv.DictReader(handle)}
    assert flags == {"sure": "0", "unsure": "1", "none": "1"}


def _row(
    item_id: str, path: Path | None, top: str | None, conf: float | None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": item_id,
        "path": None if path is None else str(path),
        "url": extra.pop("url", None),
        "status": "ok",
        "top": top,
        "confidence": conf,
        "predicted_classes": extra.pop("classes", [top] if top else []),
        "predictions": extra.pop(
            "predictions", [{"class": top, "confidence": conf}] if top else []
        ),
        "multilabel": extra.pop("multilabel", False),
        **extra,
    }


def test_roboflow_multilabel_classes_csv_plain_comma_rule(
    tmp_path: Path, files_server: BackgroundServer, cli: Cli
) -> None:
    output = _job(tmp_path, files_server, cli, model="colors-multilabel/1")
    rows = _ok_rows(output)
    dest = tmp_path / "ml"
    result = cli(
        "export", output, "--to", "roboflow-multilabel", dest, "--split", "train=0.5,valid=0.5"
    )
    assert result.code == 0, result.err
    by_file = {m["exported"]: m["id"] for m in _mapping(dest) if m["outcome"] == "exported"}
    checked = 0
    for classes_csv in dest.glob("*/_classes.csv"):  # a split may get no image at all
        split = classes_csv.parent.name
        lines = classes_csv.read_text().splitlines()
        header = lines[0].split(",")  # Roboflow's parser: plain commas, no quoting
        assert header[0] == "filename"
        for line in lines[1:]:
            cells = line.split(",")
            assert len(cells) == len(header)
            assert (dest / split / cells[0]).exists()
            row = rows[by_file[f"{split}/{cells[0]}"]]
            labelled = {c for c, v in zip(header[1:], cells[1:], strict=True) if v == "1"}
            assert labelled == set(row["predicted_classes"])
            checked += 1
    assert checked == 6


def test_multilabel_renames_comma_classes_and_files(tmp_path: Path, cli: Cli) -> None:
    image = make_image(tmp_path / "i" / "a,b.png", "red")
    output = tmp_path / "out.jsonl"
    row = _row(
        "x",
        image,
        "red,dark",
        0.9,
        classes=["red,dark", "round"],
        multilabel=True,
        predictions=[
            {"class": "red,dark", "confidence": 0.9},
            {"class": "round", "confidence": 0.7},
        ],
    )
    output.write_bytes(orjson.dumps(row) + b"\n")
    dest = tmp_path / "ml"
    result = cli("export", output, "--to", "roboflow-multilabel", dest)
    assert result.code == 0, result.err
    assert "class 'red,dark' written as 'red_dark'" in result.out
    lines = (dest / "train" / "_classes.csv").read_text().splitlines()
    assert lines == ["filename,red_dark,round", "a_b.png,1,1"]


def test_label_studio_tasks_and_config(
    tmp_path: Path, files_server: BackgroundServer, cli: Cli
) -> None:
    output = _job(tmp_path, files_server, cli)
    rows = _ok_rows(output)
    dest = tmp_path / "ls"
    result = cli("export", output, "--to", "label-studio", dest, "--min-confidence", "0.99")
    assert result.code == 0, result.err
    assert "LOCAL_FILES_DOCUMENT_ROOT=" in result.out
    config = ET.fromstring((dest / "labeling-config.xml").read_text())
    choices = config.find("Choices")
    assert choices is not None and choices.get("choice") == "single"
    image_tag = config.find("Image")
    assert image_tag is not None and image_tag.get("value") == "$image"
    allowed = {c.get("value") for c in choices.findall("Choice")}
    tasks = json.loads((dest / "tasks.json").read_text())
    assert len(tasks) == len(rows) == 7  # the URL item is referenced by its URL
    for task in tasks:
        row = rows[task["data"]["batchclassify_id"]]
        (prediction,) = task["predictions"]
        assert set(prediction) == {"model_version", "score", "result"}
        assert prediction["model_version"] == "colors/1"
        assert prediction["score"] == row["confidence"]
        (result_item,) = prediction["result"]
        assert result_item["type"] == "choices"
        assert result_item["from_name"] == choices.get("name")
        assert result_item["to_name"] == image_tag.get("name")
        assert result_item["value"]["choices"] == [row["top"]]
        assert set(result_item["value"]["choices"]) <= allowed
        assert task["data"]["needs_review"] == (row["confidence"] < 0.99)
        image = task["data"]["image"]
        if row["url"]:
            assert image == row["url"]
        else:  # what Label Studio's local-files view resolves, under its document root
            parsed = urlparse(image)
            assert parsed.path == "/data/local-files/"
            served = dest / parse_qs(parsed.query)["d"][0]
            assert os.path.realpath(served) == os.path.realpath(row["path"])


def test_label_studio_multilabel_choice_multiple(tmp_path: Path, cli: Cli) -> None:
    image = make_image(tmp_path / "i" / "a.png", "red")
    output = tmp_path / "out.jsonl"
    row = _row("x", image, "red", 0.9, classes=["red", "blue"], multilabel=True)
    output.write_bytes(orjson.dumps(row) + b"\n")
    dest = tmp_path / "ls"
    assert cli("export", output, "--to", "label-studio", dest).code == 0
    choices = ET.fromstring((dest / "labeling-config.xml").read_text()).find("Choices")
    assert choices is not None and choices.get("choice") == "multiple"
    (task,) = json.loads((dest / "tasks.json").read_text())
    assert task["predictions"][0]["result"][0]["value"]["choices"] == ["red", "blue"]


def test_csv_has_every_ok_row_and_metadata(
    tmp_path: Path, files_server: BackgroundServer, cli: Cli
) -> None:
    output = tmp_path / "out.parquet"
    manifest = tmp_path / "m.csv"
    paths = [make_image(tmp_path / "i" / f"{c}.png", c) for c in ("red", "blue")]
    manifest.write_text("path,site\n" + "".join(f"{p},north\n" for p in paths))
    assert cli(*run_args(files_server, output, manifest)).code == 0
    dest = tmp_path / "flat.csv"
    result = cli("export", output, "--to", "csv", dest)
    assert result.code == 0, result.err
    with open(dest, newline="") as handle:
        lines = list(csv.DictReader(handle))
    rows = _ok_rows(output)
    assert {line["id"]: line["top"] for line in lines} == {i: r["top"] for i, r in rows.items()}
    assert all(line["site"] == "north" for line in lines)
    assert all(float(line["confidence"]) == rows[line["id"]]["confidence"] for line in lines)


def test_splits_are_deterministic_and_near_fractions(tmp_path: Path) -> None:
    splits = parse_splits("train=0.8,valid=0.1,test=0.1")
    ids = [f"/data/img{n:05d}.jpg" for n in range(5000)]
    first = [split_of(i, splits, "7") for i in ids]
    assert first == [split_of(i, splits, "7") for i in ids]
    assert abs(first.count("train") / 5000 - 0.8) < 0.03
    assert first != [split_of(i, splits, "8") for i in ids]
    # A fixed point: the hash is keyed BLAKE2b, the same in every process and on every machine.
    assert split_of("/data/img00000.jpg", splits, "7") == first[0]


@pytest.mark.parametrize("mode", ["symlink", "hardlink", "copy"])
def test_modes(tmp_path: Path, cli: Cli, mode: str) -> None:
    image = make_image(tmp_path / "i" / "a.png", "red")
    original, before = image.read_bytes(), image.lstat()
    output = tmp_path / "out.jsonl"
    output.write_bytes(orjson.dumps(_row("x", image, "red", 0.9)) + b"\n")
    dest = tmp_path / "d"
    assert cli("export", output, "--to", "folders", dest, "--mode", mode).code == 0
    exported = dest / "train" / "red" / "a.png"
    assert exported.is_symlink() == (mode == "symlink")
    assert exported.read_bytes() == original
    same_inode = exported.stat().st_ino == image.stat().st_ino
    assert same_inode == (mode != "copy")
    # The original is untouched: the same file (not replaced by a link), the same bytes.
    after = image.lstat()
    assert not image.is_symlink() and image.read_bytes() == original
    assert after.st_ino == before.st_ino and after.st_mtime_ns == before.st_mtime_ns


def test_refuses_non_empty_dest_and_overwrites_only_its_own(tmp_path: Path, cli: Cli) -> None:
    image = make_image(tmp_path / "i" / "a.png", "red")
    output = tmp_path / "out.jsonl"
    output.write_bytes(orjson.dumps(_row("x", image, "red", 0.9)) + b"\n")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = cli("export", output, "--to", "folders", foreign)
    assert result.code == 2 and "not empty" in result.err
    result = cli("export", output, "--to", "folders", foreign, "--overwrite")
    assert result.code == 2 and "not written by batchclassify export" in result.err
    assert (foreign / "notes.txt").read_text() == "keep me"

    dest = tmp_path / "d"
    assert cli("export", output, "--to", "folders", dest).code == 0
    assert cli("export", output, "--to", "folders", dest).code == 2
    assert cli("export", output, "--to", "folders", dest, "--overwrite").code == 0
    (dest / "train" / "red" / "user-added.txt").write_text("mine")
    result = cli("export", output, "--to", "folders", dest, "--overwrite")
    assert result.code == 2 and "user-added.txt" in result.err
    assert (dest / "train" / "red" / "user-added.txt").read_text() == "mine"
    assert (dest / "train" / "red" / "a.png").exists()  # nothing deleted on refusal

    their_csv = tmp_path / "their.csv"
    their_csv.write_text("a,b\n1,2\n")
    assert cli("export", output, "--to", "csv", their_csv, "--overwrite").code == 2
    assert their_csv.read_text() == "a,b\n1,2\n"


def test_folders_refuses_a_multilabel_output(tmp_path: Path, cli: Cli) -> None:
    image = make_image(tmp_path / "i" / "a.png", "red")
    output = tmp_path / "out.jsonl"
    output.write_bytes(orjson.dumps(_row("x", image, "red", 0.9, multilabel=True)) + b"\n")
    result = cli("export", output, "--to", "folders", tmp_path / "d")
    assert result.code == 2 and "roboflow-multilabel" in result.err
    assert not (tmp_path / "d").exists()


def test_bad_split_is_a_usage_error(tmp_path: Path, cli: Cli) -> None:
    output = tmp_path / "out.jsonl"
    output.write_bytes(b"")
    result = cli(
        "export", output, "--to", "csv", tmp_path / "x.csv", "--split", "train=0.8,test=0.1"
    )
    assert result.code == 2 and "add up to 0.9" in result.err


def test_hardlink_across_filesystems_falls_back_to_copy(tmp_path: Path, cli: Cli) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second filesystem (/dev/shm)")
    import tempfile

    with tempfile.TemporaryDirectory(dir=shm) as other:
        image = make_image(Path(other) / "a.png", "red")
        output = tmp_path / "out.jsonl"
        output.write_bytes(orjson.dumps(_row("x", image, "red", 0.9)) + b"\n")
        dest = tmp_path / "d"
        result = cli("export", output, "--to", "folders", dest, "--mode", "hardlink")
        assert result.code == 0, result.err
        assert "hard links cannot cross filesystems" in result.err
        assert "copies" in result.out
        exported = dest / "train" / "red" / "a.png"
        assert not exported.is_symlink() and exported.read_bytes() == image.read_bytes()


def test_label_studio_document_root(tmp_path: Path, cli: Cli) -> None:
    image = make_image(tmp_path / "i" / "a b&c.png", "red")
    output = tmp_path / "out.jsonl"
    output.write_bytes(orjson.dumps(_row("x", image, "red", 0.9)) + b"\n")
    dest = tmp_path / "projects" / "ls"
    root = tmp_path / "projects"
    result = cli("export", output, "--to", "label-studio", dest, "--document-root", root)
    assert result.code == 0, result.err
    (task,) = json.loads((dest / "tasks.json").read_text())
    relative = parse_qs(urlparse(task["data"]["image"]).query)["d"][0]
    assert relative == "ls/images/a b&c.png"  # percent-encoded in the URL, decoded here
    assert (root / relative).read_bytes() == image.read_bytes()
    result = cli("export", output, "--to", "label-studio", tmp_path / "x", "--document-root", dest)
    assert result.code == 2 and "must be inside it" in result.err
