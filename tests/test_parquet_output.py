"""Parquet end to end (issue 3): typed columns read back by the usual readers, metadata kept,
every part alike after a resume, and Parquet manifests as input.

Kill -9 and signals in Parquet mode are in ``test_resume.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from batchclassify.server import BackgroundServer

from .conftest import Cli, make_images, run_args

PREDICTION = pa.struct([("class", pa.string()), ("confidence", pa.float64())])
CORE_TYPES = {
    "id": pa.string(),
    "path": pa.string(),
    "url": pa.string(),
    "status": pa.string(),
    "top": pa.string(),
    "confidence": pa.float64(),
    "predicted_classes": pa.list_(pa.string()),
    "predictions": pa.list_(PREDICTION),
    "multilabel": pa.bool_(),
    "image_width": pa.int64(),
    "image_height": pa.int64(),
    "inference_id": pa.string(),
    "attempts": pa.int64(),
    "http_status": pa.int64(),
    "error_type": pa.string(),
    "error": pa.string(),
    "elapsed_ms": pa.float64(),
}


def write_manifest(path: Path, expected: dict[str, str], *, with_weight: bool = True) -> None:
    """A Parquet manifest: our own ids, the image paths, and typed metadata columns."""
    ids = sorted(expected)
    columns: dict[str, Any] = {
        "id": [f"img-{n}" for n in range(len(ids))],
        "path": ids,
        "colour": [expected[i] for i in ids],
        "split": ["train" if n % 3 else "val" for n in range(len(ids))],
    }
    if with_weight:
        columns["weight"] = pa.array(list(range(len(ids))), pa.int64())
        columns["checked"] = [n % 2 == 0 for n in range(len(ids))]
    pq.write_table(pa.table(columns), path)


@pytest.mark.parametrize("model", ["colors/1", "colors-multilabel/1"])
def test_parquet_output_has_typed_columns_and_correct_values(
    tmp_path: Path, server: BackgroundServer, cli: Cli, model: str
) -> None:
    expected = make_images(tmp_path / "images", 12)
    manifest = tmp_path / "manifest.parquet"
    write_manifest(manifest, expected)
    missing = tmp_path / "more.csv"
    missing.write_text(f"id,path,split\ngone,{tmp_path / 'nowhere.png'},test\n")
    output = tmp_path / "results.parquet"

    result = cli(*run_args(server, output, manifest, missing, model=model))

    assert result.code == 1, result.err  # the missing file is a failed item
    assert output.is_dir() and [p.name for p in output.iterdir()] == ["part-000000.parquet"]
    table = pq.read_table(output)
    for name, kind in CORE_TYPES.items():
        assert table.schema.field(name).type == kind, name
    for name in ("colour", "split", "weight", "checked"):
        assert table.schema.field(name).type == pa.string(), name  # metadata: strings
    assert table.column_names[: len(CORE_TYPES)] == list(CORE_TYPES)

    rows = {row["id"]: row for row in table.to_pylist()}
    assert len(rows) == table.num_rows == 13
    gone = rows.pop("gone")
    assert (gone["status"], gone["error_type"], gone["attempts"]) == ("error", "missing_file", 0)
    assert gone["top"] is None and gone["split"] == "test" and gone["weight"] is None
    for n in range(12):
        row = rows[f"img-{n}"]
        colour = row["colour"]
        assert row["status"] == "ok" and row["top"] == colour
        assert row["predicted_classes"] == [colour]
        assert row["multilabel"] is (model == "colors-multilabel/1")
        assert (row["image_width"], row["image_height"]) == (8, 8)
        assert row["attempts"] == 1 and row["http_status"] == 200
        assert row["weight"] == str(n) and row["checked"] == ("true" if n % 2 == 0 else "false")
        assert row["split"] == ("train" if n % 3 else "val")
        first = row["predictions"][0]
        assert set(first) == {"class", "confidence"} and first["class"] == colour
        confidences = [p["confidence"] for p in row["predictions"]]
        assert confidences == sorted(confidences, reverse=True)
        assert isinstance(row["elapsed_ms"], float) and row["elapsed_ms"] > 0


def test_resumed_parquet_output_reads_as_one_table_everywhere(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    """Two runs make two parts; the second brings new metadata columns. Every part gets the
    same columns, so dataset readers that take the first part's schema see them all."""
    expected = make_images(tmp_path / "images", 12)
    first, full = tmp_path / "first.parquet", tmp_path / "full.parquet"
    write_manifest(first, dict(list(expected.items())[:5]), with_weight=False)
    write_manifest(full, expected)
    output = tmp_path / "results.parquet"
    assert cli(*run_args(server, output, first), "-q").code == 0
    # The first manifest named the first five images img-0 .. img-4, like the full one.
    result = cli(*run_args(server, output, full))
    assert result.code == 0, result.err
    assert "7 ok, 0 failed, 5 already done" in result.err
    assert server.stats.requests == 12
    assert sorted(p.name for p in output.iterdir()) == [
        "part-000000.parquet",
        "part-000001.parquet",
    ]

    table = pq.read_table(output)
    dataset = ds.dataset(output, format="parquet").to_table()
    assert dataset.schema == table.schema
    assert sorted(dataset.column("id").to_pylist()) == sorted(f"img-{n}" for n in range(12))
    assert dataset.schema.field("predictions").type == pa.list_(PREDICTION)
    rows = {row["id"]: row for row in dataset.to_pylist()}
    assert rows["img-0"]["weight"] is None and rows["img-11"]["weight"] == "11"
    assert all(row["top"] == row["colour"] for row in rows.values())


