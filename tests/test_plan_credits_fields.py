"""``plan --json`` prices the work by the endpoint's own rule in every figure it gives: no
serverless floor beside a hosted v1 price."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from .conftest import Cli, make_images


@pytest.mark.parametrize(
    ("api_url", "each"),
    [("https://classify.roboflow.com", 1 / 1000), ("https://serverless.roboflow.com", None)],
)
def test_every_credit_figure_of_plan_json_is_the_endpoints(
    tmp_path: Path, cli: Cli, api_url: str, each: float | None
) -> None:
    make_images(tmp_path / "in", 5)
    result = cli("plan", tmp_path / "in", "--model", "colors/1", "--api-url", api_url, "--json")
    assert result.code == 0, result.err
    plan = orjson.loads(result.out)
    figures = {
        key: value
        for key, value in plan.items()
        if "credits" in key and isinstance(value, float | int) and not isinstance(value, bool)
    }
    assert figures  # the plan does state what the work costs
    lowest = min(figures.values())
    assert lowest == plan["credits_min"]  # no other, lower "minimum" beside the rule's
    if each is not None:  # a fixed price: known exactly
        assert all(value == pytest.approx(5 * each) for value in figures.values()), figures
