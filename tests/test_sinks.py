"""Output files: torn-line repair, compaction, and the Parquet folder's crash recovery."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchclassify.errors import OutputError
from batchclassify.output.parquet_sink import ParquetSink
from batchclassify.output.sinks import JsonlSink

from .conftest import sample_failed_row, sample_ok_row


class Seen:
    """A scan target that keeps the rows it is handed: (id, status is ok)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, bool]] = []

    def expect(self, rows: int) -> None:
        pass

    def record(self, ids: list[str], ok: list[bool]) -> None:
        self.rows.extend(zip(ids, ok, strict=True))

    @property
    def ids(self) -> list[str]:
        return [item_id for item_id, _ in self.rows]


def test_jsonl_torn_last_line_is_cut_and_not_read(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    sink = JsonlSink(out)
    sink.open()
    for n in range(3):
        sink.write(sample_ok_row(f"{n}.jpg"))
    sink.close()
    with open(out, "ab") as handle:
        handle.write(b'{"id": "3.jpg", "status": "o')  # a kill -9 in the middle of a write
    seen = Seen()
    report = JsonlSink(out).scan(seen)
    assert seen.rows == [("0.jpg", True), ("1.jpg", True), ("2.jpg", True)]
    assert report.repaired_bytes == len(b'{"id": "3.jpg", "status": "o')
    assert report.rows == 3 and report.unparsable_lines == 0
    assert out.read_bytes().endswith(b"\n")
    assert all(orjson.loads(line) for line in out.read_bytes().splitlines())


def test_jsonl_compaction_keeps_the_last_row_of_each_id(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    sink = JsonlSink(out)
    sink.open()
    sink.write(sample_failed_row("a.jpg"))
    sink.write(sample_ok_row("b.jpg"))
    sink.write(sample_ok_row("a.jpg"))
    sink.close()
    assert sink.compact() == 1
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(r["id"], r["status"]) for r in rows] == [("b.jpg", "ok"), ("a.jpg", "ok")]
    assert not list(tmp_path.glob(".*tmp"))


def test_parquet_parts_are_typed_and_readable(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    sink = ParquetSink(out, rows_per_part=4, rows_per_group=2)
    sink.open()
    for n in range(10):
        sink.write(sample_ok_row(f"{n}.jpg", label="cat", split="train"))
        sink.flush()
    sink.write(sample_failed_row("bad.jpg"))
    sink.close()
    table = pq.read_table(out)
    assert table.num_rows == 11
    assert table.schema.field("predictions").type == pa.list_(
        pa.struct([("class", pa.string()), ("confidence", pa.float64())])
    )
    assert table.schema.field("predicted_classes").type == pa.list_(pa.string())
    assert table.schema.field("confidence").type == pa.float64()
    assert table.schema.field("image_width").type == pa.int64()
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows["3.jpg"]["predictions"][0] == {"class": "red", "confidence": 0.9}
    assert rows["3.jpg"]["label"] == "cat"
    assert rows["bad.jpg"]["error_type"] == "bad_image" and rows["bad.jpg"]["label"] is None
    assert not [p for p in os.listdir(out) if p.startswith(("_", "."))]


def test_parquet_recovers_the_journal_of_a_killed_run(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    sink = ParquetSink(out, rows_per_part=3, rows_per_group=100)
    sink.open()
    for n in range(5):
        sink.write(sample_ok_row(f"{n}.jpg"))
        sink.flush()
    # Simulate kill -9: no close(); part 0 is finished, rows 3 and 4 only in the journal,
    # and the journal's last line is torn.
    with open(out / "_journal-000001.jsonl", "ab") as handle:
        handle.write(b'{"id": "5.jp')
    (out / ".part-000001.parquet.tmp").write_bytes(b"PAR1 half written")
    seen = Seen()
    ParquetSink(out).scan(seen)
    assert sorted(seen.ids) == [
        "0.jpg",
        "1.jpg",
        "2.jpg",
        "3.jpg",
        "4.jpg",
    ]
    assert sorted(os.listdir(out)) == ["part-000000.parquet", "part-000001.parquet"]
    assert pq.read_table(out).num_rows == 5


def test_parquet_new_metadata_column_mid_job_reaches_every_part(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    sink = ParquetSink(out, rows_per_part=2, rows_per_group=1)
    sink.open()
    sink.write(sample_ok_row("a.jpg"))
    sink.write(sample_ok_row("b.jpg"))
    sink.flush()
    sink.write(sample_ok_row("c.jpg", camera=7))
    sink.close()
    table = pq.read_table(out)  # the dataset takes the first part's schema
    assert table.column("camera").to_pylist() == [None, None, "7"]


def test_parquet_compaction_drops_superseded_rows(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    sink = ParquetSink(out, rows_per_part=2)
    sink.open()
    sink.write(sample_failed_row("a.jpg"))
    sink.write(sample_ok_row("b.jpg"))
    sink.flush()
    sink.write(sample_ok_row("a.jpg"))
    sink.close()
    assert sink.compact() == 1
    rows = pq.read_table(out).to_pylist()
    assert sorted((r["id"], r["status"]) for r in rows) == [("a.jpg", "ok"), ("b.jpg", "ok")]


def test_jsonl_scan_reports_lines_that_are_not_rows(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    out.write_bytes(
        orjson.dumps(sample_ok_row("a.jpg"))
        + b"\nnot json\n"
        + b'{"no": "id"}\n'
        + orjson.dumps(sample_ok_row("b.jpg"))
        + b"\n"
    )
    seen = Seen()
    report = JsonlSink(out).scan(seen)
    assert seen.ids == ["a.jpg", "b.jpg"]
    assert (report.rows, report.unparsable_lines, report.repaired_bytes) == (2, 2, 0)


def test_parquet_scan_reports_the_metadata_columns_it_found(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    sink = ParquetSink(out)
    sink.open()
    sink.write(sample_ok_row("a.jpg", camera="x", split="train"))
    sink.close()
    report = ParquetSink(out).scan(Seen())
    assert report.rows == 1
    assert report.metadata_columns == ["camera", "split"]


def test_overwrite_removes_only_the_sinks_own_names(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    sink = ParquetSink(out)
    sink.open()
    sink.write(sample_ok_row("a.jpg"))
    sink.close()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="did not write"):
        ParquetSink(out).remove()
    assert os.listdir(out) == ["notes.txt"]
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text("{}\n")
    JsonlSink(jsonl).remove()
    assert not jsonl.exists()


def test_every_kind_of_row_lists_the_columns_in_order() -> None:
    """JSONL rows keep ROW_FIELDS' order (columns in pandas/DuckDB), manifest metadata after."""
    from batchclassify.error_types import ErrorType
    from batchclassify.models import ROW_FIELDS, Item, Prediction, cached_row, error_row, ok_row

    item = Item("/in/a.jpg", path="/in/a.jpg", metadata={"label": "x", "top": "y"})
    answer = Prediction(
        False, "red", 0.9, [{"class": "red", "confidence": 0.9}], ["red"], 8, 8, None, 12.0
    )._replace(credits=100 / 500_000)  # the endpoint's rule's price, as the client sets it
    answered = ok_row(item, answer, attempts=1, elapsed_ms=3.0)
    rows = [
        answered,
        cached_row(item, answered, cached_from="/in/b.jpg"),  # a real answer (is_answer)
        error_row(item, error="boom", error_type=ErrorType.HTTP_ERROR, attempts=1),
    ]
    for row in rows:
        assert tuple(row) == (*ROW_FIELDS, "label", "meta_top")
    assert rows[0]["credits"] == 100 / 500_000 and rows[0]["server_ms"] == 12.0
