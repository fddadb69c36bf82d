"""A finished job's rerun takes fast paths; each must give what the plain way gives.

- The JSONL resume scan reads ids and statuses of whole chunks with one regular expression
  and falls back to parsing each line of a chunk that holds anything else: the outcome
  (rows, lines that are not rows, which ids are done, ok or failed, what is superseded) must
  be that of parsing every line, whatever the lines and wherever a chunk ends.
- The resume index fills a chunk of rows in one loop (``IdIndex.set_all``).
- The walk asks the producer's screen about each id before it makes the item, and ids come
  from a per-folder cache (``LocalIds.file``): same ids, one question per id, items only for
  what is kept, and batches that still end while everything is screened out.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import orjson
import pytest

from batchclassify.config import DEFAULT_EXTENSIONS
from batchclassify.inputs.sources import iter_item_batches, iter_items
from batchclassify.models import Item
from batchclassify.names import LocalIds, as_id, path_id
from batchclassify.output import sinks
from batchclassify.output.idindex import IdIndex
from batchclassify.output.resume import QUEUED, RECORDED_FAILED, RECORDED_OK, PriorState, Screen
from batchclassify.output.sinks import JsonlSink
from batchclassify.summary import InputReport

from .conftest import sample_failed_row, sample_ok_row

# -- the JSONL scan ------------------------------------------------------------------------


def _reference(lines: list[bytes]) -> tuple[int, int, dict[str, int], tuple[int, int, int]]:
    """What parsing every line gives: (rows, unparsable lines, id -> tag of its last row,
    (ok, failed, superseded)) -- the scan as it was before its fast path."""
    rows = bad = superseded = 0
    tags: dict[str, int] = {}
    for line in lines:
        try:
            row = orjson.loads(line)
            item_id, status = row["id"], row["status"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            bad += 1
            continue
        if type(item_id) is str and type(status) is str:
            rows += 1
            superseded += item_id in tags
            tags[item_id] = RECORDED_OK if status == "ok" else RECORDED_FAILED
    ok = sum(tag == RECORDED_OK for tag in tags.values())
    return rows, bad, tags, (ok, len(tags) - ok, superseded)


def _line(row: dict[str, object]) -> bytes:
    return orjson.dumps(row) + b"\n"


def _odd_lines() -> list[bytes]:
    """Lines the fast path must leave to the full parse, or take exactly right."""
    ok = sample_ok_row
    return [
        _line(ok('/p/quote"d.jpg')),  # escaped id
        _line(ok("/p/back\\slash.jpg")),
        _line(ok("/p/line\nbreak.jpg")),
        _line(ok("/p/tab\there.jpg")),
        _line(ok("/p/ünïcødé/写真.jpg")),  # raw UTF-8: taken by the fast path
        _line({**ok("/p/a.jpg"), "path": 'photos/x","status":"error.jpg'}),  # path != id
        _line({**ok("/p/b.jpg"), "path": None, "url": "https://h/b.jpg"}),
        _line({**ok("/p/c.jpg"), "camera": {"id": "nested", "status": "error"}}),
        _line({"status": "error", "id": "/p/d.jpg"}),  # another writer's key order
        _line(sample_failed_row("/p/e.jpg")),
        b"\n",  # blank
        b"not json\n",
        _line({"id": 5, "status": "ok"}),  # neither a row nor unparsable
        _line(ok("/p/nul.jpg"))[:40] + b"\x00\x00" + _line(ok("/p/nul.jpg"))[40:],
        _line(ok("/p/bad-utf8.jpg")).replace(b"bad-utf8", b"bad\xff\xfe"),
        b'{"id":"/p/f.jpg","path":"/p/f.jpg","url":null,"status":"ok"}\n',
        _cut_short(_line(ok("/p/cut.jpg"))),  # its newline kept: no closing brace
        _line(ok("/p/0.jpg")),  # supersedes an earlier row
        _line(sample_failed_row("/p/1.jpg")),  # a failure after an ok row: now failed
    ]


def _cut_short(line: bytes) -> bytes:
    """The row's line cut in its predictions, a newline after: not a row."""
    return line[: line.index(b'"predictions"') + 20] + b"\n"


