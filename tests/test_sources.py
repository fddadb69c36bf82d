"""Sources: folder walks and manifests, on real files in tmp_path."""

from __future__ import annotations

import csv
import datetime
import importlib.util
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from batchclassify.config import DEFAULT_EXTENSIONS
from batchclassify.errors import UsageError
from batchclassify.inputs.sources import check_sources, iter_item_batches, iter_items
from batchclassify.models import Item

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names and symlinks")
# s3:// URLs are read (the test extra installs s3fs); gs:// ones, with gcsfs hidden
# (``without_gcsfs``), name the extra to install.
needs_s3fs = pytest.mark.skipif(
    importlib.util.find_spec("s3fs") is None, reason="needs s3fs installed (the test extra)"
)


@pytest.fixture
def without_gcsfs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """gs:// as a machine without the gcs extra sees it: gcsfs cannot be imported (the test
    extra installs it, for tests/test_gcs_source.py)."""
    from batchclassify.inputs import objectstore

    registry = importlib.import_module("fsspec.registry")  # fsspec.registry is a mapping
    for protocol in ("gs", "gcs"):
        monkeypatch.delitem(registry._registry, protocol, raising=False)
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # import gcsfs: ImportError
    objectstore.clear_cache()
    yield
    objectstore.clear_cache()


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def items(*sources: str | Path, stdin: io.StringIO | None = None) -> list[Item]:
    return list(iter_items([str(s) for s in sources], extensions=DEFAULT_EXTENSIONS, stdin=stdin))


def ids(found: list[Item]) -> list[str]:
    return [item.id for item in found]


def usage_error(*sources: str | Path) -> str:
    with pytest.raises(UsageError) as info:
        check_sources([str(s) for s in sources])
    message = str(info.value)
    assert "\n" not in message
    return message


# -- folders -------------------------------------------------------------------------------


