"""Every export format read back by the program it is made for, labels compared per image.

Roboflow's own folder parser (``roboflow.util.folderparser.parsefolder``, what
``Workspace.upload_dataset`` and the ``roboflow`` CLI's folder upload run) for ``folders`` and
``roboflow-multilabel``; Hugging Face ``datasets``' ``imagefolder`` for ``folders``;
label-studio-sdk's ``LabelInterface`` for ``label-studio``; pandas for ``csv``. Images are
symlinked, so each image the consumer lists is traced back to its row by its real path.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchclassify.server import BackgroundServer

from .conftest import Cli, make_image, read_rows, run_args, unique_png


def _row(item_id: str, path: Path | None, top: str | None, **extra: Any) -> dict[str, Any]:
    """An ``ok`` row as ``run`` writes it (single-label unless ``multilabel=True``)."""
    confidence = extra.pop("confidence", 0.9 if top else None)
    return {
        "id": item_id,
        "path": None if path is None else str(path),
        "url": extra.pop("url", None),
        "status": "ok",
        "top": top,
        "confidence": confidence,
        "predicted_classes": extra.pop("classes", [top] if top else []),
        "predictions": extra.pop(
            "predictions", [{"class": top, "confidence": confidence}] if top else []
        ),
        "multilabel": extra.pop("multilabel", False),
        **extra,
    }


def _write(output: Path, rows: list[dict[str, Any]]) -> Path:
    output.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return output


def _real_job(tmp_path: Path, server: BackgroundServer, cli: Cli, model: str) -> Path:
    """A job over two folders whose files share names (``img0.png`` in both)."""
    colors = {"a": ["blue", "red", "green", "red"], "b": ["yellow", "red", "white", "blue"]}
    for folder, names in colors.items():
        for n, color in enumerate(names):
            make_image(tmp_path / "imgs" / folder / f"img{n}.png", color)
    output = tmp_path / "out.jsonl"
    result = cli(*run_args(server, output, tmp_path / "imgs", model=model))
    assert result.code == 0, result.err
    return output


def _ok_by_path(output: Path) -> dict[str, dict[str, Any]]:
    rows = [row for row in read_rows(output) if row["status"] == "ok" and row["path"]]
    return {os.path.realpath(row["path"]): row for row in rows}


def _roboflow(dest: Path) -> list[dict[str, Any]]:
    from roboflow.util.folderparser import parsefolder

    parsed: list[dict[str, Any]] = parsefolder(str(dest), is_classification=True)["images"]
    return parsed


def _mapping(dest: Path) -> list[dict[str, str]]:
    with open(dest / ".batchclassify-mapping.tsv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, dialect="excel-tab"))


# -- folders ---------------------------------------------------------------------------------


def test_folders_read_by_roboflow_uploader(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    output = _real_job(tmp_path, server, cli, "colors/1")
    dest = tmp_path / "dataset"
    split = "train=0.5,valid=0.5"
    assert cli("export", output, "--to", "folders", dest, "--split", split).code == 0
    images = _roboflow(dest)
    got = {
        os.path.realpath(f"{dest}{image['file']}"): (
            image["annotationfile"]["classification_label"],
            image["split"],
        )
        for image in images
    }
    mapping = {os.path.realpath(m["source"]): m["split"] for m in _mapping(dest)}
    rows = _ok_by_path(output)
    assert got == {path: (row["top"], mapping[path]) for path, row in rows.items()}
    assert len(got) == 8 and {split for _, split in got.values()} == {"train", "valid"}


@pytest.fixture
def hf_offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``datasets`` with no network: the offline switches it reads, set before its import."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    yield


def test_folders_read_by_hf_imagefolder(
    tmp_path: Path, server: BackgroundServer, cli: Cli, hf_offline: None
) -> None:
    from datasets import Image, load_dataset

    output = _real_job(tmp_path, server, cli, "colors/1")
    rows = _ok_by_path(output)
    unsure = min(rows.values(), key=lambda row: row["confidence"])["confidence"] + 1e-9
    dest = tmp_path / "dataset"
    result = cli(
        "export", output, "--to", "folders", dest, "--split", "train=0.5,valid=0.5",
        "--min-confidence", str(unsure),
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "Roboflow's uploader reads" in result.out and "_review/" in result.out
    # drop_labels=False: by default imagefolder labels a split only if it holds two classes.
    loaded = load_dataset(
        "imagefolder", data_dir=str(dest), cache_dir=str(tmp_path / "hf"), drop_labels=False
    )
    got = {}
    for split, dataset in loaded.items():
        names = dataset.features["label"].names
        for example in dataset.cast_column("image", Image(decode=False)):
            got[os.path.realpath(example["image"]["path"])] = (names[example["label"]], split)
    splits = {"train": "train", "valid": "validation"}  # imagefolder's name for valid/
    mapping = _mapping(dest)
    expected = {
        os.path.realpath(m["source"]): (json.loads(m["classes"])[0], splits[m["split"]])
        for m in mapping
        if m["needs_review"] == "0"
    }
    assert got == expected  # what went to _review/ is in no split
    assert len(got) == len(rows) - 1
    assert {os.path.realpath(path): row["top"] for path, row in rows.items()} == {
        os.path.realpath(m["source"]): json.loads(m["classes"])[0] for m in mapping
    }


def test_long_class_name_is_shortened_not_a_traceback(tmp_path: Path, cli: Cli) -> None:
    long_class = "c" * 300
    rows = [
        _row("a", make_image(tmp_path / "i" / "a.png", "red"), long_class),
        _row("b", make_image(tmp_path / "i" / "b.png", "blue"), "blue"),
    ]
    output = _write(tmp_path / "out.jsonl", rows)
    dest = tmp_path / "d"
    result = cli("export", output, "--to", "folders", dest)
    assert result.code == 0, result.err
    (shortened,) = [p.name for p in (dest / "train").iterdir() if p.name != "blue"]
    assert len(shortened.encode()) <= 255 and shortened.startswith("c" * 200)
    assert f"written as {shortened!r}" in result.out
    labels = {
        os.path.realpath(f"{dest}{image['file']}"): image["annotationfile"]["classification_label"]
        for image in _roboflow(dest)
    }
    assert labels == {
        os.path.realpath(tmp_path / "i" / "a.png"): shortened,
        os.path.realpath(tmp_path / "i" / "b.png"): "blue",
    }
    # The mapping keeps the class as the model named it.
    by_id = {m["id"]: m for m in _mapping(dest)}
    assert json.loads(by_id["a"]["classes"]) == [long_class]
    assert by_id["a"]["exported"] == f"train/{shortened}/a.png"


def test_failed_export_leaves_dest_as_it_was(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [_row(f"i{n}", make_image(tmp_path / "i" / f"{n}.png", "red"), "red") for n in range(4)]
    output = _write(tmp_path / "out.jsonl", rows)
    real_copy = shutil.copyfile
    copies = []

    def disk_full_at_the_third(source: str, target: str) -> Any:
        copies.append(target)
        if len(copies) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(source, target)

    monkeypatch.setattr(shutil, "copyfile", disk_full_at_the_third)
    new = tmp_path / "new"
    result = cli("export", output, "--to", "folders", new, "--mode", "copy")
    assert result.code != 0 and "No space left on device" in result.err
    assert not new.exists()  # it made DEST: it is gone again
    empty = tmp_path / "empty"
    empty.mkdir()
    copies.clear()
    assert cli("export", output, "--to", "folders", empty, "--mode", "copy").code != 0
    assert list(empty.iterdir()) == []


# -- roboflow-multilabel ---------------------------------------------------------------------


def _multilabel(item_id: str, path: Path, classes: list[str], top: str) -> dict[str, Any]:
    scores = [{"class": c, "confidence": 0.9} for c in classes] or [
        {"class": top, "confidence": 0.3}
    ]
    return _row(item_id, path, top, classes=classes, predictions=scores, multilabel=True)


def test_multilabel_read_by_roboflow_uploader(tmp_path: Path, cli: Cli) -> None:
    rows = []
    # Same file names in two folders: with two splits some pair lands in both. The split
    # follows the bytes, which hold the path (tmp_path differs every run): with 6 pairs all
    # landed together in 1 run of 64 (the guard below failed at random); with 24, 1 in 16M.
    for n in range(24):
        rows.append(
            _multilabel(f"a{n}", make_image(tmp_path / "a" / f"img{n}.png"), ["red"], "red")
        )
        rows.append(
            _multilabel(f"b{n}", make_image(tmp_path / "b" / f"img{n}.png"), ["blue"], "blue")
        )
    odd = tmp_path / "odd"
    rows += [
        _multilabel("lead", make_image(odd / " lead.png"), [" dark", "round "], " dark"),
        _multilabel("trail", make_image(odd / "trail .png"), ["blue"], "blue"),
        _multilabel("comma", make_image(odd / "x,y.png"), ["dark,red"], "dark,red"),
        _multilabel("csvname", make_image(odd / "_classes.png"), ["green"], "green"),
        _multilabel("none", make_image(odd / "none.png"), [], "red"),  # nothing over threshold
    ]
    output = _write(tmp_path / "out.jsonl", rows)
    dest = tmp_path / "ml"
    result = cli(
        "export", output, "--to", "roboflow-multilabel", dest, "--split", "train=0.5,valid=0.5"
    )
    assert result.code == 0, result.err
    assert "class ' dark' written as 'dark'" in result.out
    splits = {m["id"]: m["split"] for m in _mapping(dest)}
    assert splits["a0"] != splits["b0"] or any(
        splits[f"a{n}"] != splits[f"b{n}"] for n in range(24)
    ), "no file name in two splits: the test would not test the cross-split lookup"
    images = _roboflow(dest)
    got = {
        os.path.realpath(f"{dest}{image['file']}"): sorted(image["annotationfile"]["labels"])
        for image in images
    }

    def as_written(name: str) -> str:
        return name.replace(",", "_").strip()

    assert got == {
        os.path.realpath(row["path"]): sorted(as_written(c) for c in row["predicted_classes"])
        for row in rows
    }
    assert got[os.path.realpath(odd / "none.png")] == []
    flagged = {m["id"] for m in _mapping(dest) if m["needs_review"] == "1"}
    assert flagged == {"none"}


# -- label-studio ----------------------------------------------------------------------------


def test_label_studio_validated_by_sdk(tmp_path: Path, cli: Cli) -> None:
    from label_studio_sdk.label_interface import LabelInterface

    classes = ["red", "nul\x00here", "bell\x07", "semi;colon", "<tag>&"]
    rows = [
        _row(f"i{n}", make_image(tmp_path / "i" / f"{n}.png", "red"), name)
        for n, name in enumerate(classes)
    ]
    output = _write(tmp_path / "out.jsonl", rows)
    dest = tmp_path / "ls"
    result = cli("export", output, "--to", "label-studio", dest)
    assert result.code == 0, result.err
    interface = LabelInterface((dest / "labeling-config.xml").read_text(encoding="utf-8"))
    interface.validate()
    control = interface.get_control("class")
    assert control.attr["choice"] == "single"
    written = {"red", "nul_here", "bell_", "semi;colon", "<tag>&"}
    assert set(control.labels) == written
    tasks = json.loads((dest / "tasks.json").read_text(encoding="utf-8"))
    by_id = {row["id"]: row for row in rows}
    for task in tasks:
        (prediction,) = task["predictions"]
        assert interface.validate_prediction(prediction, return_errors=True) == []
        (region,) = prediction["result"]
        expected = [by_id[task["data"]["batchclassify_id"]]["top"]]
        assert region["value"]["choices"] == [
            c.replace("\x00", "_").replace("\x07", "_") for c in expected
        ]
    assert len(tasks) == len(rows)


# -- csv -------------------------------------------------------------------------------------


def test_csv_read_by_pandas(tmp_path: Path, cli: Cli) -> None:
    import pandas as pd

    image = make_image(tmp_path / "i" / "a.png", "red")
    rows = [
        _row(
            "=cmd|'/c calc'!A1",
            image,
            "a;b",
            classes=["a;b", "c,d"],
            predictions=[{"class": "a;b", "confidence": 0.9}, {"class": "c,d", "confidence": 0.8}],
            multilabel=True,
            site="@SUM(1+1)",
            depth=-3.5,
        ),
        _row("plain", image, "-danger", site="north", depth=2),
        _row("+1", image, "+x", site="+41 22", depth=0),
    ]
    output = _write(tmp_path / "out.jsonl", rows)
    guarded = tmp_path / "guarded.csv"
    assert cli("export", output, "--to", "csv", guarded).code == 0
    table = pd.read_csv(guarded, dtype=str, keep_default_na=False).to_dict("records")
    assert [(line["id"], line["top"], line["site"], line["depth"]) for line in table] == [
        ("'=cmd|'/c calc'!A1", "a;b", "'@SUM(1+1)", "-3.5"),
        ("plain", "'-danger", "north", "2"),
        ("+1", "'+x", "'+41 22", "0"),  # a number is left as it is
    ]
    raw = tmp_path / "raw.csv"
    assert cli("export", output, "--to", "csv", raw, "--no-formula-guard").code == 0
    plain = pd.read_csv(raw, dtype=str, keep_default_na=False).to_dict("records")
    assert [line["id"] for line in plain] == [row["id"] for row in rows]
    for lines in (table, plain):  # the classes read back as themselves, ';' and ',' included
        got = [json.loads(line["predicted_classes"]) for line in lines]
        assert got == [row["predicted_classes"] for row in rows]
    for line, row in zip(plain, rows, strict=True):
        assert (line["top"], line["site"]) == (row["top"], row["site"])


# -- splits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("to", ["csv", "folders"])
def test_identical_images_land_in_one_split(tmp_path: Path, cli: Cli, to: str) -> None:
    import pandas as pd

    rows = []
    for n in range(20):  # 20 images, each saved under two names
        body = unique_png("red", f"picture {n}")
        for copy in ("x", "y"):
            path = tmp_path / "i" / f"{copy}{n:02d}.png"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(body)
            rows.append(_row(f"{copy}{n:02d}", path, "red"))
    output = _write(tmp_path / "out.jsonl", rows)
    dest = tmp_path / ("out.csv" if to == "csv" else "d")
    split = "train=0.6,valid=0.2,test=0.2"
    assert cli("export", output, "--to", to, dest, "--split", split).code == 0
    if to == "csv":
        table = pd.read_csv(dest, dtype=str)
        splits = dict(zip(table["id"], table["split"], strict=True))
    else:
        splits = {m["id"]: m["split"] for m in _mapping(dest)}
        for item_id, name in splits.items():
            assert (dest / name / "red" / f"{item_id}.png").exists()
    assert all(splits[f"x{n:02d}"] == splits[f"y{n:02d}"] for n in range(20))
    assert len(set(splits.values())) > 1


# -- file types the consumers skip -----------------------------------------------------------


def test_gif_and_webp_are_named_in_the_printout(tmp_path: Path, cli: Cli) -> None:
    images = {
        "a.png": make_image(tmp_path / "i" / "a.png", "red"),
        "b.gif": make_image(tmp_path / "i" / "b.gif", "red", fmt="GIF"),
        "c.webp": make_image(tmp_path / "i" / "c.webp", "red", fmt="WEBP"),
    }
    output = _write(tmp_path / "out.jsonl", [_row(n, p, "red") for n, p in images.items()])
    dest = tmp_path / "d"
    result = cli("export", output, "--to", "folders", dest)
    assert result.code == 0, result.err
    assert "Roboflow's uploader skips 2 images of this export (1 .gif, 1 .webp)" in result.out
    assert "torchvision ImageFolder skips 1 image of this export (1 .gif)" in result.out
    assert [image["name"] for image in _roboflow(dest)] == ["a.png"]  # what the note says
    ml = tmp_path / "ml"
    rows = [_multilabel(n, p, ["red"], "red") for n, p in images.items()]
    result = cli("export", _write(tmp_path / "ml.jsonl", rows), "--to", "roboflow-multilabel", ml)
    assert result.code == 0, result.err
    assert "Roboflow's uploader skips 2 images" in result.out
    assert "torchvision" not in result.out
    result = cli("export", output, "--to", "label-studio", tmp_path / "ls")
    assert "skips" not in result.out  # a browser shows them


# -- the walk and an export inside a source folder -------------------------------------------


def test_run_does_not_walk_an_export_inside_its_source(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    from batchclassify.inputs.counting import count_items

    source = tmp_path / "photos"
    for n, color in enumerate(["red", "blue", "green"]):
        make_image(source / f"{n}.png", color)
    output = tmp_path / "out.jsonl"
    assert cli(*run_args(server, output, source)).code == 0
    assert cli("export", output, "--to", "folders", source / "dataset").code == 0
    # An export an earlier version wrote (its marker's old name) is left out too.
    old = source / "old-export"
    make_image(old / "train" / "red" / "x.png", "red")
    (old / "batchclassify-export.json").write_text('{"tool": "batchclassify export"}')
    extensions = frozenset({"png"})
    assert count_items([str(source)], extensions=extensions) == 3
    result = cli(*run_args(server, output, source))
    assert result.code == 0, result.err
    assert len(read_rows(output)) == 3  # nothing new was sent
    assert "2 folders written by batchclassify export not walked" in result.err + result.out
    # Given as a source itself, an export is walked: the user asked for it.
    assert count_items([str(source / "dataset")], extensions=extensions) == 3


# -- DEST's marker -------------------------------------------------------------------------


def test_an_export_in_the_earlier_layout_is_recognised(tmp_path: Path, cli: Cli) -> None:
    image = make_image(tmp_path / "i" / "a.png", "red")
    output = _write(tmp_path / "out.jsonl", [_row("a", image, "blue")])
    dest = tmp_path / "d"  # what the previous version wrote
    (dest / "train" / "red").mkdir(parents=True)
    os.symlink(image, dest / "train" / "red" / "a.png")
    (dest / "batchclassify-export.json").write_text(
        json.dumps({"tool": "batchclassify export", "files": [], "format": "folders"})
    )
    (dest / "batchclassify-mapping.csv").write_text(
        "id,source,exported,split,outcome,needs_review\n"
        f"a,{image},train/red/a.png,train,exported,0\n"
    )
    (dest / "notes.txt").write_text("mine")
    result = cli("export", output, "--to", "folders", dest, "--overwrite")
    assert result.code == 2 and "notes.txt" in result.err
    assert (dest / "train" / "red" / "a.png").exists()
    (dest / "notes.txt").unlink()
    result = cli("export", output, "--to", "folders", dest, "--overwrite")
    assert result.code == 0, result.err
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == [
        ".batchclassify-export",
        ".batchclassify-mapping.tsv",
        "train",
        "train/blue",
        "train/blue/a.png",
    ]


def test_printout_names_images_roboflow_moves_to_another_split(tmp_path: Path, cli: Cli) -> None:
    images = [make_image(tmp_path / "i" / name) for name in ("invalid.png", "plain.png")]
    rows = [_row(path.name, path, "red") for path in images]
    rows.append(_row("latest", make_image(tmp_path / "i" / "latest.png"), "red"))
    output = _write(tmp_path / "out.jsonl", rows)
    dest = tmp_path / "d"
    result = cli("export", output, "--to", "folders", dest)
    assert result.code == 0, result.err
    assert "Roboflow's uploader puts 1 image in another split than their folder's" in result.out
    splits = {image["name"]: image["split"] for image in _roboflow(dest)}
    # 'valid' wins over the folder's 'train'; 'train' over 'test' (in latest.png).
    assert splits == {"invalid.png": "valid", "latest.png": "train", "plain.png": "train"}
