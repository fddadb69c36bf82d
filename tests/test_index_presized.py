"""The resume index is sized from the sources' count (issue 25): a 10M-item job used to double
its index as the walk went (+26 MB over the first million, the old table held beside the new
one at each doubling: ~75 MB at the last). Now the count, once known, sizes it at once."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import orjson
from yarl import URL

from batchclassify.api.client import Response
from batchclassify.config import HttpConfig, JobConfig
from batchclassify.job.runner import Job
from batchclassify.output.idindex import IdIndex

from .conftest import read_rows

_ANSWER = orjson.dumps(
    {"top": "red", "confidence": 0.9, "predictions": [{"class": "red", "confidence": 0.9}]}
)
_ITEMS = 6_000  # past two doublings of the default table (4,096 slots at 70%)


class Answering:
    """Answers every request, once the count is made: the walk, held back by the bounded
    queue, has met a few hundred ids when it is, however slow the count's thread starts."""

    def __init__(self, counted: threading.Event) -> None:
        self._counted = counted

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        # A threading.Event (the count runs in a thread): polled, the loop never blocks.
        while not self._counted.is_set():  # noqa: ASYNC110
            await anyio.sleep(0.001)
        return Response(200, {}, _ANSWER)

    async def aclose(self) -> None:
        pass


def test_an_index_reserved_for_a_count_takes_that_many_ids_without_growing() -> None:
    index = IdIndex()
    index.reserve(100_000)
    grown, size = index.growths, index.nbytes
    for n in range(100_000):
        index.set(f"id-{n}", 1)
    assert index.growths == grown and index.nbytes == size and len(index) == 100_000


def test_the_jobs_index_is_sized_from_the_count_and_grows_once(tmp_path: Path) -> None:
    manifest = tmp_path / "urls.txt"
    manifest.write_text("".join(f"https://images.example/{n}.jpg\n" for n in range(_ITEMS)))
    counted = threading.Event()

    def counter(sources: Any, *, extensions: frozenset[str], stop: threading.Event) -> int:
        counted.set()
        return _ITEMS

    config = JobConfig(
        sources=(str(manifest),),
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(api_url="https://api.example", api_key="k", concurrency=32),
    )
    job = Job(config, transport=Answering(counted), counter=counter)
    summary = anyio.run(job.run)

    assert summary.ok == _ITEMS and len(read_rows(config.output)) == _ITEMS
    assert counted.is_set() and job.prior is not None
    # Once, to the count's size (before: twice, each doubling holding the old table).
    assert job.prior.index.growths == 1
