"""``gs://`` as a source and in manifests, against a local GCS emulator (gcp-storage-emulator
on 127.0.0.1, a free port), reached by gcsfs through ``STORAGE_EMULATOR_HOST`` as it would
reach Google's, anonymously."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# gcsfs (2026.x) asks each bucket's storage layout over gRPC first, which an emulator does
# not serve: 60 s per bucket before it falls back. Read when gcsfs is imported, just below.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
# The test extra installs both; CI (CI set) fails rather than skips without them.
if not os.environ.get("CI"):
    pytest.importorskip("gcsfs")
    pytest.importorskip("gcp_storage_emulator")

from batchclassify.inputs import objectstore
from batchclassify.server import BackgroundServer

from .conftest import CliResult, png, read_rows, run_args, unique_png


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An emulated GCS with a bucket ``photos``; the gcsfs filesystem that fills it."""
    import gcsfs
    from gcp_storage_emulator.server import create_server

    # The emulator cannot listen on port 0 and say which: a free port is found here and held
    # until the emulator listens on it (both sockets with SO_REUSEADDR, as http.server sets
    # it, and this one never listening), so no other process can take it in between.
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        server = create_server("127.0.0.1", port, in_memory=True, default_bucket="photos")
        server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    objectstore.clear_cache()  # a gs:// filesystem made before would talk to another host
    try:
        yield gcsfs.GCSFileSystem(token="anon")
    finally:
        objectstore.clear_cache()
        server.stop()


def test_a_gs_prefix_is_listed_and_its_objects_classified(
    gcs: Any, server: BackgroundServer, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    gcs.pipe(
        {
            "photos/imgs/a/1-red.png": unique_png("red", "1"),
            "photos/imgs/b/2-blue.png": unique_png("blue", "2"),
            "photos/imgs/notes.txt": b"not an image",
            "photos/other/3-green.png": png("green"),
        }
    )
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, "gs://photos/imgs/"))

    assert result.code == 0, result.err
    tops = {row["id"]: row["top"] for row in read_rows(output)}
    assert tops == {"gs://photos/imgs/a/1-red.png": "red", "gs://photos/imgs/b/2-blue.png": "blue"}
    assert server.stats.requests == 2


def test_a_manifest_may_name_gs_objects_and_a_missing_one_is_a_row(
    gcs: Any, server: BackgroundServer, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    gcs.pipe({"photos/x/1-yellow.png": png("yellow")})
    manifest = tmp_path / "list.txt"
    manifest.write_text("gs://photos/x/1-yellow.png\ngs://photos/x/gone.png\n")
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, manifest))

    assert result.code == 1, result.err  # one item failed
    rows = {row["id"]: row for row in read_rows(output)}
    assert rows["gs://photos/x/1-yellow.png"]["top"] == "yellow"
    gone = rows["gs://photos/x/gone.png"]
    assert (gone["error_type"], gone["error"]) == ("missing_file", "object not found (no such key)")


def test_a_gs_bucket_that_does_not_exist_is_refused_before_any_request(
    gcs: Any, server: BackgroundServer, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    result = cli(*run_args(server, tmp_path / "out.jsonl", "gs://no-such-bucket/"))
    assert result.code == 2
    assert "gs://no-such-bucket/: no such bucket" in result.err
    assert server.stats.requests == 0
