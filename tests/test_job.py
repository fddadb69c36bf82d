"""The end-to-end job (issue 2): folders and manifests in, one correct row per item out.

Every test runs the real CLI (or the Python API) against the local server over 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from batchclassify import HttpConfig, JobConfig, RetryConfig, classify, run_job
from batchclassify.server import BackgroundServer, Fault

from .conftest import KEY, SAMPLES, Cli, make_image, read_rows, rows_by_id, run_args


def test_folder_walk_classifies_every_image_once(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    photos = tmp_path / "photos"
    make_image(photos / "a.jpg", "red")
    make_image(photos / "B.PNG", "blue")
    make_image(photos / "nested" / "deeper" / "c.JpEg", "green", fmt="JPEG")
    make_image(photos / "nested" / "d.webp", "yellow")
    (photos / "notes.txt").write_text("not an image")
    (photos / "data.json").write_text("{}")
    make_image(photos / ".hidden.jpg", "white")
    make_image(photos / ".cache" / "e.jpg", "white")
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, photos), "--quiet")

    assert result.code == 0, result.err
    rows = rows_by_id(output)
    expected = {
        photos / "a.jpg": "red",
        photos / "B.PNG": "blue",
        photos / "nested" / "deeper" / "c.JpEg": "green",
        photos / "nested" / "d.webp": "yellow",
    }
    assert {Path(row["path"]) for row in rows.values()} == set(expected)
    for row in rows.values():
        assert row["status"] == "ok"
        assert row["top"] == expected[Path(row["path"])]
        assert row["predicted_classes"] == [row["top"]]
        assert row["multilabel"] is False
        assert row["attempts"] == 1 and row["http_status"] == 200 and row["error"] is None
        assert row["image_width"] == 40 and row["image_height"] == 30
        confidences = [p["confidence"] for p in row["predictions"]]
        assert confidences == sorted(confidences, reverse=True)
        assert row["predictions"][0] == {"class": row["top"], "confidence": row["confidence"]}
    assert server.stats.requests == 4


@pytest.mark.parametrize("manifest", ["images.csv", "images.jsonl"])
def test_manifest_rows_carry_their_metadata(
    tmp_path: Path, server: BackgroundServer, cli: Cli, manifest: str
) -> None:
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, SAMPLES / manifest), "-q")

    assert result.code == 0, result.err
    rows = rows_by_id(output)
    assert sorted(rows) == [f"img-{n:02d}" for n in range(12)]
    for row in rows.values():
        # Relative paths resolve against the manifest's folder.
        assert Path(row["path"]).is_file()
        assert Path(row["path"]).is_relative_to(SAMPLES)
        assert row["split"] in ("train", "val")
    # The single-colour samples are labelled with their colour: the model must agree.
    for row in rows.values():
        if "," not in row["label"]:
            assert row["top"] == row["label"], row
    if manifest == "images.jsonl":
        assert {row["photographer"] for row in rows.values()} == {"make_samples.py"}


def test_txt_manifest_and_stdin(
    tmp_path: Path, server: BackgroundServer, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_image(tmp_path / "imgs" / "one.jpg", "red")
    make_image(tmp_path / "imgs" / "two.png", "green")
    manifest = tmp_path / "list.txt"
    manifest.write_text("# my images\n\nimgs/one.jpg\n   \nimgs/two.png\n")

    result = cli(*run_args(server, tmp_path / "a.jsonl", manifest), "-q")

    assert result.code == 0, result.err
    rows = rows_by_id(tmp_path / "a.jsonl")
    assert {row_id: row["top"] for row_id, row in rows.items()} == {
        str(tmp_path / "imgs/one.jpg"): "red",  # ids are absolute paths (issue 9)
        str(tmp_path / "imgs/two.png"): "green",
    }

    import io

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("imgs/one.jpg\nimgs/two.png\n"))
    result = cli(*run_args(server, tmp_path / "b.jsonl", "-"), "-q")
    assert result.code == 0, result.err
    assert {row["top"] for row in read_rows(tmp_path / "b.jsonl")} == {"red", "green"}


def test_url_items_are_sent_as_image_parameter(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli
) -> None:
    server = make_server(files_dir=SAMPLES / "images")
    manifest = tmp_path / "urls.txt"
    names = ["red.jpg", "green.png", "blue.JPG"]
    manifest.write_text("".join(f"{server.url}/_files/{name}\n" for name in names))

    result = cli(*run_args(server, tmp_path / "out.jsonl", manifest), "-q")

    assert result.code == 0, result.err
    rows = rows_by_id(tmp_path / "out.jsonl")
    assert {row["url"]: row["top"] for row in rows.values()} == {
        f"{server.url}/_files/{name}": name.split(".")[0] for name in names
    }
    assert all(row["path"] is None for row in rows.values())
    inference = [r for r in server.stats.recent if r.path == "/colors/1"]
    assert {r.image_url for r in inference} == {row["url"] for row in rows.values()}
    assert all(r.content_length in (0, None) for r in inference)


def test_multilabel_rows_and_confidence_parameter(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    output = tmp_path / "out.jsonl"
    args = run_args(server, output, SAMPLES / "images" / "more")
    args[args.index("colors/1")] = "colors-multilabel/1"

    result = cli(*args, "--confidence", "0.3", "-q")

    assert result.code == 0, result.err
    rows = {Path(row["path"]).name: row for row in read_rows(output)}
    both = rows["red-blue.png"]
    assert both["multilabel"] is True
    assert set(both["predicted_classes"]) == {"red", "blue"}
    assert {p["class"] for p in both["predictions"]} >= {"red", "blue", "green"}
    assert all(row["multilabel"] for row in rows.values())
    assert rows["blue.png"]["predicted_classes"] == ["blue"]
    assert {r.confidence for r in server.stats.recent} == {"0.3"}


@pytest.mark.slow
def test_retries_5xx_and_429_then_succeeds(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_image(tmp_path / "in" / "x.jpg", "blue")
    server.script(500, 503, Fault(status=429, headers={"Retry-After": "1"}), 502)
    output = tmp_path / "out.jsonl"

    started = time.monotonic()
    result = cli(*run_args(server, output, tmp_path / "in"), "-q")
    elapsed = time.monotonic() - started

    assert result.code == 0, result.err
    [row] = read_rows(output)
    assert row["status"] == "ok" and row["top"] == "blue"
    assert row["attempts"] == 5
    assert server.stats.statuses == {500: 1, 503: 1, 429: 1, 502: 1, 200: 1}
    assert elapsed >= 1.0  # the 429's Retry-After was waited out


def test_retry_after_http_date_is_honoured(tmp_path: Path, server: BackgroundServer) -> None:
    from email.utils import formatdate

    make_image(tmp_path / "in" / "x.jpg", "green")
    server.script(
        Fault(status=503, headers={"Retry-After": formatdate(time.time() + 2, usegmt=True)})
    )
    config = JobConfig(
        sources=(str(tmp_path / "in"),),
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(api_url=server.url, api_key=KEY),
        retry=RetryConfig(backoff_base=0.01, backoff_max=0.01),
    )
    started = time.monotonic()
    summary = classify(config)
    assert summary.exit_code == 0
    # HTTP dates have whole seconds: at least one of the two seconds must have been waited.
    assert time.monotonic() - started >= 1.0
    assert read_rows(tmp_path / "out.jsonl")[0]["attempts"] == 2


def test_retries_run_out_into_an_error_row(tmp_path: Path, server: BackgroundServer) -> None:
    make_image(tmp_path / "in" / "x.jpg", "green")
    server.fail_next(3, 500)
    config = JobConfig(
        sources=(str(tmp_path / "in"),),
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(api_url=server.url, api_key=KEY),
        retry=RetryConfig(retries=2, backoff_base=0.01, backoff_max=0.01),
    )
    summary = classify(config)
    assert summary.exit_code == 1
    [row] = read_rows(tmp_path / "out.jsonl")
    assert row["status"] == "error" and row["http_status"] == 500
    assert row["attempts"] == 3 and row["error_type"] == "server_error"
    assert "gave up after 3 requests" in row["error"]


def test_400_is_not_retried_and_the_job_goes_on(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    folder = tmp_path / "in"
    for n, color in enumerate(["red", "green", "blue"]):
        make_image(folder / f"{n}.jpg", color)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 200)
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, folder))

    assert result.code == 1
    rows = {Path(row["path"]).name: row for row in read_rows(output)}
    broken = rows.pop("broken.jpg")
    assert broken["status"] == "error" and broken["http_status"] == 400
    assert broken["attempts"] == 1 and broken["error_type"] == "bad_image"
    assert "Could not load input image" in broken["error"]
    assert all(row["status"] == "ok" for row in rows.values())
    assert server.stats.statuses == {200: 3, 400: 1}
    assert "3 ok, 1 failed" in result.err
    assert "Could not load input image" in result.err  # top errors in the summary


@pytest.mark.parametrize(
    ("key", "model", "expected"),
    [
        ("wrong-key", "colors/1", "check --api-key"),
        (KEY, "no-such-model/1", "check --model"),
        (KEY, "paused/1", "paused"),
        (KEY, "no-credits/1", "credits"),
    ],
)
def test_fatal_answer_stops_the_job_at_once(
    tmp_path: Path, server: BackgroundServer, cli: Cli, key: str, model: str, expected: str
) -> None:
    folder = tmp_path / "in"
    for n in range(60):
        make_image(folder / f"{n:03d}.jpg", "red", size=(8, 8))
    output = tmp_path / "out.jsonl"

    result = cli(
        "run",
        folder,
        "--model",
        model,
        "--api-url",
        server.url,
        "--output",
        output,
        "--api-key",
        key,
        "--concurrency",
        "4",
    )

    # Out of credits has a code of its own (4): a script can tell "add credits" apart.
    assert result.code == (4 if model == "no-credits/1" else 3)
    assert expected in result.err
    assert server.stats.requests <= 8  # a handful, not one per image
    assert read_rows(output) == []  # no error row per image: nothing was classified
    assert "wrong-key" not in result.err


def test_missing_key_is_a_fatal_error_naming_the_fix(
    tmp_path: Path, server: BackgroundServer, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_image(tmp_path / "in" / "x.jpg")
    monkeypatch.delenv("ROBOFLOW_API_KEY")
    result = cli(*run_args(server, tmp_path / "o.jsonl", tmp_path / "in"), "-q")
    assert result.code == 3
    assert "ROBOFLOW_API_KEY" in result.err


def test_hosted_api_without_key_is_a_usage_error(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_image(tmp_path / "in" / "x.jpg")
    monkeypatch.delenv("ROBOFLOW_API_KEY")
    result = cli("run", tmp_path / "in", "-m", "cats/1", "-o", tmp_path / "o.jsonl")
    assert result.code == 2
    assert "ROBOFLOW_API_KEY" in result.err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "not-a-model-id"], "SLUG/VERSION"),
        (["--concurrency", "0"], "concurrency"),
        (["--confidence", "150"], "confidence"),
    ],
)
def test_usage_errors_exit_2_before_any_request(
    tmp_path: Path, server: BackgroundServer, cli: Cli, args: list[str], message: str
) -> None:
    make_image(tmp_path / "in" / "x.jpg")
    base = run_args(server, tmp_path / "o.jsonl", tmp_path / "in")
    if args[0] == "--model":
        base[base.index("colors/1")] = args[1]
        args = []
    result = cli(*base, *args)
    assert result.code == 2
    assert message in result.err
    assert server.stats.requests == 0


def test_missing_source_is_a_usage_error(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    result = cli(*run_args(server, tmp_path / "o.jsonl", tmp_path / "nowhere"))
    assert result.code == 2
    assert "nowhere" in result.err
    assert server.stats.requests == 0


@pytest.mark.parametrize("key_in", ["query", "header"])
def test_api_key_is_sent_where_asked_and_never_written(
    tmp_path: Path, server: BackgroundServer, cli: Cli, key_in: str
) -> None:
    folder = tmp_path / "in"
    make_image(folder / "ok.jpg", "red")
    (folder / "bad.jpg").write_bytes(b"not a jpeg at all")
    (folder / "empty.png").write_bytes(b"")
    server.script(500, Fault(status=429, headers={"Retry-After": "0"}))
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, folder), "--api-key-in", key_in, "--verbose")

    assert result.code == 1
    channels = {r.api_key_in for r in server.stats.recent}
    assert channels == {key_in}
    if key_in == "header":
        assert all("api_key" not in r.query_keys for r in server.stats.recent)
    written = [output.read_text(), Path(f"{output}.job.json").read_text(), result.out, result.err]
    assert all(KEY not in text for text in written)
    assert len(read_rows(output)) == 3


def test_summary_and_row_schema(tmp_path: Path, server: BackgroundServer, cli: Cli) -> None:
    make_image(tmp_path / "in" / "x.jpg", "white")
    output = tmp_path / "out.jsonl"
    result = cli(*run_args(server, output, tmp_path / "in"))
    assert result.code == 0
    assert "1 ok, 0 failed" in result.err
    assert "images/s" in result.err
    [row] = read_rows(output)
    assert list(row)[:17] == [
        "id",
        "path",
        "url",
        "status",
        "top",
        "confidence",
        "predicted_classes",
        "predictions",
        "multilabel",
        "image_width",
        "image_height",
        "inference_id",
        "attempts",
        "http_status",
        "error_type",
        "error",
        "elapsed_ms",
    ]
    settings = json.loads(Path(f"{output}.job.json").read_text())
    assert settings["model"] == "colors/1"


def test_embedded_local_server_quickstart(tmp_path: Path, cli: Cli) -> None:
    output = tmp_path / "results.jsonl"
    result = cli(
        "run",
        SAMPLES / "images",
        "--model",
        "colors/1",
        "--api-url",
        "local",
        "--output",
        output,
    )
    assert result.code == 0, result.err
    rows = read_rows(output)
    assert len(rows) == 12
    by_name = {Path(row["path"]).name: row["top"] for row in rows}
    assert by_name["red.jpg"] == "red" and by_name["blue.JPG"] == "blue"
    assert by_name["turned.jpg"] == "yellow"


def test_python_api_async(tmp_path: Path, server: BackgroundServer) -> None:
    make_image(tmp_path / "in" / "x.png", "green")
    config = JobConfig(
        sources=(str(tmp_path / "in"),),
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(api_url=server.url, api_key=KEY),
    )
    summary = anyio.run(run_job, config)
    assert (summary.ok, summary.failed, summary.exit_code) == (1, 0, 0)
    assert read_rows(tmp_path / "out.jsonl")[0]["top"] == "green"


def test_rows_stream_to_disk_before_the_job_ends(
    tmp_path: Path, make_server: Callable[..., BackgroundServer]
) -> None:
    """Rows reach the file while later requests are still in flight."""
    server = make_server(latency=0.3)
    folder = tmp_path / "in"
    for n in range(12):
        make_image(folder / f"{n:02d}.jpg", "red", size=(8, 8))
    output = tmp_path / "out.jsonl"
    config = JobConfig(
        sources=(str(folder),),
        model="colors/1",
        output=output,
        http=HttpConfig(api_url=server.url, api_key=KEY, concurrency=2),
    )
    seen_midway: list[int] = []

    async def main() -> None:
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                # The first rows on disk, and how many answers the server had sent by then:
                # what is on disk is the point, so the file is polled.
                while not (output.exists() and read_rows(output)):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                seen_midway.append(server.stats.statuses[200])

            group.start_soon(watch)
            await run_job(config)

    anyio.run(main)
    assert seen_midway[0] < 12  # rows were on disk before the last answers were sent
    assert len(read_rows(output)) == 12


def test_jsonl_output_loads_in_pandas_polars_and_duckdb(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    """Error rows (nulls), both model kinds and metadata in one file: still one clean table."""
    pandas = pytest.importorskip("pandas")
    polars = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    output = tmp_path / "results.jsonl"
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "id,path,label\n"
        f"a,{SAMPLES / 'images' / 'red.jpg'},red\n"
        f"b,{tmp_path / 'missing.jpg'},none\n"
        f"c,{SAMPLES / 'images' / 'more' / 'red-blue.png'},both\n"
    )
    assert cli(*run_args(server, output, manifest), "-q").code == 1

    frame = pandas.read_json(output, lines=True)
    assert list(frame.sort_values("id")["status"]) == ["ok", "error", "ok"]
    table = polars.read_ndjson(output).sort("id")
    assert table["top"].to_list()[:2] == ["red", None]
    assert table["predictions"].dtype == polars.List(
        polars.Struct({"class": polars.String, "confidence": polars.Float64})
    )
    query = f"SELECT id, status, label, predictions[1].class FROM '{output}' ORDER BY id"
    rows = duckdb.connect().execute(query).fetchall()
    assert [row[:3] for row in rows] == [
        ("a", "ok", "red"),
        ("b", "error", "none"),
        ("c", "ok", "both"),
    ]
    assert rows[0][3] == "red"
