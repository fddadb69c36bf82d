"""Settings that cannot contradict themselves: each choice is one field, and what one field
cannot say alone is refused with a message naming the fields.

Before: ``HttpConfig(api_url=A, api_urls=(B, C))`` dropped A without a word.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from yarl import URL

from batchclassify import (
    ExitCode,
    HttpConfig,
    JobConfig,
    RateConfig,
    Response,
    UsageError,
    classify,
    run_job,
)
from batchclassify.server import BackgroundServer

from .conftest import KEY, REPO, Cli, MakeServer, make_images, png, read_rows, run_args


def test_one_field_holds_one_server_or_several() -> None:
    assert HttpConfig(api_url="local").api_url == "local"
    assert HttpConfig(api_url="local").servers == ("local",)
    several = HttpConfig(api_url=["http://gpu-1:9001", "http://gpu-2:9001"])
    assert several.servers == ("http://gpu-1:9001", "http://gpu-2:9001")
    # A list of one is that server: the same settings as the URL given alone.
    assert HttpConfig(api_url=["http://gpu-1:9001"]) == HttpConfig(api_url="http://gpu-1:9001")


def test_a_second_field_for_the_servers_no_longer_exists() -> None:
    """The servers cannot disagree: there is nowhere to give a second list."""
    contradiction: dict[str, Any] = {
        "api_url": "http://a:1",
        "api_urls": ("http://b:2", "http://c:3"),
    }
    with pytest.raises(TypeError, match="api_urls"):
        HttpConfig(**contradiction)


@pytest.mark.parametrize(
    ("api_url", "message"),
    [
        ([], "http.api_url: no server given"),
        (["local", "http://a:1"], "'local' cannot be one of several servers"),
        (["http://a:1", "http://a:1/"], "http.api_url: 'http://a:1' is given more than once"),
        (["http://a:1", "ftp://b"], "http.api_url: 'ftp://b' is not an http(s) URL"),
    ],
)
def test_a_server_list_that_cannot_work_is_refused(api_url: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        HttpConfig(api_url=api_url)


def test_a_job_over_several_servers_uses_each_and_records_them(
    tmp_path: Path, make_server: MakeServer
) -> None:
    servers = [make_server(), make_server()]
    expected = make_images(tmp_path / "images", 24)
    config = JobConfig(
        sources=tmp_path / "images",
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(api_url=[server.url for server in servers], api_key=KEY, concurrency=4),
    )

    summary = classify(config)

    assert summary.ok == len(expected) and summary.failed == 0
    assert {row["id"]: row["top"] for row in read_rows(config.output)} == expected
    assert all(server.stats.requests > 0 for server in servers)
    settings = orjson.loads(Path(f"{config.output}.job.json").read_bytes())
    # As before: the first server in api_url (read by report), every one in api_urls.
    assert settings["api_url"] == servers[0].url
    assert settings["api_urls"] == [server.url for server in servers]


def _job(tmp_path: Path, server: BackgroundServer, **settings: Any) -> JobConfig:
    return JobConfig(
        sources=tmp_path / "images",
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(api_url=server.url, api_key=KEY, concurrency=2),
        **settings,
    )


def test_one_field_says_what_to_do_with_an_existing_output(
    tmp_path: Path, server: BackgroundServer
) -> None:
    """``existing``: resume, retry the failed rows, or start over; one choice of three, where
    two booleans could say both ``overwrite`` and ``retry_failed``."""
    expected = make_images(tmp_path / "images", 6)
    server.fail_image(png("blue"), 400)
    blue = [item_id for item_id, color in expected.items() if color == "blue"]
    first = classify(_job(tmp_path, server))
    assert (first.ok, first.failed) == (len(expected) - len(blue), len(blue))
    server.clear_faults()

    resumed = classify(_job(tmp_path, server, existing="resume"))
    assert (resumed.ok, resumed.failed, server.stats.requests) == (0, 0, len(expected))

    retried = classify(_job(tmp_path, server, existing="retry_failed"))
    assert (retried.ok, server.stats.requests) == (len(blue), len(expected) + len(blue))
    assert {row["id"]: row["top"] for row in read_rows(tmp_path / "out.jsonl")} == expected

    again = classify(_job(tmp_path, server, existing="overwrite"))
    assert again.ok == len(expected) and again.started_over
    assert server.stats.requests == 2 * len(expected) + len(blue)
    assert len(read_rows(tmp_path / "out.jsonl")) == len(expected)


def test_the_two_booleans_are_gone_and_a_fourth_choice_is_refused(
    tmp_path: Path, server: BackgroundServer
) -> None:
    (tmp_path / "images").mkdir()
    contradiction: dict[str, Any] = {"overwrite": True, "retry_failed": True}
    with pytest.raises(TypeError):
        _job(tmp_path, server, **contradiction)
    fourth: dict[str, Any] = {"existing": "replace"}
    with pytest.raises(UsageError, match=r"^existing: 'replace' is not one of resume, "):
        _job(tmp_path, server, **fourth)


def test_the_flags_map_onto_the_one_field(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 2)
    args = run_args(server, tmp_path / "out.jsonl", tmp_path / "images")
    assert cli(*args).code == 0
    assert cli(*args, "--overwrite").code == 0
    assert server.stats.requests == 4  # started over: both sent again
    both = cli(*args, "--overwrite", "--retry-failed")
    assert both.code == ExitCode.USAGE
    assert both.err.startswith("batchclassify: error: --overwrite and --retry-failed: pick one")
    assert server.stats.requests == 4


def test_no_rate_and_no_adaptation_is_refused() -> None:
    """``adaptive=False`` holds ``requests_per_second`` fixed: without one, nothing would
    control the rate at all (429s would not slow the job down)."""
    with pytest.raises(UsageError) as refused:
        RateConfig(adaptive=False)
    message = str(refused.value)
    assert message.startswith("rate.adaptive: False holds rate.requests_per_second fixed")
    assert RateConfig(requests_per_second=20, adaptive=False).requests_per_second == 20
    assert RateConfig().adaptive and RateConfig().requests_per_second is None


# A job in a child process whose open-file limit (soft and hard) is too low for its
# --concurrency 256, so fdlimit.py lowers it to n. In memory: the first ``_FAST`` requests are
# answered at once, which earns the copies' budget up to its cap (HedgePolicy: 2% of requests
# sent, at most max(budget_cap, concurrency)); then each item's first request hangs and a copy
# of it is answered, so the job sends as many copies as the budget allows. Prints what it saw.
_LOWERED_JOB = """
import json, sys
from collections import Counter
import anyio
import orjson
from batchclassify import HttpConfig, Job, JobConfig, Response
from batchclassify.job.hedging import HedgePolicy

