"""``plan`` tells the truth about money: a range where it cannot know, what would be sent.

A folder with 30% duplicates and no ``--cache``: identical images share a request only when
in flight together, so a plan cannot know how many requests a run makes; it says both ends
(text and ``--json``), and the run lands between them. "To upload" counts only bodies that
would be sent: no duplicates, no cache hits.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import Cli, MakeServer, make_images, read_rows, run_args


def _plan(cli: Cli, *args: str | Path) -> dict[str, Any]:
    result = cli("plan", *args, "--json")
    assert result.code == 0, result.err
    found: dict[str, Any] = orjson.loads(result.out)
    return found


def _folder_with_duplicates(root: Path) -> Path:
    """70 pictures and 30 byte-identical copies of some of them."""
    folder = root / "in"
    make_images(folder / "a", 70)
    for n, picture in enumerate(sorted((folder / "a").iterdir())[:30]):
        (folder / "b").mkdir(parents=True, exist_ok=True)
        shutil.copy(picture, folder / "b" / f"copy-{n}.png")
    return folder


@pytest.mark.parametrize("billing", ["hosted-v1", "serverless"])
def test_without_a_cache_plan_states_a_range_and_the_run_lands_in_it(
    tmp_path: Path, make_server: MakeServer, cli: Cli, billing: str
) -> None:
    folder = _folder_with_duplicates(tmp_path)
    plan = _plan(cli, folder, "--model", "colors/1", "--billing", billing)
    assert plan["requests"] == 70 and plan["requests_max"] == 100
    assert plan["bytes_sent"] < plan["bytes_sent_max"]
    assert plan["billing"] == billing
    text = cli("plan", folder, "--model", "colors/1", "--billing", billing).out
    assert "requests a run would make: 70 to 100" in text
    assert f"cost ({billing} billing): {plan['credits_min']:,.4f} to" in text

    server = make_server(billing_headers="serverless")
    output = tmp_path / "out.jsonl"
    result = cli(*run_args(server, output, folder), "--billing", billing, "-c", "8")
    assert result.code == 0, result.err
    assert 70 <= server.stats.requests <= 100
    credits = sum(row["credits"] or 0.0 for row in read_rows(output))
    assert plan["credits_min"] - 1e-9 <= credits <= plan["credits_max"] + 1e-9


def test_to_upload_counts_only_what_would_be_sent(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    folder = _folder_with_duplicates(tmp_path)
    cache = tmp_path / "answers.sqlite"
    before = _plan(cli, folder, "--model", "colors/1", "--cache", cache)
    assert before["requests"] == before["requests_max"] == 70  # with a cache: exact
    assert before["bytes_sent"] == before["bytes_sent_max"] > 0

    server = make_server()
    assert cli(*run_args(server, tmp_path / "out.jsonl", folder), "--cache", cache).code == 0
    after = _plan(cli, folder, "--model", "colors/1", "--cache", cache)
    assert after["in_cache"] == 100 and after["requests"] == 0  # copies hit too
    assert after["bytes_sent"] == 0 and after["bytes_sent_max"] == 0  # nothing to upload
    text = cli("plan", folder, "--model", "colors/1", "--cache", cache).out
    assert "to upload: 0.0 MiB" in text


def test_plan_says_how_far_a_budget_reaches(tmp_path: Path, cli: Cli) -> None:
    make_images(tmp_path / "in", 50)
    args = ("--model", "colors/1", "--billing", "hosted-v1")
    plan = _plan(cli, tmp_path / "in", *args, "--max-credits", "0.02")
    assert plan["budget_requests"] == 20 and not plan["budget_covers_all"]
    text = cli("plan", tmp_path / "in", *args, "--max-credits", "0.02").out
    assert "--max-credits 0.02 reaches about 20 requests; about 30 would be left" in text
    assert _plan(cli, tmp_path / "in", *args, "--max-credits", "1")["budget_covers_all"]
