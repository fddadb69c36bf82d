"""Money: the billing rule of the endpoint in use, a 402's own stop, and ``--max-credits``.

Against the local server with Roboflow's cost headers (varied processing times, a cold
start) the rows and the summary carry each endpoint kind's price; a 402 with Roboflow's body
stops the job with the server's words and keeps every row; a cap is never passed, at
concurrency 64, over many runs of the real runner on an in-memory transport (fast) and a few
against the server, and a rerun with a higher cap goes on.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import anyio
import orjson
import pytest
from yarl import URL

from batchclassify.api.client import Response
from batchclassify.config import HttpConfig, JobConfig
from batchclassify.cost import RULES, SERVERLESS, Billing, rule_for_url
from batchclassify.errors import StopCause
from batchclassify.exit_codes import ExitCode
from batchclassify.job.budget import Budget
from batchclassify.job.runner import Job

from .conftest import KEY, Cli, MakeServer, make_images, read_rows, rows_by_id, run_args

_ANSWER = orjson.dumps(
    {"top": "red", "confidence": 0.9, "predictions": [{"class": "red", "confidence": 0.9}]}
)


# -- the rule of the endpoint in use --------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://classify.roboflow.com", Billing.HOSTED_V1),
        ("https://serverless.roboflow.com", Billing.SERVERLESS),
        ("http://localhost:9001", Billing.SELF_HOSTED),
        ("local", Billing.SELF_HOSTED),
    ],
)
def test_the_api_url_names_the_billing_rule(url: str, kind: Billing) -> None:
    assert rule_for_url(url).kind is kind
    assert rule_for_url(url, "hosted-v1").kind is Billing.HOSTED_V1  # --billing wins


def test_serverless_rows_and_summary_use_the_reported_processing_time(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server(
        billing_headers="serverless", processing_time=0.02, processing_time_max=0.4, seed=3
    )
    make_images(tmp_path / "in", 30)
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, tmp_path / "in"), "--billing", "serverless")

    assert result.code == 0, result.err
    rows = read_rows(output)
    for row in rows:
        assert row["credits"] == pytest.approx(max(row["server_ms"], 100.0) / 500_000)
    assert sum(row["cold_start"] for row in rows) == 1  # 10x a warm call's time
    assert any(row["server_ms"] < 100 for row in rows)  # billed at the 100 ms minimum
    total = sum(row["credits"] for row in rows)
    assert total == pytest.approx(server.stats.credits)  # what the server billed
    assert f"cost: {total:,.4f} credits for 30 requests, as the server reported them" in (
        result.err
    )
    assert "serverless billing" in result.err
    status = cli("status", output)
    assert f"cost: {total:,.4f} credits for 30 requests" in status.out


def test_remote_processing_time_is_billed_on_top_of_100_ms(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server(billing_headers="serverless-remote", processing_time=0.05)
    make_images(tmp_path / "in", 5)
    output = tmp_path / "out.jsonl"
    assert cli(*run_args(server, output, tmp_path / "in"), "--billing", "serverless").code == 0
    for row in read_rows(output):
        assert row["credits"] == pytest.approx((100.0 + row["server_ms"]) / 500_000)


@pytest.mark.parametrize(("billing", "price"), [("hosted-v1", 1 / 1000), (None, 1 / 3000)])
def test_fixed_price_endpoints_are_an_estimate_per_image(
    tmp_path: Path, make_server: MakeServer, cli: Cli, billing: str | None, price: float
) -> None:
    server = make_server()
    make_images(tmp_path / "in", 6)
    output = tmp_path / "out.jsonl"
    flags = [] if billing is None else ["--billing", billing]
    result = cli(*run_args(server, output, tmp_path / "in"), *flags)
    assert result.code == 0, result.err
    assert all(row["credits"] == pytest.approx(price) for row in read_rows(output))
    assert f"cost: {6 * price:,.4f} credits for 6 requests, an estimate" in result.err
    kind = billing or "self-hosted"
    assert f"{kind} billing" in result.err
    assert orjson.loads(cli("status", output, "--json").out)["billing"] == kind


def test_answers_without_a_processing_time_are_counted_as_not_read(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server()  # no cost header, but priced by time
    make_images(tmp_path / "in", 4)
    output = tmp_path / "out.jsonl"
    result = cli(*run_args(server, output, tmp_path / "in"), "--billing", "serverless")
    assert result.code == 0, result.err
    assert all(row["credits"] is None for row in read_rows(output))
    assert "cost not read: 4 requests answered without a processing time" in result.err


# -- 402 ------------------------------------------------------------------------------------


def test_402_stops_the_job_with_the_servers_words_keeping_every_row(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    # The workspace's cap: 12 answers at hosted v1's price, then 402 with Roboflow's body.
    server = make_server(credit_cap=0.012)
    make_images(tmp_path / "in", 80)
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, tmp_path / "in"), "--concurrency", "4")

    assert result.code == ExitCode.OUT_OF_CREDITS and int(result.code) == 4
    assert "Not enough credits to perform this request." in result.err
    assert "credit_cap_exceeded" in result.err
    assert KEY not in result.err
    rows = read_rows(output)
    assert rows and all(row["status"] == "ok" for row in rows)  # no error row per image
    # Every answer that came back before the stop is a row (the rest were cut in flight).
    assert server.stats.statuses[200] - 4 <= len(rows) <= server.stats.statuses[200]
    status = orjson.loads(cli("status", output, "--json").out)
    assert "Not enough credits" in str(status.get("state"))

    more = make_server()  # credits added: the same command resumes
    again = cli(*run_args(more, output, tmp_path / "in"), "--concurrency", "4")
    assert again.code == 0, again.err
    assert len(rows_by_id(output)) == 80
    assert more.stats.requests == 80 - len(rows)


# -- the cap --------------------------------------------------------------------------------


def test_a_budget_admits_exactly_what_a_fixed_price_allows() -> None:
    budget = Budget(limit=0.0105, rule=RULES[Billing.HOSTED_V1])
    tickets = [budget.try_admit() for _ in range(20)]
    admitted = [ticket for ticket in tickets if ticket is not None]
    assert len(admitted) == 10 and not budget.reached  # waits: requests are in flight
    for ticket in admitted:
        ticket.settle(1 / 1000)
    assert budget.try_admit() is None and budget.reached
    assert budget.spent == pytest.approx(0.010) and budget.left == pytest.approx(0.0005)


def test_a_time_billed_budget_sends_one_request_until_a_cost_is_known() -> None:
    budget = Budget(limit=1.0, rule=SERVERLESS)
    first = budget.try_admit()
    assert first is not None and budget.try_admit() is None  # alone until it is answered
    first.settle(0.002)  # a cold start
    assert budget.try_admit() is not None  # now the dearest recent cost reckons the rest
    assert budget.estimate == pytest.approx(0.002)


class _CostlyTransport:
    """Answers every request with serverless cost headers of varied processing times after
    a short random wait, so that many requests are in flight at once; adds up what it billed."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self.billed = 0.0
        self.asked = 0
        self.in_flight = self.most_in_flight = 0

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        self.asked += 1
        cold = self.asked == 1
        seconds = self._rng.uniform(0.01, 0.6) * (10 if cold else 1)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await anyio.sleep(self._rng.uniform(0, 0.003))
        self.in_flight -= 1
        self.billed += max(seconds * 1000, 100.0) / 500_000
        cost = {"X-Processing-Time": f"{seconds:.6f}", "X-Model-Cold-Start": str(cold).lower()}
        return Response(200, cost, _ANSWER)

    async def aclose(self) -> None:
        pass


