"""The Ray Data path on a real local Ray: the README's recipe end to end.

Most of ``Classifier``'s behaviour is tested by calling it directly, without Ray
(tests/test_ray_callable.py); these tests keep what only Ray shows: a dataset read by Ray,
classified by an actor pool, written by Ray, and the key in no file Ray writes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The test extra installs Ray; CI (CI set) fails rather than skips without it.
ray = __import__("ray") if os.environ.get("CI") else pytest.importorskip("ray")

import pyarrow.parquet as pq  # noqa: E402

from batchclassify.config import HttpConfig  # noqa: E402
from batchclassify.models import ROW_FIELDS  # noqa: E402
from batchclassify.output.parquet_sink import core_schema  # noqa: E402
from batchclassify.ray_data import Classifier  # noqa: E402
from batchclassify.server import BackgroundServer  # noqa: E402

from .conftest import KEY, make_images, png  # noqa: E402

# A hang guard of their own: a local Ray (its processes, then the actors' worker processes)
# took over the suite's 90 s to start on a machine running several suites, though it was
# progressing; these are the suite's only tests on a real Ray.
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Path]:
    """A local Ray started as docs/ray.md says: the key in the environment Ray's workers
    start in (they inherit the driver's here; a cluster's nodes have it in theirs), never in
    ``runtime_env``. Yields Ray's temporary folder: every file Ray writes is under it."""
    # Short: Ray puts its sockets under it (a Unix socket path is at most 107 bytes).
    temp = Path(tempfile.mkdtemp(prefix="bc-ray-"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ROBOFLOW_API_KEY", KEY)
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            _temp_dir=str(temp),
        )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield temp
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def classify(dataset: Any, server: BackgroundServer, **remote_args: Any) -> Any:
    """The docs' ``map_batches`` call, with two actors."""
    return dataset.map_batches(
        Classifier,
        fn_constructor_kwargs={
            "model": "colors/1",
            "http": HttpConfig(api_url=server.url),
            "actors": 2,
        },
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=0.25,  # the actors wait on the network: leave the CPUs to the reads
        batch_size=8,
        **remote_args,
    )


def files_holding(folder: Path, secret: str) -> list[str]:
    """Every file under ``folder`` whose bytes hold ``secret``."""
    needle = secret.encode()
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    found.append(str(path.relative_to(folder)))
            except OSError:
                continue  # a socket, or a file Ray removed meanwhile
    return found


def test_files_read_by_ray_become_rows_and_the_key_is_in_no_file_ray_writes(
    local_ray: Path, server: BackgroundServer, tmp_path: Path
) -> None:
    expected = make_images(tmp_path / "photos", 30)
    (tmp_path / "photos" / "broken.png").write_bytes(b"not an image at all")
    output = tmp_path / "results"

    dataset = ray.data.read_binary_files(str(tmp_path / "photos"), include_paths=True)
    classify(dataset, server).write_parquet(str(output))

    table = pq.read_table(output)
    assert table.schema.names[: len(ROW_FIELDS)] == list(ROW_FIELDS)
    assert table.select(list(ROW_FIELDS)).schema.equals(core_schema())
    by_id = {row["id"]: row for row in table.to_pylist()}
    assert {ident: by_id[ident]["top"] for ident in expected} == expected
    assert all(by_id[ident]["status"] == "ok" for ident in expected)
    broken = by_id[str(tmp_path / "photos" / "broken.png")]
    assert (broken["status"], broken["error_type"]) == ("error", "bad_image")
    assert server.stats.requests == 31
    # The key reached the actors (every row above is an answer to it) and no file of Ray's.
    assert any(local_ray.rglob("*.log"))  # Ray's logs are where we look
    assert files_holding(local_ray, KEY) == []


def test_s3_paths_are_read_by_the_actors_through_fsspec(
    local_ray: Path, server: BackgroundServer
) -> None:
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    import logging

    from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        backend.create_bucket("ray-photos", "us-east-1")
        backend.put_object("ray-photos", "a/1.png", png("blue"))
        # The test store's made-up credentials and endpoint; never the API key (docs/ray.md).
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        }
        dataset = ray.data.from_items(
            [{"path": "s3://ray-photos/a/1.png"}, {"path": "s3://ray-photos/a/gone.png"}]
        )
        rows = classify(dataset, server, runtime_env={"env_vars": env}).take_all()
    finally:
        moto.stop()

    by_id = {row["id"]: row for row in rows}
    assert by_id["s3://ray-photos/a/1.png"]["top"] == "blue"
    assert by_id["s3://ray-photos/a/gone.png"]["error_type"] == "missing_file"