def test_parquet_output_with_duckdb(tmp_path: Path, server: BackgroundServer, cli: Cli) -> None:
    duckdb = pytest.importorskip("duckdb")
    make_images(tmp_path / "images", 6)
    output = tmp_path / "results.parquet"
    assert cli(*run_args(server, output, tmp_path / "images"), "-q").code == 0
    query = (
        "SELECT count(*), count(DISTINCT id), min(top = predictions[1].class), "
        f"min(typeof(predictions)) FROM '{output}/*.parquet'"
    )
    [(count, distinct, agree, kind)] = duckdb.connect().execute(query).fetchall()
    assert (count, distinct, agree) == (6, 6, True)
    assert kind.startswith("STRUCT(") and kind.endswith(")[]")
    assert "VARCHAR" in kind and "DOUBLE" in kind


def test_parquet_output_with_polars(tmp_path: Path, server: BackgroundServer, cli: Cli) -> None:
    polars = pytest.importorskip("polars")
    expected = make_images(tmp_path / "images", 6)
    output = tmp_path / "results.parquet"
    assert cli(*run_args(server, output, tmp_path / "images"), "-q").code == 0
    frame = polars.read_parquet(f"{output}/*.parquet")
    assert dict(zip(frame["id"], frame["top"], strict=True)) == expected
    assert frame.schema["predictions"] == polars.List(
        polars.Struct({"class": polars.String, "confidence": polars.Float64})
    )


def test_parquet_output_with_pandas(tmp_path: Path, server: BackgroundServer, cli: Cli) -> None:
    pandas = pytest.importorskip("pandas")
    expected = make_images(tmp_path / "images", 6)
    output = tmp_path / "results.parquet"
    assert cli(*run_args(server, output, tmp_path / "images"), "-q").code == 0
    frame = pandas.read_parquet(output)
    assert dict(zip(frame["id"], frame["top"], strict=True)) == expected


def test_parquet_manifest_metadata_keeps_its_types_in_jsonl(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    expected = make_images(tmp_path / "images", 6)
    manifest = tmp_path / "manifest.parquet"
    write_manifest(manifest, expected)
    output = tmp_path / "results.jsonl"

    result = cli(*run_args(server, output, manifest), "-q")

    assert result.code == 0, result.err
    rows = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    assert sorted(row["id"] for row in rows) == [f"img-{n}" for n in range(6)]
    for row in rows:
        n = int(row["id"].removeprefix("img-"))
        assert row["top"] == row["colour"]
        assert row["weight"] == n and row["checked"] is (n % 2 == 0)
        assert Path(row["path"]).is_file()