def _capped_job(tmp_path: Path, cap: float | None, seed: int) -> tuple[Job, _CostlyTransport]:
    manifest = tmp_path / "urls.txt"
    if not manifest.exists():
        manifest.write_text("".join(f"https://images.example/{n}.jpg\n" for n in range(600)))
    config = JobConfig(
        sources=(str(manifest),),
        model="colors/1",
        output=tmp_path / "out.jsonl",
        max_credits=cap,
        billing="serverless",
        http=HttpConfig(api_url="https://api.example", api_key="k", concurrency=64),
    )
    transport = _CostlyTransport(seed)
    return Job(config, transport=transport), transport


@pytest.mark.parametrize("seed", range(20))
def test_the_cap_is_never_passed_at_concurrency_64_and_a_rerun_goes_on(
    tmp_path: Path, seed: int
) -> None:
    # A cold start first (10x), then warm requests of 10 to 600 ms: about 0.37 credits for all.
    cap = 0.25 + seed * 0.003
    job, transport = _capped_job(tmp_path, cap, seed)
    summary = anyio.run(job.run)

    assert transport.billed <= cap  # the server's own bill: never past the cap
    assert transport.most_in_flight > 32  # a round of concurrent work was under way
    assert summary.stop_cause is StopCause.BUDGET
    assert summary.exit_code == ExitCode.BUDGET_REACHED and int(summary.exit_code) == 5
    assert not summary.interrupted
    rows = read_rows(tmp_path / "out.jsonl")
    assert len(rows) == transport.asked  # every request answered is a row
    assert sum(row["credits"] for row in rows) == pytest.approx(transport.billed)
    # Not stopped early either: what is left is less than the dearest recent request.
    assert cap - transport.billed < 0.6 * 10 * 2 / 1000

    more, again = _capped_job(tmp_path, 10.0, seed + 100)
    resumed = anyio.run(more.run)
    assert resumed.exit_code == ExitCode.OK
    assert resumed.already_done == len(rows)
    assert again.asked == 600 - len(rows)
    assert len(rows_by_id(tmp_path / "out.jsonl")) == 600


