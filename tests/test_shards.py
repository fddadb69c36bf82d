"""--shard I/N: a stable hash splits one job into shards that partition it and resume alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchclassify.errors import UsageError
from batchclassify.server import BackgroundServer
from batchclassify.shards import Shard, parse_shard, shard_of

from .conftest import Cli, make_images, read_rows, run_args

#: Computed once with BLAKE2b-64 (big-endian) mod N and checked in: a change of the hash
#: would send every item of a half-done sharded job to another shard.
STABLE = [
    ("/data/photos/cat.jpg", 2, 3),
    ("/data/photos/dog.jpg", 1, 4),
    ("s3://bucket/prefix/0001.png", 1, 4),
    ("https://example.com/a.jpg?x=1", 0, 0),
    ("/home/ünï/café.png", 1, 2),
    ("", 0, 0),
    ("/tmp/000.png", 2, 0),
    ("/tmp/001.png", 0, 6),
]


@pytest.mark.parametrize(("item_id", "of_4", "of_7"), STABLE)
def test_the_shard_of_an_id_is_fixed_forever(item_id: str, of_4: int, of_7: int) -> None:
    assert shard_of(item_id, 4) == of_4
    assert shard_of(item_id, 7) == of_7
    assert shard_of(item_id, 1) == 0


@pytest.mark.parametrize("text", ["2/2", "1/0", "a/b", "-1/2", "1", "0/2/3"])
def test_a_shard_that_is_not_i_of_n_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="--shard"):
        parse_shard(text)
    assert parse_shard(" 1 / 3 ") == Shard(1, 3)


def test_shards_partition_the_items_and_each_resumes_on_its_own(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    expected = make_images(tmp_path / "images", 45)
    pattern = tmp_path / "out" / "part-{shard}.jsonl"
    seen: dict[str, int] = {}
    for index in range(3):
        result = cli(*run_args(server, pattern, tmp_path / "images"), "--shard", f"{index}/3")
        assert result.code == 0, result.err
        for row in read_rows(tmp_path / "out" / f"part-{index}.jsonl"):
            assert row["id"] not in seen, "an item in two shards"
            assert shard_of(row["id"], 3) == index
            seen[row["id"]] = index
    assert set(seen) == set(expected)
    assert server.stats.requests == 45
    assert len(set(seen.values())) == 3  # 45 items: each shard got some

    again = cli(*run_args(server, pattern, tmp_path / "images"), "--shard", "1/3")
    assert again.code == 0, again.err
    ones = sum(1 for shard in seen.values() if shard == 1)
    assert f"0 ok, 0 failed, {ones} already done" in again.err
    assert server.stats.requests == 45


def test_a_shard_output_refuses_another_shard(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 6)
    output = tmp_path / "results.jsonl"
    assert cli(*run_args(server, output, tmp_path / "images"), "--shard", "0/2").code == 0
    before = output.read_bytes()

    other = cli(*run_args(server, output, tmp_path / "images"), "--shard", "1/2")
    assert other.code == 2
    assert "--shard 0/2, not --shard 1/2" in other.err
    unsharded = cli(*run_args(server, output, tmp_path / "images"))
    assert unsharded.code == 2
    assert "--shard 0/2, not no --shard" in unsharded.err
    assert output.read_bytes() == before


def test_shard_placeholder_needs_a_shard(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 2)
    result = cli(*run_args(server, tmp_path / "part-{shard}.jsonl", tmp_path / "images"))
    assert result.code == 2
    assert "{shard} needs --shard I/N" in result.err
    assert not list(tmp_path.glob("part-*"))


def test_plan_counts_only_its_shard(tmp_path: Path, cli: Cli) -> None:
    expected = make_images(tmp_path / "images", 30)
    mine = sum(1 for item_id in expected if shard_of(item_id, 2) == 1)
    result = cli("plan", tmp_path / "images", "--model", "colors/1", "--shard", "1/2", "--json")
    assert result.code == 0, result.err
    import orjson

    assert orjson.loads(result.out)["found"] == mine


def test_a_shard_with_none_of_the_items_is_done_not_an_error(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    (item_id,) = make_images(tmp_path / "images", 1)
    empty = 1 - shard_of(item_id, 2)
    output = tmp_path / "part-{shard}.jsonl"
    result = cli(*run_args(server, output, tmp_path / "images"), "--shard", f"{empty}/2")
    assert result.code == 0, result.err
    assert "nothing to classify" not in result.err
    assert server.stats.requests == 0