@pytest.mark.parametrize("chunk", [64, 1000, 1 << 16, 1 << 23])
def test_jsonl_scan_gives_what_parsing_every_line_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Plain rows, odd lines among them, chunk ends anywhere (64 bytes: every line is longer
    than a chunk, so the buffer grows)."""
    monkeypatch.setattr(sinks, "_SCAN_CHUNK", chunk)
    plain = [_line(sample_ok_row(f"/p/{n}.jpg")) for n in range(3000)]
    plain[7] = _line(sample_failed_row("/p/7.jpg"))
    odd = _odd_lines()
    lines = plain[:1500] + odd + plain[1500:] + odd[:5]
    out = tmp_path / "r.jsonl"
    out.write_bytes(b"".join(lines))
    rows, bad, tags, counts = _reference(lines)
    state = PriorState()

    state.scan = JsonlSink(out).scan(state)

    assert (state.scan.rows, state.scan.unparsable_lines) == (rows, bad)
    assert (state.ok, state.failed, state.superseded) == counts
    assert len(state.index) == len(tags)
    assert {item_id: state.index.get(item_id) for item_id in tags} == tags
    assert state.index.get("/p/3000.jpg") == 0
    assert state.needs_compaction()


def test_jsonl_scan_of_rows_only_takes_the_fast_path_whole(tmp_path: Path) -> None:
    """The ordinary output: every row read, none unparsable, nothing to compact."""
    out = tmp_path / "r.jsonl"
    sink = JsonlSink(out)
    sink.open()
    for n in range(5000):
        row = sample_failed_row(f"/p/{n}.jpg") if n % 7 == 0 else sample_ok_row(f"/p/{n}.jpg")
        sink.write({**row, "path": f"photos/{n}.jpg"} if n % 2 else row)
    sink.close()
    state = PriorState()

    state.scan = JsonlSink(out).scan(state)

    assert (state.scan.rows, state.scan.unparsable_lines) == (5000, 0)
    assert (state.ok, state.failed, state.superseded) == (5000 - 715, 715, 0)
    assert state.index.get("/p/7.jpg") == RECORDED_FAILED
    assert state.index.get("/p/8.jpg") == RECORDED_OK
    assert not state.needs_compaction()


# -- the index -----------------------------------------------------------------------------


def test_set_all_is_set_one_at_a_time() -> None:
    rng = random.Random(7)
    ids = [f"/p/{rng.randrange(20_000)}.jpg" for _ in range(30_000)] + ["", "x"]
    tags = [rng.choice((RECORDED_OK, RECORDED_FAILED)) for _ in ids]
    one_by_one = IdIndex()
    replaced: dict[int, int] = {}
    for item_id, tag in zip(ids, tags, strict=True):
        previous = one_by_one.set(item_id, tag)
        if previous:
            replaced[previous] = replaced.get(previous, 0) + 1
    bulk = IdIndex()

    got: dict[int, int] = {}
    for start in range(0, len(ids), 4096):  # in chunks, growing in between
        for previous, count in bulk.set_all(
            ids[start : start + 4096], tags[start : start + 4096]
        ).items():
            got[previous] = got.get(previous, 0) + count

    assert got == replaced
    assert len(bulk) == len(one_by_one) == len(set(ids))
    assert all(bulk.get(item_id) == one_by_one.get(item_id) for item_id in ids)
    assert bulk.get("/p/20000.jpg") == 0
    assert bulk.set("", QUEUED) in (RECORDED_OK, RECORDED_FAILED)  # hash("") is 0: still found


def test_reserve_makes_room_once_and_keeps_what_is_there() -> None:
    index = IdIndex()
    index.set("/p/a.jpg", RECORDED_FAILED)
    index.reserve(100_000)
    size = index.nbytes
    index.set_all([f"/p/{n}.jpg" for n in range(100_000)], [RECORDED_OK] * 100_000)
    assert index.nbytes == size  # no growth while filling what was reserved
    assert index.get("/p/a.jpg") == RECORDED_FAILED
    assert len(index) == 100_001


# -- the walk ------------------------------------------------------------------------------


def _sources(tmp_path: Path) -> list[str]:
    """A folder, and manifests of each kind naming its files, URLs, and bad rows."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    names = [f"{n}.jpg" for n in range(40)] + ["sub/x.png", "ünï.jpg", "back\\x5c.jpg"]
    for name in names:
        (folder / name).write_bytes(b"x")
    (folder / ".hidden.jpg").write_bytes(b"x")
    (folder / "notes.txt").write_bytes(b"x")
    os.symlink(folder / "missing.jpg", folder / "broken.jpg")
    txt = tmp_path / "list.txt"
    txt.write_text(
        "# a comment\n\n"
        + "".join(f"photos/{name}\n" for name in names)
        + "https://example.com/a.jpg\n~/nowhere.jpg\nfile:///tmp/x.jpg\nphotos/0.jpg\n"
        + f"{folder}/1.jpg\n./photos/../photos/2.jpg\n"
    )
    csv = tmp_path / "list.csv"
    csv.write_text(
        "path,label\n"
        + "".join(f"photos/{name},l{n}\n" for n, name in enumerate(names))
        + ",empty\nhttps://example.com/b.jpg,u\n"
    )
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_bytes(
        b"".join(orjson.dumps({"path": f"photos/{name}"}) + b"\n" for name in names)
        + b'{"path": 5}\nnot json\n{"url": "https://example.com/c.jpg", "id": "c"}\n'
    )
    return [str(folder), str(txt), str(csv), str(jsonl)]


