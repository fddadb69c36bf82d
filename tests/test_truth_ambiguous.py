"""A truth keyed by file name never gives one image's label to another (camera folders
repeat names: ``day1/IMG_1.jpg``, ``day2/IMG_1.jpg``), and a key listed twice with different
labels is nobody's truth: both are counted as rows without a truth, and said so."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from batchclassify.server import BackgroundServer

from .conftest import COLORS, Cli, run_args


def _image(path: Path, color: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (24, 24), COLORS[color])
    image.putpixel((0, 0), (len(str(path)) % 256, 1, 1))  # no two files alike
    image.save(path, format="JPEG", quality=95)


def test_shared_file_names_and_ambiguous_keys_are_not_scored(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli
) -> None:
    source = tmp_path / "camera"
    _image(source / "day1" / "IMG_1.jpg", "red")
    _image(source / "day2" / "IMG_1.jpg", "blue")  # same name, another image
    _image(source / "day1" / "IMG_2.jpg", "green")
    _image(source / "day1" / "IMG_3.jpg", "white")
    output = tmp_path / "out.jsonl"
    server = make_server()
    assert cli(*run_args(server, output, source), "-q").code == 0
    truth = tmp_path / "truth.csv"
    # IMG_1.jpg names two images: which one is red is unknowable; IMG_3.jpg has two labels.
    truth.write_text(
        "filename,label\nIMG_1.jpg,red\nIMG_2.jpg,green\nIMG_3.jpg,white\nIMG_3.jpg,black\n"
    )

    result = cli("report", output, "--truth", truth, "--json")
    assert result.code == 0, result.err
    figures = json.loads(result.out)["metrics"]
    assert figures["scored"] == 1  # IMG_2.jpg alone
    assert figures["accuracy"] == 1.0
    assert figures["without_truth"] == 3
    assert figures["without_truth_shared_name"] == 2
    assert figures["ambiguous_truth_keys"] == 1
    assert "blue" not in figures["classes"]  # day2's blue image was never scored as red

    text = cli("report", output, "--truth", truth)
    assert text.code == 0, text.err
    assert "no truth for 2 images whose file name another image shares" in text.out
    assert "1 keys of the truth file have different labels" in text.out

    diff = cli("diff", output, output, "--truth", truth, "--json")
    assert diff.code == 0, diff.err
    compared = json.loads(diff.out)["truth"]
    assert compared["scored"] == 1
    assert compared["without_truth_shared_name"] == 2
