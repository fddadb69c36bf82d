"""Object storage as a source: a real S3 API (moto's server) on 127.0.0.1, port 0.

The job talks S3 over HTTP to moto like to AWS: credentials and the endpoint come from the
standard variables (``AWS_ACCESS_KEY_ID``..., ``AWS_ENDPOINT_URL``). Buckets are filled
through moto's backend in this process (a PUT over HTTP takes ~10 ms here; a few thousand
of them would be most of the test's time); everything the job does goes over HTTP.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# The test extra installs both; CI (CI set) fails rather than skips without them.
if not os.environ.get("CI"):
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
import moto.server as moto_server

from batchclassify.config import DEFAULT_EXTENSIONS
from batchclassify.inputs import objectstore
from batchclassify.inputs.sources import iter_items
from batchclassify.server import BackgroundServer

from .conftest import (
    COLORS,
    KEY,
    PYTHON,
    CliResult,
    png,
    read_rows,
    run_args,
    subprocess_env,
    unique_png,
)

ACCESS_KEY = "AKIDTESTING0000000000"
SECRET_KEY = "s3cret-d0-not-print-7f3a9c"
IMAGES = 300
#: Objects that are not images: with the images, the listing spans three 1,000-key pages.
SIDECARS = 2200


class S3:
    """moto's S3 server, and a shortcut to fill its buckets."""

    def __init__(self, endpoint: str) -> None:
        from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
        from moto.s3.models import s3_backends

        self.endpoint = endpoint
        self.backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]

    def bucket(self, name: str) -> None:
        self.backend.create_bucket(name, "us-east-1")

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.backend.put_object(bucket, key, data)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = dict(os.environ)
    os.environ.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_DEFAULT_REGION="us-east-1",
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    objectstore.clear_cache()  # filesystems made before would talk to another endpoint
    store = S3(f"http://{host}:{port}")
    # moto's backend is one per process: under xdist a worker may set this module up again
    # after other modules' tests, and the buckets of its first setup would still be there.
    store.backend.reset()
    store.bucket("photos")
    colors = list(COLORS)
    for n in range(IMAGES):
        color = colors[n % len(colors)]
        key = f"imgs/{n:05d}-{color}.png"
        store.put("photos", key, unique_png(color, key))
    for n in range(SIDECARS):
        store.put("photos", f"imgs/{n:05d}.json", b"{}")
    store.put("photos", "imgs/.thumbs/00000-red.png", png("red"))  # hidden: passed over
    store.put("photos", "imgs/empty/", b"")  # a folder marker, not an object
    store.put("photos", "imgs2/00000-red.png", png("red"))  # not under s3://photos/imgs
    try:
        yield store
    finally:
        objectstore.clear_cache()
        os.environ.clear()
        os.environ.update(saved)
        server.stop()
        store.backend.reset()


def expected_colors() -> dict[str, str]:
    colors = list(COLORS)
    return {
        f"s3://photos/imgs/{n:05d}-{colors[n % len(colors)]}.png": colors[n % len(colors)]
        for n in range(IMAGES)
    }


def test_a_prefix_listed_over_several_pages_gives_one_row_per_image_and_resumes(
    s3: S3, server: BackgroundServer, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, "s3://photos/imgs/"))

    assert result.code == 0, result.err
    rows = read_rows(output)
    expected = expected_colors()
    assert {row["id"]: row["top"] for row in rows} == expected
    assert all(row["path"] == row["id"] and row["status"] == "ok" for row in rows)
    assert server.stats.requests == IMAGES
    # The sidecars were passed over by extension, and said so.
    assert "2200" in result.err.replace(",", "") and "json" in result.err
    assert SECRET_KEY not in result.out + result.err + output.read_text()

    # Rerun: every object is recognised by its URL; nothing is read or sent again.
    again = cli(*run_args(server, output, "s3://photos/imgs"))
    assert again.code == 0, again.err
    assert server.stats.requests == IMAGES
    assert len(read_rows(output)) == IMAGES


def test_the_listing_is_read_page_by_page_as_the_job_goes(s3: S3) -> None:
    s3.bucket("lazy")
    for n in range(1500):
        s3.put("lazy", f"{n:05d}.png", b"x")
    items = iter_items(["s3://lazy/"], extensions=DEFAULT_EXTENSIONS)
    first = next(items)
    # Added after the first page was read, listed later: a listing gathered up front would
    # not see it.
    s3.put("lazy", "zzz-late.png", b"x")
    rest = [item.id for item in items]
    assert first.id == "s3://lazy/00000.png"
    assert len(rest) == 1500 and rest[-1] == "s3://lazy/zzz-late.png"