def test_the_cap_holds_against_the_server_and_the_summary_says_what_is_left(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server(
        billing_headers="serverless", processing_time=0.05, processing_time_max=0.5, seed=7
    )
    make_images(tmp_path / "in", 300)
    output = tmp_path / "out.jsonl"
    args = [*run_args(server, output, tmp_path / "in"), "--billing", "serverless", "-c", "64"]

    result = cli(*args, "--max-credits", "0.03")

    assert result.code == ExitCode.BUDGET_REACHED, result.err
    assert server.stats.credits <= 0.03
    rows = read_rows(output)
    assert len(rows) == server.stats.statuses[200]  # every answer is a row
    spent = sum(row["credits"] for row in rows)
    assert f"budget: {spent:,.4f} of --max-credits 0.03 spent, {0.03 - spent:,.4f} left" in (
        result.err
    )
    assert "rerun with a higher --max-credits" in result.err

    again = cli(*args, "--max-credits", "5")
    assert again.code == 0, again.err
    assert len(rows_by_id(output)) == 300


def test_cache_hits_cost_nothing_under_a_cap(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server(billing_headers="serverless")
    make_images(tmp_path / "in", 10)
    cache = tmp_path / "answers.sqlite"
    first = run_args(server, tmp_path / "one.jsonl", tmp_path / "in")
    assert cli(*first, "--cache", cache, "--billing", "serverless").code == 0
    second = run_args(server, tmp_path / "two.jsonl", tmp_path / "in")
    result = cli(*second, "--cache", cache, "--billing", "serverless", "--max-credits", "0")
    assert result.code == 0, result.err
    assert all(row["cached"] for row in read_rows(tmp_path / "two.jsonl"))
    assert server.stats.requests == 10


def test_docs_show_the_billing_table_the_code_uses() -> None:
    """docs/cost.md's table is ``cost.RULES``, row for row: the user reads the rules the
    code prices by."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "cost.md").read_text()
    shown = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in page.splitlines()
        if line.startswith("| `") and line.count("|") == 5
    ]
    assert shown == [
        [f"`{rule.kind}`", rule.endpoint, rule.billed, rule.headers] for rule in RULES.values()
    ]
    assert "Roboflow's pricing docs (2026" in page