def test_folder_walk_is_recursive_filtered_and_deterministic(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for rel in ["b.JPG", "a.png", "c.Jpeg", "notes.txt", "noext", ".hidden.jpg"]:
        touch(root / rel)
    for rel in ["sub/z.webp", "sub/deeper/y.gif", "sub/readme.md", "a-dir/x.tiff"]:
        touch(root / rel)
    touch(root / ".git" / "inside.jpg")
    (root / "empty").mkdir()

    found = items(root)

    top = str(root)
    # each folder: its files in listing order (not sorted), then its subfolders by name
    assert sorted(ids(found)[:3]) == [
        os.path.join(top, "a.png"),
        os.path.join(top, "b.JPG"),
        os.path.join(top, "c.Jpeg"),
    ]
    assert ids(found)[3:] == [
        os.path.join(top, "a-dir", "x.tiff"),
        os.path.join(top, "sub", "z.webp"),
        os.path.join(top, "sub", "deeper", "y.gif"),
    ]
    assert all(item.path == item.id and item.problem is None for item in found)
    assert all(item.url is None and item.metadata is None for item in found)
    assert ids(items(root)) == ids(found)


def test_folder_ids_are_absolute_and_paths_join_the_folder_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ids were the path as spelled (so "photos" and "./photos" were two jobs); now the absolute
    # path, while ``path`` keeps the user's spelling.
    touch(tmp_path / "photos" / "sub" / "a.jpg")
    monkeypatch.chdir(tmp_path)
    absolute = str(tmp_path / "photos" / "sub" / "a.jpg")
    for spelling, path in [
        ("photos/", "photos/sub/a.jpg"),
        ("photos", "photos/sub/a.jpg"),
        (".", "./photos/sub/a.jpg"),
        ("photos/sub/../", "photos/sub/../sub/a.jpg"),
    ]:
        (item,) = items(spelling)
        assert (item.id, item.path) == (absolute, path)


def test_extensions_are_matched_case_insensitively(tmp_path: Path) -> None:
    touch(tmp_path / "a.HEIC")
    touch(tmp_path / "b.jpg")
    found = list(iter_items([str(tmp_path)], extensions=frozenset({".heic"})))
    assert ids(found) == [str(tmp_path / "a.HEIC")]


@posix_only
def test_symlinks_are_followed_and_a_loop_does_not_hang(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    touch(outside / "o.jpg")
    root = tmp_path / "root"
    touch(root / "a" / "1.jpg")
    (root / "a" / "back-to-root").symlink_to(root)  # a loop
    (root / "a" / "self").symlink_to(".")  # a loop of one
    (root / "linked").symlink_to(outside)
    (root / "alias.jpg").symlink_to(root / "a" / "1.jpg")

    found = items(root)

    top = str(root)
    assert ids(found) == [
        os.path.join(top, "alias.jpg"),  # a symlinked file is its own item
        os.path.join(top, "a", "1.jpg"),
        str(outside / "o.jpg"),  # files below a symlinked folder: the folder's real path
    ]
    assert found[2].path == os.path.join(top, "linked", "o.jpg")  # the path as walked
    assert all(item.problem is None for item in found)


@posix_only
def test_broken_symlink_is_a_problem_item(tmp_path: Path) -> None:
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (tmp_path / "gone.txt").symlink_to(tmp_path / "nowhere.txt")  # not an image: ignored
    (tmp_path / "ping.jpg").symlink_to(tmp_path / "pong.jpg")  # a chain that loops
    (tmp_path / "pong.jpg").symlink_to(tmp_path / "ping.jpg")
    touch(tmp_path / "ok.png")

    found = sorted(items(tmp_path), key=lambda item: item.id)  # listing order is not sorted

    assert ids(found) == [str(tmp_path / n) for n in ("gone.jpg", "ok.png", "ping.jpg", "pong.jpg")]
    gone, ok, ping, _ = found
    assert gone.problem_kind == "missing_file"
    assert gone.problem is not None and gone.problem.startswith("broken symlink: ")
    assert "nowhere.jpg" in gone.problem
    assert gone.path == str(tmp_path / "gone.jpg")
    assert ok.problem is None
    assert ping.problem_kind == "missing_file"


@posix_only
def test_special_file_with_an_image_name_is_a_problem_item(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    (found,) = items(tmp_path)
    assert found.problem_kind == "unreadable"
    assert found.problem is not None and "not a regular file" in found.problem


@posix_only
@pytest.mark.skipif(IS_ROOT, reason="root reads any folder")
def test_unreadable_subfolder_is_a_problem_item(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    locked = tmp_path / "locked"
    touch(locked / "b.jpg")
    locked.chmod(0)
    try:
        found = items(tmp_path)
    finally:
        locked.chmod(0o755)
    assert ids(found) == [str(tmp_path / "a.jpg"), str(locked)]
    assert found[1].problem_kind == "unreadable"
    assert found[1].problem is not None and "permission" in found[1].problem.lower()


@posix_only
def test_odd_file_names_open_and_have_json_safe_ids(tmp_path: Path) -> None:
    names = [
        b"with space.jpg",
        b"quote\"'s.jpg",
        b"new\nline.jpg",
        b"caf\xe9.jpg",
        "ü.png".encode(),
    ]
    for name in names:
        touch(Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), name))), data=name)

    found = items(tmp_path)

    assert len(found) == len(names)
    for item in found:
        assert item.path is not None and item.problem is None
        with open(item.path, "rb") as handle:
            assert os.fsencode(item.path).endswith(handle.read())
        assert orjson.loads(orjson.dumps({"id": item.id}))["id"] == item.id
    by_id = {item.id: item for item in found}
    latin = os.path.join(str(tmp_path), "caf\\xe9.jpg")  # the undecodable byte, spelled out
    assert by_id[latin].path == os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg"))
    assert os.path.join(str(tmp_path), "ü.png") in by_id  # valid UTF-8 is kept as it is


def test_a_large_flat_folder_streams_in_batches(tmp_path: Path) -> None:
    for i in range(1200):
        touch(tmp_path / f"{i:05d}.jpg")
    batches = list(
        iter_item_batches([str(tmp_path)], extensions=DEFAULT_EXTENSIONS, batch_size=500)
    )
    assert [len(b) for b in batches] == [500, 500, 200]
    assert sorted(item.id for b in batches for item in b) == [
        str(tmp_path / f"{i:05d}.jpg") for i in range(1200)
    ]


# -- txt and stdin -------------------------------------------------------------------------


