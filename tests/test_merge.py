"""batchclassify merge: shard outputs (JSONL and Parquet, mixed) into one, one row per id."""

from __future__ import annotations

from pathlib import Path

import orjson

from batchclassify.server import BackgroundServer

from .conftest import Cli, MakeServer, make_images, read_rows, rows_by_id, run_args


def test_merge_combines_jsonl_and_parquet_shards_into_one_resumable_output(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    expected = make_images(tmp_path / "images", 24)
    images = tmp_path / "images"
    shard0, shard1 = tmp_path / "part-0.jsonl", tmp_path / "part-1.parquet"
    assert cli(*run_args(server, shard0, images), "--shard", "0/2").code == 0
    assert cli(*run_args(server, shard1, images), "--shard", "1/2").code == 0

    merged = tmp_path / "all.parquet"
    result = cli("merge", shard0, shard1, "--output", merged)
    assert result.code == 0, result.err
    assert "24 rows" in result.err
    rows = rows_by_id(merged)  # fails on a duplicate id
    assert {item_id: row["top"] for item_id, row in rows.items()} == expected
    settings = orjson.loads((tmp_path / "all.parquet.job.json").read_bytes())
    assert settings["model"] == "colors/1" and settings["shard"] is None
    assert not list(tmp_path.glob(".all.parquet.merging-*"))

    # The merged output is an output like any other: a rerun into it has nothing left to do.
    again = cli(*run_args(server, merged, images))
    assert again.code == 0, again.err
    assert "0 ok, 0 failed, 24 already done" in again.err
    assert server.stats.requests == 24


def test_merge_keeps_the_row_of_the_input_named_last(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 10)
    first, second = make_server(), make_server()
    older, newer = tmp_path / "older.jsonl", tmp_path / "newer.jsonl"
    assert cli(*run_args(first, older, tmp_path / "images")).code == 0
    subset = tmp_path / "subset.txt"
    chosen = sorted(row["id"] for row in read_rows(older))[:4]
    subset.write_text("\n".join(chosen) + "\n")
    assert cli(*run_args(second, newer, subset)).code == 0

    merged = tmp_path / "merged.jsonl"
    assert cli("merge", older, newer, "--output", merged).code == 0
    rows = rows_by_id(merged)
    assert len(rows) == 10
    newest = {row["id"]: row["inference_id"] for row in read_rows(newer)}
    oldest = {row["id"]: row["inference_id"] for row in read_rows(older)}
    assert all(newest[item_id] != oldest[item_id] for item_id in newest)  # told apart
    for item_id, row in rows.items():
        want = newest.get(item_id, oldest[item_id])
        assert row["inference_id"] == want


def test_merge_refuses_outputs_of_different_models(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 4)
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert cli(*run_args(server, one, tmp_path / "images")).code == 0
    assert cli(*run_args(server, two, tmp_path / "images", model="colors/2")).code == 0

    result = cli("merge", one, two, "--output", tmp_path / "merged.jsonl")
    assert result.code == 2
    assert "model='colors/2'" in result.err and "model='colors/1'" in result.err
    assert not (tmp_path / "merged.jsonl").exists()


def test_merge_never_replaces_a_file_it_did_not_write(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 4)
    shard = tmp_path / "shard.jsonl"
    assert cli(*run_args(server, shard, tmp_path / "images")).code == 0
    mine = tmp_path / "notes.jsonl"
    mine.write_text('{"my": "data"}\n')

    result = cli("merge", shard, "--output", mine)
    assert result.code == 2
    assert "not an earlier merge" in result.err
    assert mine.read_text() == '{"my": "data"}\n'
    # A run's own output is not a merge either; an earlier merge may be replaced.
    assert cli("merge", shard, "--output", shard).code == 2
    merged = tmp_path / "merged.jsonl"
    assert cli("merge", shard, "--output", merged).code == 0
    assert cli("merge", shard, "--output", merged).code == 0
    assert len(rows_by_id(merged)) == 4


def test_merge_refuses_something_that_is_no_output(tmp_path: Path, cli: Cli) -> None:
    stray = tmp_path / "stray.jsonl"
    stray.write_text("{}\n")
    result = cli("merge", stray, "--output", tmp_path / "merged.jsonl")
    assert result.code == 2
    assert f"{stray} is not a batchclassify output" in result.err
