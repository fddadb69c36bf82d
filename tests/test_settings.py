"""Settings that cannot contradict themselves: each choice is one field, and what one field
cannot say alone is refused with a message naming the fields.

Before: ``HttpConfig(api_url=A, api_urls=(B, C))`` dropped A without a word.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from batchclassify import HttpConfig, JobConfig, UsageError, classify

from .conftest import KEY, MakeServer, make_images, read_rows


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