def test_txt_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(
        tmp_path / "lists" / "images.txt",
        b"# a comment\n"
        b"\n"
        b"  images/a.jpg  \r\n"
        b"/abs/b.png\n"
        b"   # an indented comment\n"
        b"https://example.com/c.jpg?x=1\n"
        b"../up/d.jpg\n"
        b"HTTP://EXAMPLE.COM/E.JPG\n",
    )
    monkeypatch.chdir(tmp_path)

    found = items("lists/images.txt")

    assert [(i.id, i.path, i.url) for i in found] == [
        # A relative path joined to the manifest's folder, absolute: found from anywhere.
        (str(tmp_path / "lists/images/a.jpg"), str(tmp_path / "lists/images/a.jpg"), None),
        ("/abs/b.png", "/abs/b.png", None),
        ("https://example.com/c.jpg?x=1", None, "https://example.com/c.jpg?x=1"),
        (str(tmp_path / "up/d.jpg"), f"{tmp_path}/lists/../up/d.jpg", None),
        ("HTTP://EXAMPLE.COM/E.JPG", None, "HTTP://EXAMPLE.COM/E.JPG"),
    ]
    assert all(i.problem is None and i.metadata is None for i in found)


def test_txt_manifest_next_to_the_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path / "images.txt", b"\xef\xbb\xbfa.jpg\n")  # with a UTF-8 byte order mark
    monkeypatch.chdir(tmp_path)
    a = str(tmp_path / "a.jpg")
    assert [(i.id, i.path) for i in items("images.txt")] == [(a, a)]


