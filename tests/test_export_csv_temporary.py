"""``export --to csv`` writes to ``.DEST.tmp`` first: a file of that name it did not make is
refused, never written over or removed."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson

from .conftest import Cli


def _rows(output: Path) -> None:
    rows = [
        {
            "id": f"img{n}",
            "path": f"/data/img{n}.png",
            "status": "ok",
            "top": "red",
            "confidence": 0.9,
            "predicted_classes": ["red"],
        }
        for n in range(3)
    ]
    output.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))


def test_a_users_file_named_like_the_temporary_one_is_kept(tmp_path: Path, cli: Cli) -> None:
    output, dest = tmp_path / "out.jsonl", tmp_path / "flat.csv"
    _rows(output)
    theirs = tmp_path / ".flat.csv.tmp"
    theirs.write_text("someone's notes\n")

    result = cli("export", output, "--to", "csv", dest)

    assert result.code == 2, result.err
    assert str(theirs) in result.err and "remove or move it" in result.err
    assert theirs.read_text() == "someone's notes\n"
    assert not dest.exists()

    theirs.unlink()
    again = cli("export", output, "--to", "csv", dest)
    assert again.code == 0, again.err
    with open(dest, newline="") as handle:
        assert [line["id"] for line in csv.DictReader(handle)] == ["img0", "img1", "img2"]
    assert not theirs.exists()  # its own temporary file is gone once renamed
