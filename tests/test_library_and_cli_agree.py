"""The library and the command line follow the same rules and defaults, kept in the
configuration classes: the key Roboflow's hosted API requires (``HttpConfig.check_key``),
and ``plan``'s concurrency and JPEG quality (the run's, read from the classes).

Before, the key rule lived in ``cli.py`` alone (a library job to the hosted API without a key
sent its requests and stopped on the 401), and ``plan`` had its own defaults (32, 90).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import anyio
import orjson
import pytest
from yarl import URL

from batchclassify import HttpConfig, Job, JobConfig, UsageError
from batchclassify.api.client import Response
from batchclassify.server import BackgroundServer

from .conftest import Cli, make_images, run_args

HOSTED = ["https://classify.roboflow.com", "https://serverless.roboflow.com"]


class RecordingTransport:
    """Answers 401, as the hosted API does without a key; records every request."""

    def __init__(self) -> None:
        self.sent: list[URL] = []

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        self.sent.append(url)
        return Response(401, {}, b'{"message": "Unauthorized api_key"}')

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("api_url", HOSTED)
def test_the_library_refuses_the_hosted_api_without_a_key_before_sending(
    tmp_path: Path, api_url: str
) -> None:
    make_images(tmp_path / "in", 2)
    config = JobConfig(
        sources=tmp_path / "in",
        model="cats/1",
        output=tmp_path / "o.jsonl",
        http=HttpConfig(api_url=api_url),
    )
    transport = RecordingTransport()
    with pytest.raises(UsageError) as refused:
        anyio.run(Job(config, transport=transport).run)
    assert refused.value.field == "http.api_key"
    assert str(refused.value).startswith("http.api_key: none given")
    assert transport.sent == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no output, no lock


@pytest.mark.parametrize("api_url", HOSTED)
@pytest.mark.parametrize("processes", ["1", "2"])
def test_the_command_line_refuses_it_with_the_same_words(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, api_url: str, processes: str
) -> None:
    make_images(tmp_path / "in", 2)
    monkeypatch.delenv("ROBOFLOW_API_KEY")
    with pytest.raises(UsageError) as library:
        HttpConfig(api_url=api_url).check_key()
    result = cli(
        "run", tmp_path / "in", "-m", "cats/1", "-o", tmp_path / "o.jsonl",
        "--api-url", api_url, "--processes", processes,
    )  # fmt: skip
    assert result.code == 2
    assert result.err.strip() == (
        f"batchclassify: error: --api-key (or $ROBOFLOW_API_KEY): {library.value.problem}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_other_servers_need_no_key() -> None:
    for url in ("http://localhost:9001", "local", "https://roboflow.com.example"):
        HttpConfig(api_url=url).check_key()  # no error
    HttpConfig(api_url=HOSTED[0], api_key="k").check_key()
    with pytest.raises(UsageError):
        HttpConfig(api_url=("http://localhost:9001", HOSTED[1])).check_key()


def test_plan_takes_the_configurations_concurrency(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_images(tmp_path / "in", 2)
    monkeypatch.setattr(HttpConfig, "concurrency", 7)  # one place to change it
    result = cli("plan", tmp_path / "in", "-m", "colors/1", "--json")
    assert result.code == 0, result.err
    assert orjson.loads(result.out)["concurrency"] == 7
    result = cli("plan", tmp_path / "in", "-m", "colors/1", "--json", "-c", "5000")
    assert result.code == 2 and "--concurrency: must be between 1 and 4096" in result.err


def test_plan_keys_downscaled_images_with_the_runs_jpeg_quality(
    tmp_path: Path, server: BackgroundServer, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan finds the answers a run stored, for downscaled images too: both encode at the
    configuration's JPEG quality when none is given."""
    make_images(tmp_path / "in", 3)
    monkeypatch.setattr(JobConfig, "jpeg_quality", 70)  # one place to change it
    cache = tmp_path / "answers.sqlite"
    ran = cli(
        *run_args(server, tmp_path / "o.jsonl", tmp_path / "in"), "--max-size", "16",
        "--cache", cache,
    )  # fmt: skip
    assert ran.code == 0, ran.err
    planned = cli(
        "plan", tmp_path / "in", "-m", "colors/1", "--max-size", "16", "--cache", cache, "--json"
    )
    assert planned.code == 0, planned.err
    plan = orjson.loads(planned.out)
    assert (plan["in_cache"], plan["requests"]) == (3, 0)