def test_a_manifest_may_name_objects_and_a_missing_one_is_a_row(
    s3: S3, server: BackgroundServer, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    local = tmp_path / "local.png"
    local.write_bytes(png("blue"))
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "path,label\n"
        "s3://photos/imgs/00001-green.png,a\n"
        "s3://photos/imgs/gone.png,b\n"
        "s3://no-such-bucket/x.png,c\n"
        f"{local},d\n"
    )
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, manifest))

    assert result.code == 1, result.err  # some items failed
    rows = {row["id"]: row for row in read_rows(output)}
    ok = rows["s3://photos/imgs/00001-green.png"]
    assert (ok["status"], ok["top"], ok["label"]) == ("ok", "green", "a")
    gone, no_bucket = rows["s3://photos/imgs/gone.png"], rows["s3://no-such-bucket/x.png"]
    assert (gone["error_type"], gone["error"]) == ("missing_file", "object not found (no such key)")
    assert no_bucket["error_type"] == "missing_file" and "no such bucket" in no_bucket["error"]
    assert rows[str(local)]["top"] == "blue"
    assert server.stats.requests == 2


def test_a_bucket_that_does_not_exist_is_refused_before_any_request(
    s3: S3, server: BackgroundServer, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    result = cli(*run_args(server, tmp_path / "out.jsonl", "s3://no-such-bucket/photos/"))
    assert result.code == 2
    assert "s3://no-such-bucket/photos/: no such bucket" in result.err
    assert "AWS_ENDPOINT_URL" in result.err
    assert server.stats.requests == 0


def _iam_user(s3: S3, policy: dict[str, Any]) -> tuple[str, str]:
    """A user allowed by ``policy``: its access key id and secret."""
    import boto3

    iam = boto3.client("iam", endpoint_url=s3.endpoint)
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@contextmanager
def _enforcing(s3: S3) -> Iterator[None]:
    """moto checks IAM permissions (off by default) inside the block."""

    def reset_auth(count: str) -> None:
        request = urllib.request.Request(
            f"{s3.endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request) as answer:
            answer.read()

    reset_auth("0")
    try:
        yield
    finally:
        reset_auth("inf")


def test_access_denied_becomes_a_row_or_a_refusal_and_the_secret_never_shows(
    s3: S3, server: BackgroundServer, tmp_path: Path
) -> None:
    s3.put("photos", "private/00000-red.png", png("red"))
    s3.bucket("secret")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetObject"],
                "Resource": ["arn:aws:s3:::photos", "arn:aws:s3:::photos/*"],
            },
            {
                "Effect": "Deny",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::photos/private/*",
            },
        ],
    }
    access_key, secret = _iam_user(s3, policy)
    manifest = tmp_path / "list.txt"
    manifest.write_text("s3://photos/imgs/00000-red.png\ns3://photos/private/00000-red.png\n")
    output = tmp_path / "out.jsonl"
    env = subprocess_env(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret)

    def run(*sources: str | Path) -> subprocess.CompletedProcess[str]:
        args = [PYTHON, "-m", "batchclassify", *run_args(server, output, *sources)]
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)

    with _enforcing(s3):
        listed = run(manifest)
        refused = run("s3://secret/")

    assert listed.returncode == 1, listed.stderr  # one item failed
    rows = {row["id"]: row for row in read_rows(output)}
    assert rows["s3://photos/imgs/00000-red.png"]["top"] == "red"
    denied = rows["s3://photos/private/00000-red.png"]
    assert denied["error_type"] == "unreadable" and "access denied" in denied["error"]
    assert refused.returncode == 2
    assert "s3://secret/: access denied listing it" in refused.stderr
    everything = listed.stdout + listed.stderr + refused.stdout + refused.stderr
    assert secret not in everything and secret not in output.read_text()
    assert KEY not in everything


def test_without_s3fs_an_object_url_names_the_extra_to_install(tmp_path: Path) -> None:
    # s3fs made unimportable in a child process: what a machine without the extra sees.
    code = (
        "import sys; sys.modules['s3fs'] = None; from batchclassify.commands.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    args = ["run", "s3://photos/imgs/", "--model", "colors/1", "--api-url", "local"]
    args += ["--output", str(tmp_path / "out.jsonl")]
    done = subprocess.run(
        [PYTHON, "-c", code, *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "pip install 'batchclassify[s3]'" in done.stderr


def test_any_fsspec_storage_with_a_listing_is_a_source(
    server: BackgroundServer, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    # fsspec's in-memory filesystem: no async API, so it is walked folder by folder and its
    # files are read in threads.
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.pipe({"/shots/a/1-red.png": png("red"), "/shots/b/2-blue.png": png("blue")})
    memory.pipe({"/shots/b/notes.txt": b"x", "/shots/.cache/3-red.png": png("red")})
    output = tmp_path / "out.jsonl"
    try:
        result = cli(*run_args(server, output, "memory://shots/"))
    finally:
        memory.rm("/shots", recursive=True)

    assert result.code == 0, result.err
    tops = {row["id"]: row["top"] for row in read_rows(output)}
    assert tops == {"memory://shots/a/1-red.png": "red", "memory://shots/b/2-blue.png": "blue"}
