"""merge into an earlier merged Parquet folder replaces it whole, so it refuses one holding
files batchclassify did not write (exit 2, naming them) and leaves them where they are."""

from __future__ import annotations

from pathlib import Path

from batchclassify.server import BackgroundServer

from .conftest import Cli, make_images, rows_by_id, run_args


def test_merge_never_deletes_a_users_file_inside_an_earlier_merged_folder(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    expected = make_images(tmp_path / "images", 6)
    shard = tmp_path / "shard.jsonl"
    assert cli(*run_args(server, shard, tmp_path / "images")).code == 0
    merged = tmp_path / "merged.parquet"
    assert cli("merge", shard, "--output", merged).code == 0
    assert cli("merge", shard, "--output", merged).code == 0  # its own files only: replaced

    parts = sorted(path.name for path in merged.iterdir())
    notes = merged / "MY_NOTES.txt"
    notes.write_text("mine")
    result = cli("merge", shard, "--output", merged)

    assert result.code == 2, result.err
    assert "MY_NOTES.txt" in result.err and "did not write" in result.err
    assert notes.read_text() == "mine"
    assert sorted(path.name for path in merged.iterdir()) == sorted([*parts, notes.name])
    notes.unlink()  # the earlier merge is whole: pandas-style readers see every row
    assert {item_id: row["top"] for item_id, row in rows_by_id(merged).items()} == expected
