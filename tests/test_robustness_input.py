"""Holding up overnight (issue 4), bad input: every faulty file or manifest row gets one clear
error row and the job goes on; a manifest that cannot be read at all stops the job before any
request. Rate limits, outages, hangs and the API key are in ``test_robustness.py``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from batchclassify.summary import Progress

from .conftest import KEY, Cli, MakeServer, make_image, png, read_rows, rows_by_id
from .test_robustness import Recorder, hard_timeout, job_config, run

__all__ = ["hard_timeout"]  # the autouse fixture, applied here too


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 200, 40)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


@pytest.mark.parametrize("output_name", ["out.jsonl", "out.parquet"])
def test_bad_files_each_get_a_clear_error_row(
    tmp_path: Path, make_server: MakeServer, output_name: str
) -> None:
    server = make_server()
    folder = tmp_path / "in"
    make_image(folder / "good.jpg", "red")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(truncated_jpeg())
    (folder / "text.png").write_text("these are my notes, not a picture\n")
    (folder / "huge.png").write_bytes(b"\x89PNG" + b"\x00" * 5000)  # over the 4 KiB cap
    make_image(folder / "vanishing.jpg", "blue")
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    names = ["with space.jpg", "quote\"s and 'apostrophes'.jpg", "new\nline.jpg"]
    for name in names:
        make_image(folder / name, "yellow")
    raw_name = os.fsencode(folder) + b"/caf\xe9 latin-1.jpg"  # not UTF-8
    with open(raw_name, "wb") as handle:
        handle.write(png("green"))
    output = tmp_path / output_name

    def delete_after_the_walk(progress: Progress) -> None:
        # Shown once a batch has been listed (found), before any of it is read.
        if progress.found:
            (folder / "vanishing.jpg").unlink(missing_ok=True)

    progress = Recorder(on_progress=delete_after_the_walk)
    config = job_config(server, folder, output, max_upload_bytes=4096)

    summary = run(config, progress)

    assert summary.exit_code == 1 and summary.fatal is None
    rows = {row["id"].rsplit("/", 1)[-1]: row for row in read_rows(output)}
    assert len(rows) == 11

    def error(name: str, kind: str, attempts: int, status: int | None) -> str:
        row = rows[name]
        assert row["status"] == "error" and row["error_type"] == kind, row
        assert row["attempts"] == attempts and row["http_status"] == status, row
        assert row["top"] is None and row["predictions"] is None
        return str(row["error"])

    assert error("zero.jpg", "empty_file", 0, None) == "file is empty (0 bytes)"
    assert error("huge.png", "too_large", 0, None) == (
        "file is 4.9 KiB, over the 4.0 KiB upload limit once base64-encoded; "
        "use --max-size to downscale it"
    )
    assert error("vanishing.jpg", "missing_file", 0, None) == (
        "file not found (moved or deleted since it was listed?)"
    )
    assert error("dangling.jpg", "missing_file", 0, None) == (
        f"broken symlink: {folder / 'dangling.jpg'} -> {folder / 'gone.jpg'} "
        "(target does not exist)"
    )
    # The server's 400 and its message, recorded as they came; not retried.
    truncated = error("truncated.jpg", "bad_image", 1, 400)
    assert truncated.startswith(
        "HTTP 400: Could not load input image. Cause: the image data could not be decoded ("
    )
    assert "truncated" in truncated.lower()
    assert error("text.png", "bad_image", 1, 400) == (
        "HTTP 400: Could not load input image. Cause: the image data could not be decoded "
        "(not a known image format)"
    )
    # Odd names are just names.
    for name in names:
        assert rows[name]["status"] == "ok" and rows[name]["top"] == "yellow"
        assert Path(rows[name]["path"]) == folder / name
    odd = rows["caf\\xe9 latin-1.jpg"]
    assert odd["status"] == "ok" and odd["top"] == "green"
    assert odd["id"] == odd["path"] == f"{folder}/caf\\xe9 latin-1.jpg"
    assert rows["good.jpg"]["top"] == "red"
    assert server.stats.requests == 7  # only what could be sent was sent
    assert summary.errors["empty_file: file is empty (0 bytes)"] == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_gets_an_error_row(tmp_path: Path, make_server: MakeServer) -> None:
    server = make_server()
    make_image(tmp_path / "in" / "ok.jpg", "red")
    secret = make_image(tmp_path / "in" / "secret.jpg", "blue")
    secret.chmod(0)
    summary = run(job_config(server, tmp_path / "in", tmp_path / "out.jsonl"))
    assert summary.exit_code == 1
    row = rows_by_id(tmp_path / "out.jsonl")[str(secret)]
    assert row["error_type"] == "unreadable" and "permission denied" in row["error"]


def test_csv_manifest_problems_each_get_a_row(tmp_path: Path, make_server: MakeServer) -> None:
    server = make_server()
    for name, color in (("a.jpg", "red"), ("b.png", "blue"), ("c.png", "green")):
        make_image(tmp_path / "imgs" / name, color)
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "path,label\n"
        "imgs/a.jpg,cat\n"  # line 2
        "imgs/missing.jpg,dog\n"  # 3
        ",empty\n"  # 4
        "imgs/b.png,bird,extra column\n"  # 5
        "imgs/a.jpg,cat again\n"  # 6: a duplicate
        '"imgs/b.png,oops\n'  # 7: a stray quote ...
        'imgs/c.png,x",y\n'  # 8: ... closed here, one value over two lines
        "imgs/c.png,z\n"  # 9
        '"imgs/b.png"x,w\n'  # 10: text after a closing quote
        '"imgs/b.png,unterminated\n'  # 11: open at the end of the file
    )
    output = tmp_path / "out.jsonl"

    summary = run(job_config(server, manifest, output))

    assert summary.exit_code == 1 and summary.duplicates == 1
    rows = rows_by_id(output)
    a, c, gone = (str(tmp_path / "imgs" / name) for name in ("a.jpg", "c.png", "missing.jpg"))
    assert rows[a]["status"] == "ok" and rows[a]["label"] == "cat"
    assert rows[c]["top"] == "green" and rows[c]["label"] == "z"
    missing = rows[gone]
    assert missing["error_type"] == "missing_file" and missing["label"] == "dog"
    assert missing["path"] == str(tmp_path / "imgs" / "missing.jpg")
    problems = {
        4: "empty path/url cell; fill it or drop the row",
        5: "3 fields but the header has 2; quote values that contain commas",
        7: "the path cell holds a line break (a quoted value from line 7 to 8) and no such "
        "file exists: a stray '\"'? fix the quoting",
        10: "malformed CSV (',' expected after '\"'); fix the quoting",
        11: "malformed CSV (unexpected end of data); fix the quoting",
    }
    for line, message in problems.items():
        row = rows.pop(f"line {line} of {manifest}")
        assert row["error_type"] == "bad_manifest_row" and row["attempts"] == 0
        assert row["error"] == f"{manifest} line {line}: {message}"
    assert sorted(rows) == [a, c, gone]
    assert server.stats.requests == 2


def test_jsonl_manifest_problems_each_get_a_row(tmp_path: Path, make_server: MakeServer) -> None:
    server = make_server()
    make_image(tmp_path / "imgs" / "a.jpg", "red")
    make_image(tmp_path / "imgs" / "b.png", "blue")
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(
        '{"path": "imgs/a.jpg", "label": "cat"}\n'
        '{"path": "imgs/missing.jpg"}\n'
        '{"path": ""}\n'
        '{"path": "imgs/b.png", "camera": {"make": "X"}}\n'  # a key no other row has
        '{"path": "imgs/b.png" "label": "x"}\n'  # malformed JSON
        '{"path": "imgs/a.jpg", "label": "dup"}\n'
    )
    output = tmp_path / "out.jsonl"

    summary = run(job_config(server, manifest, output))

    assert summary.exit_code == 1 and summary.duplicates == 1
    rows = rows_by_id(output)
    a, b, gone = (str(tmp_path / "imgs" / name) for name in ("a.jpg", "b.png", "missing.jpg"))
    assert rows[a]["label"] == "cat" and rows[a]["top"] == "red"
    assert rows[b]["camera"] == {"make": "X"} and rows[b]["top"] == "blue"
    assert rows[gone]["error_type"] == "missing_file"
    assert "no 'path' or 'url' value" in rows[f"line 3 of {manifest}"]["error"]
    assert rows[f"line 5 of {manifest}"]["error"].startswith(f"{manifest} line 5: not valid JSON")
    assert len(rows) == 5


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("absent.csv", None, "absent.csv: no such file or folder; check the path"),
        ("cols.csv", b"file,label\na.jpg,x\n", "has no 'path' or 'url' column; found: file, label"),
        (
            "keys.jsonl",
            b'{"file": "a.jpg", "label": "x"}\n',
            "has no 'path' or 'url' key on its first line; found: file, label; "
            "name the image's key 'path' or 'url'",
        ),
        ("latin.csv", b"path,l\xe9gende\na.jpg,x\n", "the header row is not UTF-8 text"),
        ("utf16.txt", "a.jpg\n".encode("utf-16"), "contains NUL bytes (UTF-16 or binary?)"),
    ],
)
def test_unusable_manifest_is_a_usage_error_before_any_request(
    tmp_path: Path,
    make_server: MakeServer,
    cli: Cli,
    name: str,
    content: bytes | None,
    message: str,
) -> None:
    server = make_server()
    manifest = tmp_path / name
    if content is not None:
        manifest.write_bytes(content)
    output = tmp_path / "out.jsonl"

    result = cli("run", manifest, "-m", "colors/1", "--api-url", server.url, "-o", output)

    assert result.code == 2
    assert message in result.err
    assert server.stats.requests == 0
    assert not output.exists()
    assert KEY not in result.err