FAST, STUCK = int(sys.argv[1]), int(sys.argv[2])
ANSWER = Response(200, {}, orjson.dumps({"top": "red", "confidence": 0.9, "predictions": []}))

class Transport:
    def __init__(self):
        self.asked = Counter()
    async def send(self, url, body, headers):
        image = url.query["image"]
        seen = self.asked[image]
        self.asked[image] += 1
        if int(image.rsplit("/", 1)[1]) >= FAST and seen == 0:
            await anyio.sleep_forever()  # stuck: answered by its copy, or cut by the watchdog
        await anyio.lowlevel.checkpoint()
        return ANSWER
    async def aclose(self):
        pass

folder = sys.argv[3]
with open(f"{folder}/urls.txt", "w") as manifest:
    manifest.writelines(f"https://images.example/{n}\\n" for n in range(FAST + STUCK))
config = JobConfig(
    sources=f"{folder}/urls.txt", model="colors/1", output=f"{folder}/out.jsonl",
    http=HttpConfig(
        api_url="https://api.example", api_key="k", concurrency=256, timeout=2, stall_after=1
    ),
)
transport = Transport()
job = Job(config, transport=transport)
summary = anyio.run(job.run)
n = job.config.http.concurrency
print(json.dumps({
    "lowered_to": n, "notes": summary.notes, "ok": summary.ok, "hedged": summary.hedged,
    "cap": max(HedgePolicy.budget_cap, n),
}))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_NOFILE")
def test_a_job_lowered_to_fit_the_open_file_limit_is_built_for_the_lowered_concurrency(
    tmp_path: Path,
) -> None:
    """Every stage is built from the config the job runs with. Before, ``run()`` patched the
    lowered concurrency into the config after the stages were built, and the copies' budget
    kept the cap of --concurrency 256: copies of stuck requests beyond what the open-file
    limit allows."""
    import resource

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    fast, stuck = 800, 16  # 800 requests earn 2 + 16 copies; the lowered cap is far below
    done = subprocess.run(  # in the checkout: python -c puts the working directory first
        [sys.executable, "-c", _LOWERED_JOB, str(fast), str(stuck), str(tmp_path)],
        preexec_fn=low_limit,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    n = seen["lowered_to"]
    assert 1 <= n < 16 and seen["cap"] < stuck  # the scenario tells the two caps apart
    assert any(f"--concurrency 256 lowered to {n}" in note for note in seen["notes"])
    assert seen["ok"] == fast + stuck
    assert seen["hedged"] <= seen["cap"]  # the budget of the lowered concurrency


class _InMemory:
    """A ``Transport`` answering every request at once with its image's URL as the label."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.closed = False

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        image = url.query["image"]
        self.asked.append(image)
        answer = {
            "top": image,
            "confidence": 0.9,
            "predictions": [{"class": image, "confidence": 0.9}],
        }
        return Response(200, {}, orjson.dumps(answer))

    async def aclose(self) -> None:
        self.closed = True


def _in_memory_job(tmp_path: Path, name: str) -> tuple[JobConfig, list[str]]:
    urls = [f"https://images.example/{name}-{n}.jpg" for n in range(5)]
    manifest = tmp_path / f"{name}.txt"
    manifest.write_text("\n".join(urls) + "\n")
    config = JobConfig(
        sources=manifest,
        model="colors/1",
        output=tmp_path / f"{name}.jsonl",
        http=HttpConfig(api_url="https://api.example", api_key="k"),
    )
    return config, urls


def test_classify_and_run_job_take_a_transport_as_job_does(tmp_path: Path) -> None:
    """httpx takes ``transport=`` on every entry point; so do ``classify`` and ``run_job``."""
    config, urls = _in_memory_job(tmp_path, "sync")
    transport = _InMemory()
    summary = classify(config, transport=transport)
    assert summary.ok == len(urls) and sorted(transport.asked) == urls and transport.closed
    assert {row["id"]: row["top"] for row in read_rows(config.output)} == {u: u for u in urls}

    config, urls = _in_memory_job(tmp_path, "async")
    transport = _InMemory()
    summary = anyio.run(partial(run_job, config, transport=transport))
    assert summary.ok == len(urls) and sorted(transport.asked) == urls and transport.closed
    assert {row["id"]: row["top"] for row in read_rows(config.output)} == {u: u for u in urls}