@pytest.mark.parametrize("kind", ["folder", "txt", "csv", "jsonl"])
def test_the_walk_asks_once_per_id_and_makes_only_the_items_kept(tmp_path: Path, kind: str) -> None:
    source = _sources(tmp_path)[["folder", "txt", "csv", "jsonl"].index(kind)]
    everything = list(iter_items([source], extensions=DEFAULT_EXTENSIONS))
    asked: list[str] = []

    def keep(item_id: str) -> bool:
        asked.append(item_id)
        return len(asked) % 3 == 0

    batches = list(iter_item_batches([source], extensions=DEFAULT_EXTENSIONS, keep=keep))

    assert asked == [item.id for item in everything]
    assert [item for batch in batches for item in batch] == everything[2::3]
    assert any(item.problem for item in everything)  # bad rows are screened too


def test_local_ids_are_the_folders_real_path_and_the_escaped_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    os.symlink(tmp_path / "real", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    paths = [
        "link/a.jpg",
        "real/a.jpg",
        "link/sub/b.jpg",
        "link/ünï.jpg",
        "link/has\\x41.jpg",
        "link/..",
        "link/.",
        "link/sub/..",
        "a.jpg",
        "/a.jpg",
        f"{tmp_path}/link/c.jpg",
        "link/a.jpg",  # again, from the cache
    ]
    ids = LocalIds()

    got = [ids.file(path) for path in paths]

    def expected(path: str) -> str:
        folder, name = os.path.split(path)
        if name in ("", ".", ".."):
            return path_id(os.path.realpath(path))
        return os.path.join(path_id(os.path.realpath(folder or ".")), as_id(name))

    assert got == [expected(path) for path in paths]
    assert got[0] == got[1] == got[-1] == str(tmp_path / "real" / "a.jpg")


def test_batches_end_while_everything_is_screened_out(tmp_path: Path) -> None:
    """A finished job's rerun: no items, but the producer hears back every so often (to
    count, update the progress and see a stop request), and no source is 'empty'."""
    manifest = tmp_path / "done.txt"
    manifest.write_text("".join(f"/p/{n}.jpg\n" for n in range(10_000)))
    index = IdIndex()
    index.set_all([f"/p/{n}.jpg" for n in range(10_000)], [RECORDED_OK] * 10_000)
    screen = Screen(index, retry_failed=False, shard=None)
    report = InputReport()

    batches = list(
        iter_item_batches(
            [str(manifest)], extensions=DEFAULT_EXTENSIONS, batch_size=8, report=report,
            keep=screen.keep,
        )
    )  # fmt: skip

    assert len(batches) == -(-10_000 // (8 * 32)) and not any(batches)
    assert (screen.done, screen.found, screen.met) == (10_000, 10_000, 10_000)
    assert report.empty_sources == []


def test_the_screen_keeps_what_the_producer_rule_says(tmp_path: Path) -> None:
    index = IdIndex()
    index.set_all(["ok", "failed"], [RECORDED_OK, RECORDED_FAILED])
    ids = ["new", "ok", "failed", "new", "failed", "other"]
    plain = Screen(index, retry_failed=False, shard=None)
    assert [plain.keep(item_id) for item_id in ids] == [True, False, False, False, False, True]
    assert (plain.done, plain.failed, plain.duplicates, plain.kept) == (1, 2, 1, 2)

    again = IdIndex()
    again.set_all(["ok", "failed"], [RECORDED_OK, RECORDED_FAILED])
    retry = Screen(again, retry_failed=True, shard=None)
    assert [retry.keep(item_id) for item_id in ids] == [True, False, True, False, False, True]
    assert (retry.done, retry.failed, retry.duplicates, retry.kept) == (1, 0, 2, 3)
    assert retry.requeued == 1 and retry.found == 6


def test_items_made_by_the_walk_are_items(tmp_path: Path) -> None:
    """The inlined .txt path gives the same Item as the general one (a URL line, a ~ line
    and a file:// line take the general one)."""
    items = list(iter_items(_sources(tmp_path)[1:2], extensions=DEFAULT_EXTENSIONS))
    plain = next(
        item for item in items if item.path == "photos/0.jpg" or item.id.endswith("/0.jpg")
    )
    assert plain == Item(
        id=str(tmp_path / "photos" / "0.jpg"), path=str(tmp_path / "photos" / "0.jpg")
    )
    assert Item(id="https://example.com/a.jpg", url="https://example.com/a.jpg") in items
    assert any(item.problem and "~ is not expanded" in item.problem for item in items)
