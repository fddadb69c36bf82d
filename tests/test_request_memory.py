"""Memory a job holds per image: an image's body is freed as soon as its row is written.

Objects that refer to each other wait for Python's cyclic garbage collector, which runs
rarely: at a few thousand images/s that held ~1,000 image bodies (~70 MB) at c=128. With the
collector off, nothing of a finished request may be left.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

from batchclassify.inputs.encoding import EncodedImage
from batchclassify.job.sending import Race
from batchclassify.server import BackgroundServer

from .conftest import CliResult, make_images, read_rows, run_args


def _alive(kind: type) -> int:
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


def test_no_image_body_outlives_its_request(
    server: BackgroundServer, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    expected = make_images(tmp_path / "in", 40)
    output = tmp_path / "out.jsonl"
    gc.collect()
    gc.disable()
    try:
        result = cli(*run_args(server, output, tmp_path / "in"), "-c", "8")
        races, bodies = _alive(Race), _alive(EncodedImage)
    finally:
        gc.enable()
    assert result.code == 0, result.err
    assert {row["id"] for row in read_rows(output) if row["status"] == "ok"} == set(expected)
    assert (races, bodies) == (0, 0)
