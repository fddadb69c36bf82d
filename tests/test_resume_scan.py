"""The resume scan's fast paths give the same answer as reading every row in full.

The scan binds names locally, counts rows in locals and reads Parquet's id/status columns in
bulk; the resume index inlines its probe and rehash. These tests check the outcome a rerun
relies on (which ids are done, ok or failed, what is superseded), across index growths and
Parquet record batches, not the speed.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from batchclassify.output.parquet_sink import ParquetSink
from batchclassify.output.resume import RECORDED_FAILED, RECORDED_OK, PriorState
from batchclassify.output.sinks import JsonlSink, Sink

from .conftest import sample_failed_row, sample_ok_row

ROWS = 70_000  # past one 65,536-row Parquet batch, and many doublings of the index


def _write_job(sink: Sink) -> None:
    """ROWS rows, every 10th failed; then the first 100 again, now all ok (a --retry-failed
    rerun), so ten of them supersede failures and ninety supersede ok rows."""
    sink.open()
    for n in range(ROWS):
        sink.write(
            sample_failed_row(f"/p/{n}.jpg") if n % 10 == 0 else sample_ok_row(f"/p/{n}.jpg")
        )
    for n in range(100):
        sink.write(sample_ok_row(f"/p/{n}.jpg"))
    sink.close()


def _check(state: PriorState) -> None:
    assert state.scan.rows == ROWS + 100
    assert (state.ok, state.failed, state.superseded) == (
        ROWS - ROWS // 10 + 10,
        ROWS // 10 - 10,
        100,
    )
    assert len(state.index) == ROWS
    assert state.index.get("/p/0.jpg") == RECORDED_OK  # failed, then ok: the later row wins
    assert state.index.get("/p/110.jpg") == RECORDED_FAILED
    assert state.index.get("/p/69999.jpg") == RECORDED_OK
    assert state.index.get(f"/p/{ROWS}.jpg") == 0


def test_jsonl_scan_fills_the_index_like_a_full_read(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    _write_job(JsonlSink(out))
    with open(out, "ab") as handle:  # lines that are not rows: counted, not recorded
        handle.write(b"not json\n" + orjson.dumps({"id": 5, "status": "ok"}) + b"\n")
    state = PriorState()

    state.scan = JsonlSink(out).scan(state)

    _check(state)
    assert state.scan.unparsable_lines == 1
    assert state.needs_compaction()


def test_parquet_scan_fills_the_index_like_a_full_read(tmp_path: Path) -> None:
    out = tmp_path / "r"
    _write_job(ParquetSink(out))
    state = PriorState()

    state.scan = ParquetSink(out).scan(state)

    _check(state)
    assert state.scan.unparsable_lines == 0