@posix_only
def test_txt_line_that_is_not_utf8_is_a_raw_file_name(tmp_path: Path) -> None:
    image = touch(Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.jpg")), b"img")
    touch(tmp_path / "list.txt", b"ok.jpg\ncaf\xe9.jpg\nhttp://x/\xff.jpg\n")

    found = items(tmp_path / "list.txt")

    assert found[1].id == f"{tmp_path}/caf\\xe9.jpg"
    assert found[1].path == str(image)
    with open(found[1].path, "rb") as handle:
        assert handle.read() == b"img"
    bad = found[2]
    assert bad.problem_kind == "bad_manifest_row"
    assert bad.id == f"line 3 of {tmp_path / 'list.txt'}"
    for item in found:
        orjson.dumps({"id": item.id, "problem": item.problem})


def test_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    stdin = io.StringIO("# from find\nphotos/a.jpg\n\n/abs/b.jpg\nhttps://x.test/c.png\n")
    found = items("-", stdin=stdin)
    assert [(i.id, i.path, i.url) for i in found] == [
        # Relative to the current folder, made absolute.
        (str(tmp_path / "photos/a.jpg"), str(tmp_path / "photos/a.jpg"), None),
        ("/abs/b.jpg", "/abs/b.jpg", None),
        ("https://x.test/c.png", None, "https://x.test/c.png"),
    ]
    check_sources(["-"])


def test_sources_are_read_in_order(tmp_path: Path) -> None:
    touch(tmp_path / "dir" / "a.jpg")
    touch(tmp_path / "list.txt", b"/x/b.jpg\n")
    found = items(tmp_path / "list.txt", "-", tmp_path / "dir", stdin=io.StringIO("/x/c.jpg\n"))
    assert ids(found) == ["/x/b.jpg", "/x/c.jpg", str(tmp_path / "dir" / "a.jpg")]


# -- csv -----------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_csv_manifest_with_metadata(tmp_path: Path) -> None:
    manifest = write_csv(
        tmp_path / "m" / "images.csv",
        [
            ["id", " path ", "label", "", "note"],
            ["img-1", "a.jpg", "cat", "dropped", "has, comma"],
            ["", "sub/b.png", "dog", "", 'multi\nline "quoted"'],
            [],
            ["img-3", "/abs/c.jpg", "", "", ""],
            ["img-4", "https://x.test/d.jpg", "bird"],  # short row: missing cells are empty
        ],
    )
    found = items(manifest)

    folder = str(tmp_path / "m")
    assert [(i.id, i.path, i.url) for i in found] == [
        ("img-1", os.path.join(folder, "a.jpg"), None),
        (os.path.join(folder, "sub/b.png"), os.path.join(folder, "sub/b.png"), None),
        ("img-3", "/abs/c.jpg", None),
        ("img-4", None, "https://x.test/d.jpg"),
    ]
    assert [i.metadata for i in found] == [
        {"label": "cat", "note": "has, comma"},
        {"label": "dog", "note": 'multi\nline "quoted"'},
        {"label": "", "note": ""},
        {"label": "bird", "note": ""},
    ]
    assert all(i.problem is None for i in found)


def test_csv_with_url_column_and_both(tmp_path: Path) -> None:
    manifest = write_csv(
        tmp_path / "u.csv",
        [["url", "path"], ["https://x.test/a.jpg", ""], ["https://x.test/b.jpg", "b.jpg"]],
    )
    found = items(manifest)
    assert [(i.id, i.path, i.url, i.metadata) for i in found] == [
        ("https://x.test/a.jpg", None, "https://x.test/a.jpg", None),
        # both: the local file is read, the URL is kept for the output row
        (str(tmp_path / "b.jpg"), str(tmp_path / "b.jpg"), "https://x.test/b.jpg", None),
    ]


def test_csv_bad_rows_become_problem_items(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.csv"
    huge = "x" * 200_000  # over the csv module's field size limit
    touch(
        manifest,
        (f'path,label\nok1.jpg,a\n,empty path\ntwo.jpg,b,extra\n"{huge}",c\nok2.jpg,d\n').encode()
        + b"caf\xe9.jpg,latin-1\n"
        + b"ok3.jpg,e\n",
    )
    found = items(manifest)

    assert [i.path for i in found if i.problem is None] == [
        str(tmp_path / "ok1.jpg"),
        str(tmp_path / "ok2.jpg"),
        str(tmp_path / "ok3.jpg"),
    ]
    bad = [i for i in found if i.problem is not None]
    assert [i.id for i in bad] == [f"line {n} of {manifest}" for n in (3, 4, 5, 7)]
    assert {i.problem_kind for i in bad} == {"bad_manifest_row"}
    assert all(i.path is None and i.url is None for i in bad)
    for item, line, fix in zip(
        bad,
        (3, 4, 5, 7),
        ("fill it", "quote values", "fix the quoting", "save it as UTF-8"),
        strict=True,
    ):
        assert item.problem is not None
        assert item.problem.startswith(f"{manifest} line {line}: ")
        assert fix in item.problem
        orjson.dumps({"id": item.id, "error": item.problem})


# -- jsonl ---------------------------------------------------------------------------------


def test_jsonl_manifest_keeps_json_types(tmp_path: Path) -> None:
    manifest = tmp_path / "m" / "images.ndjson"
    rows = [
        {"id": "a", "path": "a.jpg", "n": 3, "score": 0.5, "ok": True, "tags": ["x"], "x": None},
        {"path": "/abs/b.jpg", "box": {"w": 1}},
        {"id": 7, "url": "https://x.test/c.jpg"},
        {"path": "d.jpg", "url": "https://x.test/d.jpg"},
    ]
    touch(manifest, b"".join(orjson.dumps(r) + b"\n" for r in rows) + b"\n\n")

    found = items(manifest)

    folder = str(tmp_path / "m")
    assert [(i.id, i.path, i.url) for i in found] == [
        ("a", os.path.join(folder, "a.jpg"), None),
        ("/abs/b.jpg", "/abs/b.jpg", None),
        ("7", None, "https://x.test/c.jpg"),
        (os.path.join(folder, "d.jpg"), os.path.join(folder, "d.jpg"), "https://x.test/d.jpg"),
    ]
    assert [i.metadata for i in found] == [
        {"n": 3, "score": 0.5, "ok": True, "tags": ["x"], "x": None},
        {"box": {"w": 1}},
        None,
        None,
    ]


def test_jsonl_bad_rows_become_problem_items(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.jsonl"
    lines = [
        b'{"path": "ok.jpg"}',
        b'{"path": "unterminated',
        b'["a.jpg"]',
        b'{"label": "no path"}',
        b'{"path": "  "}',
        b'{"path": 12}',
        b'{"path": "caf\xe9.jpg"}',
        b'{"path": "ok2.jpg"}',
    ]
    touch(manifest, b"\n".join(lines) + b"\n")

    found = items(manifest)

    assert [i.path for i in found if i.problem is None] == [
        str(tmp_path / "ok.jpg"),
        str(tmp_path / "ok2.jpg"),
    ]
    bad = [i for i in found if i.problem is not None]
    assert [i.id for i in bad] == [f"line {n} of {manifest}" for n in range(2, 8)]
    assert {i.problem_kind for i in bad} == {"bad_manifest_row"}
    messages = [i.problem or "" for i in bad]
    assert all(
        m.startswith(f"{manifest} line {n}: ") for m, n in zip(messages, range(2, 8), strict=True)
    )
    assert "not valid JSON" in messages[0]
    assert "a JSON list, not an object" in messages[1]
    assert "no 'path' or 'url'" in messages[2]
    assert "no 'path' or 'url'" in messages[3]
    assert "'path' is a int, not a string" in messages[4]
    assert "not valid UTF-8" in messages[5]


# -- parquet -------------------------------------------------------------------------------


def test_parquet_manifest(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = 10_000  # more than one record batch
    table = pa.table(
        {
            "id": [f"id{i}" if i % 2 else None for i in range(rows)],
            "path": [None if i == 9_000 else f"img/{i}.jpg" for i in range(rows)],
            "label": [f"c{i % 3}" for i in range(rows)],
            "n": list(range(rows)),
            "when": [datetime.date(2024, 1, 1)] * rows,
        }
    )
    pq.write_table(table, tmp_path / "m.parquet", row_group_size=3000)

    found = items(tmp_path / "m.parquet")

    assert len(found) == rows
    assert (found[0].id, found[0].path) == (str(tmp_path / "img/0.jpg"),) * 2
    assert found[1].id == "id1"
    assert found[1].metadata == {"label": "c1", "n": 1, "when": "2024-01-01"}
    bad = found[9_000]
    assert bad.problem_kind == "bad_manifest_row"
    assert bad.id == f"row 9001 of {tmp_path / 'm.parquet'}"
    assert bad.problem is not None and f"{tmp_path / 'm.parquet'} row 9001: " in bad.problem
    assert found[9_999].id == "id9999"
    orjson.dumps([i.metadata for i in found[:3]])


def test_parquet_url_column(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"url": ["https://x.test/a.jpg"]}), tmp_path / "u.PARQUET")
    (item,) = items(tmp_path / "u.PARQUET")
    assert (item.id, item.path, item.url, item.metadata) == (
        "https://x.test/a.jpg",
        None,
        "https://x.test/a.jpg",
        None,
    )


# -- check_sources -------------------------------------------------------------------------


def test_check_sources_accepts_good_sources(tmp_path: Path) -> None:
    touch(tmp_path / "dir" / "a.jpg")
    touch(tmp_path / "a.txt", b"a.jpg\n")
    touch(tmp_path / "b.CSV", b"label,path\nx,a.jpg\n")
    touch(tmp_path / "c.jsonl", b'{"path": "a.jpg"}\n')
    touch(tmp_path / "empty.txt", b"")
    sources = ["dir", "a.txt", "b.CSV", "c.jsonl", "empty.txt"]
    check_sources([str(tmp_path / s) for s in sources] + ["-"])


def test_check_sources_reads_only_the_head(tmp_path: Path) -> None:
    # A bad byte after the first 64 KB is the reader's business (a problem row), not a usage error.
    manifest = touch(tmp_path / "big.csv", b"path\n" + b"a.jpg\n" * 20_000 + b"\xff.jpg\n")
    check_sources([str(manifest)])
    assert items(manifest)[-1].problem_kind == "bad_manifest_row"


def test_missing_source(tmp_path: Path) -> None:
    message = usage_error(tmp_path / "nope")
    assert str(tmp_path / "nope") in message
    assert "no such file or folder; check the path" in message
    with pytest.raises(UsageError):
        items(tmp_path / "nope")


def test_unknown_file_type(tmp_path: Path) -> None:
    touch(tmp_path / "photo.jpg")
    message = usage_error(tmp_path / "photo.jpg")
    assert message.startswith(
        f"{tmp_path / 'photo.jpg'} is not a folder or a manifest (.txt, .csv, .jsonl, .parquet)"
    )
    assert "list them in a .txt manifest" in message


@posix_only
def test_manifest_that_cannot_be_opened(tmp_path: Path) -> None:
    (tmp_path / "list.txt").symlink_to(tmp_path / "missing.txt")
    message = usage_error(tmp_path / "list.txt")
    assert message.startswith(f"{tmp_path / 'list.txt'}: cannot open this manifest")
    assert "check its permissions" in message


@posix_only
@pytest.mark.skipif(IS_ROOT, reason="root reads any folder")
def test_folder_that_cannot_be_read(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        message = usage_error(locked)
    finally:
        locked.chmod(0o755)
    assert message.startswith(f"{locked}: cannot read this folder")
    assert "check its permissions" in message


def test_manifest_that_is_not_utf8(tmp_path: Path) -> None:
    # A .txt line that is not UTF-8 is a raw file name wherever it is (it used to refuse the
    # manifest when in the first 64 KB); a CSV header that is not UTF-8 refuses it.
    touch(tmp_path / "latin1.txt", "café.jpg\n".encode("latin-1"))
    check_sources([str(tmp_path / "latin1.txt")])
    touch(tmp_path / "latin1.csv", "path,légende\na.jpg,x\n".encode("latin-1"))
    message = usage_error(tmp_path / "latin1.csv")
    assert (
        message
        == f"{tmp_path / 'latin1.csv'}: the header row is not UTF-8 text; save the file as UTF-8"
    )

    touch(tmp_path / "utf16.csv", "path\na.jpg\n".encode("utf-16-le"))
    message = usage_error(tmp_path / "utf16.csv")
    assert message.startswith(f"{tmp_path / 'utf16.csv'} contains NUL bytes")
    assert "save it as UTF-8" in message


def test_csv_without_path_or_url_column(tmp_path: Path) -> None:
    touch(tmp_path / "x.csv", b"a,b,c\n1,2,3\n")
    message = usage_error(tmp_path / "x.csv")
    assert message == f"{tmp_path / 'x.csv'} has no 'path' or 'url' column; found: a, b, c"
    with pytest.raises(UsageError, match="has no 'path' or 'url' column"):
        items(tmp_path / "x.csv")

    touch(tmp_path / "semi.csv", b"id;path\n1;a.jpg\n")
    message = usage_error(tmp_path / "semi.csv")
    assert "found: id;path; is it separated by ';'" in message

    touch(tmp_path / "empty.csv", b"")
    message = usage_error(tmp_path / "empty.csv")
    assert message.startswith(f"{tmp_path / 'empty.csv'} is empty")
    assert "header row" in message


def test_parquet_that_is_unusable(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"file": ["a.jpg"], "label": ["x"]}), tmp_path / "m.parquet")
    message = usage_error(tmp_path / "m.parquet")
    assert message == f"{tmp_path / 'm.parquet'} has no 'path' or 'url' column; found: file, label"

    touch(tmp_path / "torn.parquet", b"PAR1 not really")
    message = usage_error(tmp_path / "torn.parquet")
    assert message.startswith(f"{tmp_path / 'torn.parquet'}: cannot read this Parquet file")
    assert "check it was written completely" in message


def test_stdin_given_twice() -> None:
    message = usage_error("-", "-")
    assert "'-' (stdin) is given more than once" in message


# -- what manifests can name (issue 9) -----------------------------------------------------


@needs_s3fs
def test_manifest_paths_that_cannot_be_read_say_what_is_supported(
    without_gcsfs: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    touch(tmp_path / "real.jpg")
    url = "file://" + str(tmp_path / "real.jpg").replace(" ", "%20")
    touch(
        tmp_path / "list.txt",
        f"~/photos/a.jpg\n{url}\ngs://bucket/b.jpg\nS3://bucket/c.jpg\nfile://host/x.jpg\n".encode(),
    )

    found = items(tmp_path / "list.txt")

    home, local, gs, s3, remote = found
    assert home.problem == (
        f"{tmp_path / 'list.txt'} line 1: ~ is not expanded: write the full path "
        f"({tmp_path / 'home' / 'photos' / 'a.jpg'})"
    )
    assert (local.id, local.path, local.problem) == (str(tmp_path / "real.jpg"),) * 2 + (None,)
    # Object URLs are read when their backend is installed, else say which extra to install.
    assert gs.problem is not None and "pip install 'batchclassify[gcs]'" in gs.problem
    assert (s3.id, s3.path, s3.problem) == ("S3://bucket/c.jpg", "S3://bucket/c.jpg", None)
    assert remote.problem is not None and "only local files (file:///path)" in remote.problem
    assert {i.problem_kind for i in (home, gs, remote)} == {"bad_manifest_row"}


def test_a_file_whose_name_starts_with_a_tilde_is_read(tmp_path: Path) -> None:
    touch(tmp_path / "~backup.jpg")
    touch(tmp_path / "list.txt", b"~backup.jpg\n")
    (item,) = items(tmp_path / "list.txt")
    assert item.problem is None and item.path == str(tmp_path / "~backup.jpg")


def test_column_names_match_in_any_case(tmp_path: Path) -> None:
    touch(tmp_path / "m.csv", b"ID,Path,URL,Label\nx1,a.jpg,,cat\n,,https://x.test/b.jpg,dog\n")
    touch(tmp_path / "m.jsonl", b'{"Path": "a.jpg", "Label": "cat"}\n{"URL": "https://x.test/b"}\n')
    check_sources([str(tmp_path / "m.csv"), str(tmp_path / "m.jsonl")])
    found = items(tmp_path / "m.csv", tmp_path / "m.jsonl")
    assert [(i.id, i.path, i.url, i.metadata) for i in found] == [
        ("x1", str(tmp_path / "a.jpg"), None, {"Label": "cat"}),
        ("https://x.test/b.jpg", None, "https://x.test/b.jpg", {"Label": "dog"}),
        (str(tmp_path / "a.jpg"), str(tmp_path / "a.jpg"), None, {"Label": "cat"}),
        ("https://x.test/b", None, "https://x.test/b", None),
    ]


def test_a_csv_path_cell_with_a_line_break_is_said_to_be_one(tmp_path: Path) -> None:
    touch(tmp_path / "two\nlines.jpg")
    touch(tmp_path / "m.csv", b'path\n"two\nlines.jpg"\n"no\nsuch.jpg"\n')
    ok, bad = items(tmp_path / "m.csv")
    assert ok.problem is None and ok.path == str(tmp_path / "two\nlines.jpg")
    assert bad.problem == (
        f"{tmp_path / 'm.csv'} line 4: the path cell holds a line break (a quoted value from "
        "line 4 to 5) and no such file exists: a stray '\"'? fix the quoting"
    )


@posix_only
def test_a_txt_line_that_is_not_utf8_is_treated_the_same_anywhere(tmp_path: Path) -> None:
    # It used to refuse the whole manifest in the first 64 KB and be a file name after them.
    filler = b"".join(b"%06d.jpg\n" % n for n in range(8000))  # 88 KB
    odd_line = b"caf\xe9.jpg\n"
    for name, content in [("early.txt", odd_line + filler), ("late.txt", filler + odd_line)]:
        touch(tmp_path / name, content)
        check_sources([str(tmp_path / name)])
        odd = [i for i in items(tmp_path / name) if "caf" in (i.path or "")]
        assert [(i.id, i.problem) for i in odd] == [(f"{tmp_path}/caf\\xe9.jpg", None)]


@needs_s3fs
def test_a_missing_source_spelled_with_a_tilde_or_as_a_url_says_what_to_do(
    without_gcsfs: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    message = usage_error("~/photos")
    assert message == (
        "~/photos: no such file or folder; ~ is not expanded here: write the full path "
        f"({tmp_path / 'photos'})"
    )
    message = usage_error("gs://bucket/photos")
    assert message.startswith("gs://bucket/photos: gs:// URLs need a package")
    assert "pip install 'batchclassify[gcs]'" in message
    message = usage_error("zz://bucket/photos")
    assert "zz:// is not a storage fsspec knows" in message


@needs_s3fs
def test_url_forms_in_the_url_and_path_columns(without_gcsfs: None, tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    local = "file://localhost" + str(tmp_path / "a.jpg")
    touch(
        tmp_path / "m.csv",
        f"path,url\nHttps://x.test/b.jpg,\n,{local}\n,gs://bucket/c.jpg\n".encode(),
    )
    url, path, gs = items(tmp_path / "m.csv")
    assert (url.id, url.path, url.url) == ("Https://x.test/b.jpg", None, "Https://x.test/b.jpg")
    assert (path.id, path.path, path.url) == (str(tmp_path / "a.jpg"),) * 2 + (None,)
    assert gs.problem is not None and "pip install 'batchclassify[gcs]'" in gs.problem
