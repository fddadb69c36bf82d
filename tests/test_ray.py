"""The Ray Data path: ``map_batches(Classifier)`` on a local Ray against the local server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The test extra installs Ray; CI (CI set) fails rather than skips without it.
ray = __import__("ray") if os.environ.get("CI") else pytest.importorskip("ray")

import pyarrow.parquet as pq  # noqa: E402

from batchclassify.models import ROW_FIELDS  # noqa: E402
from batchclassify.output.parquet_sink import core_schema  # noqa: E402
from batchclassify.ray_data import Classifier  # noqa: E402
from batchclassify.server import BackgroundServer  # noqa: E402

from .conftest import KEY, make_images, png  # noqa: E402


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # The key reaches the actors through their environment, as the README recommends.
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"ROBOFLOW_API_KEY": KEY}},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


def classify(dataset: Any, server: BackgroundServer, **options: Any) -> list[dict[str, Any]]:
    kwargs = {"model": "colors/1", "api_url": server.url, "actors": 2, **options}
    rows = dataset.map_batches(
        Classifier, fn_constructor_kwargs=kwargs, concurrency=2, num_cpus=0.25, batch_size=8
    )
    return list(rows.take_all())


def test_files_read_by_ray_become_rows_in_the_schema_run_writes(
    local_ray: None, server: BackgroundServer, tmp_path: Path
) -> None:
    expected = make_images(tmp_path / "photos", 30)
    (tmp_path / "photos" / "broken.png").write_bytes(b"not an image at all")
    output = tmp_path / "results"

    dataset = ray.data.read_binary_files(str(tmp_path / "photos"), include_paths=True)
    rows = dataset.map_batches(
        Classifier,
        fn_constructor_kwargs={"model": "colors/1", "api_url": server.url, "actors": 2},
        concurrency=2,
        num_cpus=0.25,  # the actors wait on the network: leave the CPUs to the reads
        batch_size=8,
    )
    rows.write_parquet(str(output))

    table = pq.read_table(output)
    assert table.schema.names[: len(ROW_FIELDS)] == list(ROW_FIELDS)
    assert table.select(list(ROW_FIELDS)).schema.equals(core_schema())
    by_id = {row["id"]: row for row in table.to_pylist()}
    assert {ident: by_id[ident]["top"] for ident in expected} == expected
    assert all(by_id[ident]["status"] == "ok" for ident in expected)
    broken = by_id[str(tmp_path / "photos" / "broken.png")]
    assert (broken["status"], broken["error_type"]) == ("error", "bad_image")
    assert server.stats.requests == 31


def test_paths_urls_and_bad_rows_are_rows_never_a_lost_block(
    local_ray: None, make_server: Callable[..., BackgroundServer], tmp_path: Path
) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(png("green"))
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "blue.png").write_bytes(png("blue"))
    server = make_server(files_dir=tmp_path / "served")
    url = f"{server.url}/_files/blue.png"
    dataset = ray.data.from_items(
        [
            {"path": str(image), "url": None, "label": "x"},
            {"path": str(tmp_path / "gone.png"), "url": None, "label": "y"},
            {"path": None, "url": url, "label": "z"},
            {"path": None, "url": None, "label": "w"},
        ]
    )

    rows = {row["label"]: row for row in classify(dataset, server)}

    assert (rows["x"]["id"], rows["x"]["top"]) == (str(image), "green")
    assert rows["y"]["error_type"] == "missing_file"
    assert (rows["z"]["id"], rows["z"]["url"], rows["z"]["top"]) == (url, url, "blue")
    assert rows["w"]["error_type"] == "bad_input" and "no image" in rows["w"]["error"]


def test_a_rejected_key_stops_each_actor_sending_and_marks_its_rows(
    local_ray: None, server: BackgroundServer
) -> None:
    dataset = ray.data.from_items([{"bytes": png("red"), "id": f"img-{n}"} for n in range(40)])

    rows = classify(dataset, server, http=_http(server, "wrong-key"), concurrency=1)

    assert len(rows) == 40
    assert {row["error_type"] for row in rows} == {"fatal"}
    assert all("API key" in row["error"] and "wrong-key" not in row["error"] for row in rows)
    # One refused request per actor at most; the rest were not sent.
    assert server.stats.requests <= 2


def _http(server: BackgroundServer, key: str) -> Any:
    from batchclassify.config import HttpConfig

    return HttpConfig(api_url=server.url, api_key=key)


def test_the_rate_limit_is_the_whole_jobs_split_over_the_actors() -> None:
    classifier = Classifier(model="colors/1", api_url="http://127.0.0.1:9", rate_limit=10, actors=4)
    assert classifier._rate.rate == 2.5


def test_failures_are_retried_and_an_image_out_of_retries_is_an_error_row(
    local_ray: None, server: BackgroundServer
) -> None:
    from batchclassify.config import RetryConfig

    doomed = png("white", side=9)
    server.fail_image(doomed, 503)
    server.fail_next(4, 429, {"Retry-After": "0"})
    images = [{"bytes": png("yellow"), "id": f"img-{n}"} for n in range(12)]
    dataset = ray.data.from_items([*images, {"bytes": doomed, "id": "doomed"}])
    retry = RetryConfig(retries=2, backoff_base=0.01, backoff_max=0.05)

    rows = {row["id"]: row for row in classify(dataset, server, retry=retry)}

    assert all(rows[f"img-{n}"]["top"] == "yellow" for n in range(12))
    # Each 429 cost one more attempt to some image (the doomed one's spend its budget too).
    assert sum(row["attempts"] for row in rows.values()) == server.stats.requests
    assert sum(rows[f"img-{n}"]["attempts"] for n in range(12)) > 12
    assert rows["doomed"]["error_type"] == "server_error"
    assert rows["doomed"]["attempts"] == 3 and "gave up after 3 attempts" in rows["doomed"]["error"]


def test_a_bytes_column_that_holds_no_bytes_is_a_row() -> None:
    import asyncio

    classifier = Classifier(model="colors/1", api_url="http://127.0.0.1:9")
    table = asyncio.run(classifier({"bytes": [42], "id": ["odd"]}))
    (row,) = table.to_pylist()
    assert (row["id"], row["error_type"]) == ("odd", "bad_input")
    assert "holds a int value, not image bytes" in row["error"]


def test_s3_paths_are_read_by_the_actors_through_fsspec(
    local_ray: None, server: BackgroundServer
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
        env = {
            "ROBOFLOW_API_KEY": KEY,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        }
        dataset = ray.data.from_items(
            [{"path": "s3://ray-photos/a/1.png"}, {"path": "s3://ray-photos/a/gone.png"}]
        )
        kwargs = {"model": "colors/1", "api_url": server.url, "actors": 1}
        rows = dataset.map_batches(
            Classifier,
            fn_constructor_kwargs=kwargs,
            concurrency=1,
            num_cpus=0.25,
            runtime_env={"env_vars": env},  # the actors' credentials and endpoint
        ).take_all()
    finally:
        moto.stop()

    by_id = {row["id"]: row for row in rows}
    assert by_id["s3://ray-photos/a/1.png"]["top"] == "blue"
    assert by_id["s3://ray-photos/a/gone.png"]["error_type"] == "missing_file"


def test_an_outage_is_waited_out_not_turned_into_error_rows(
    local_ray: None, make_server: Callable[..., BackgroundServer]
) -> None:
    """The server goes away mid-dataset and comes back on its port: the actors pause and
    probe (attempts.py, health.py) instead of spending each image's retries, so every row is
    ok though an image can be sent more often than --retries allows."""
    import threading
    import time

    from batchclassify.config import OutageConfig, RetryConfig
    from batchclassify.server import ServerConfig

    server = make_server(latency=0.02)
    config = ServerConfig(api_key=KEY, latency=0.02)
    restarted: list[BackgroundServer] = []

    def outage() -> None:
        while server.stats.requests < 20:
            time.sleep(0.005)
        server.stop()
        time.sleep(1.5)  # longer than outage_after and the retries' backoff together
        restarted.append(BackgroundServer(config, port=server.port))

    images = [{"bytes": png(color, side=8 + n), "id": f"img-{n}"}
              for n, color in enumerate(["red", "green", "blue", "yellow"] * 15)]  # fmt: skip
    dataset = ray.data.from_items(images)
    retry = RetryConfig(retries=1, backoff_base=0.05, backoff_max=0.1)
    quick = OutageConfig(outage_after=0.3, probe_initial=0.2, probe_max=0.5, max_outage=60)
    controller = threading.Thread(target=outage)
    controller.start()
    try:
        rows = classify(dataset, server, retry=retry, outage=quick, concurrency=4)
    finally:
        controller.join()
        for running in restarted:
            running.stop()

    assert len(rows) == 60
    assert [row["id"] for row in rows if row["status"] != "ok"] == []
    assert {row["id"]: row["top"] for row in rows} == {
        image["id"]: ["red", "green", "blue", "yellow"][n % 4] for n, image in enumerate(images)
    }
    assert restarted and restarted[0].stats.requests > 0  # the rest came after the outage
