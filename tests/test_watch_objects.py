"""``run --watch`` over an object-store prefix: a real S3 API (moto's server) on 127.0.0.1,
port 0, listed by a job in a child process, against the local classification server.

The job talks S3 over HTTP as it would to AWS (the endpoint and credentials from the
standard variables, as in test_s3_source.py); objects are put and deleted through moto's
backend in this process. The tests wait (generously) for the rows they expect and assert
rows, exit codes and messages, never how long anything took. The listing rules (a key that
changes starts settling again, a deleted one is dropped, a failed listing is noted once and
retried) are also checked without a job, on a virtual clock.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The test extra installs both; CI (CI set) fails rather than skips without them.
if not os.environ.get("CI"):
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
import moto.server as moto_server

from batchclassify.config import DEFAULT_EXTENSIONS, WatchConfig
from batchclassify.inputs import objectstore
from batchclassify.inputs.watching import Follower
from batchclassify.server import BackgroundServer

from .conftest import PYTHON, run_args, start_cli, subprocess_env, unique_png
from .test_s3_source import S3
from .test_watch import WAIT, progress, rows, stop, wait_following, wait_until

pytestmark = pytest.mark.slow

SETTLE = "0.4"
POLL = "0.3"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """moto's S3 server, as test_s3_source.py starts it (empty: each test makes its bucket)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = dict(os.environ)
    os.environ.update(
        AWS_ACCESS_KEY_ID="AKIDTESTING0000000000",
        AWS_SECRET_ACCESS_KEY="s3cret-w4tch-n0t-printed",
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_DEFAULT_REGION="us-east-1",
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    objectstore.clear_cache()
    store = S3(f"http://{host}:{port}")
    store.backend.reset()
    try:
        yield store
    finally:
        objectstore.clear_cache()
        os.environ.clear()
        os.environ.update(saved)
        server.stop()
        store.backend.reset()


def start_watch(
    server: BackgroundServer, output: Path, source: str, *extra: str
) -> subprocess.Popen[str]:
    return start_cli(
        [*run_args(server, output, source), "--watch", "--settle", SETTLE, "--poll", POLL,
         "-q", *extra]
    )  # fmt: skip


def by_key(output: Path) -> dict[str, dict[str, Any]]:
    """Rows by object key; asserts none has two."""
    found = rows(output)
    named = {row["id"].rpartition("/")[2]: row for row in found}
    assert len(named) == len(found), "an object has more than one row"
    return named


def wait_keys(output: Path, process: subprocess.Popen[str], keys: set[str]) -> None:
    wait_until(lambda: keys <= {row["id"].rpartition("/")[2] for row in rows(output)}, process)


def settling(output: Path) -> int:
    return int((progress(output).get("watching") or {}).get("settling") or 0)


def test_objects_put_while_watching_get_one_row_each_and_status_says_watching(
    s3: S3, server: BackgroundServer, tmp_path: Path
) -> None:
    s3.bucket("cams")
    s3.put("cams", "in/before-red.png", unique_png("red", "cams-before"))
    output = tmp_path / "out.jsonl"
    job = start_watch(server, output, "s3://cams/in/")
    wait_following(output, job)
    colors = ["red", "green", "blue"]
    keys = {f"new-{n}-{colors[n % 3]}.png": colors[n % 3] for n in range(6)}
    for key, color in keys.items():
        s3.put("cams", f"in/{key}", unique_png(color, f"cams-{key}"))
    s3.put("cams", "in/new.json", b"{}")  # not an image: passed over
    s3.put("cams", "in/.tmp/new-x-red.png", unique_png("red", "hidden"))  # hidden
    s3.put("cams", "elsewhere/new-red.png", unique_png("red", "elsewhere"))  # not the prefix
    wait_keys(output, job, set(keys) | {"before-red.png"})
    status = subprocess.run(
        [PYTHON, "-m", "batchclassify", "status", str(output)],
        capture_output=True,
        text=True,
        check=True,
        env=subprocess_env(),
    ).stdout
    code, err = stop(job)

    assert code == 143, err
    found = by_key(output)
    assert set(found) == set(keys) | {"before-red.png"}
    assert {key: found[key]["top"] for key in keys} == keys
    assert found["new-0-red.png"]["id"] == "s3://cams/in/new-0-red.png"
    assert f"{output}: watching" in status
    assert "watching (listing s3://cams/in/ every 0.3 s" in status
    assert server.stats.requests == len(keys) + 1


def test_an_object_overwritten_before_it_was_sent_is_sent_once_a_deleted_one_never(
    s3: S3, server: BackgroundServer, tmp_path: Path
) -> None:
    s3.bucket("uploads")
    output = tmp_path / "out.jsonl"
    # A long settle: the first version is listed, and replaced, well before it could be sent
    # (the progress file that shows it listed is rewritten every 2 s).
    job = start_watch(server, output, "s3://uploads/", "--settle", "6")
    wait_following(output, job)
    s3.put("uploads", "photo.png", unique_png("red", "photo-v1"))
    s3.put("uploads", "gone.png", unique_png("red", "gone"))
    wait_until(lambda: settling(output) == 2, job)  # both listed, neither sent
    s3.put("uploads", "photo.png", unique_png("blue", "photo-v2"))
    s3.backend.delete_object("uploads", "gone.png")
    wait_keys(output, job, {"photo.png"})
    wait_until(lambda: settling(output) == 0, job)  # the deleted one dropped, unsent
    code, err = stop(job)

    assert code == 143, err
    found = by_key(output)
    assert set(found) == {"photo.png"}
    assert found["photo.png"]["top"] == "blue"  # the version that settled
    assert server.stats.requests == 1


def test_a_restart_sends_what_arrived_while_no_job_ran(
    s3: S3, server: BackgroundServer, tmp_path: Path
) -> None:
    s3.bucket("night")
    output = tmp_path / "out.jsonl"
    job = start_watch(server, output, "s3://night/")
    wait_following(output, job)
    for n in range(3):
        s3.put("night", f"first-{n}.png", unique_png("red", f"night-first{n}"))
    wait_keys(output, job, {f"first-{n}.png" for n in range(3)})
    code, err = stop(job)
    assert code == 143, err
    for n in range(3):  # arriving while no job runs
        s3.put("night", f"meanwhile-{n}.png", unique_png("green", f"night-meanwhile{n}"))
    again = start_watch(server, output, "s3://night/", "--idle-exit", "5")
    wait_following(output, again)
    s3.put("night", "later.png", unique_png("blue", "night-later"))
    _, err = again.communicate(timeout=WAIT * 2)

    assert again.returncode == 0, err
    found = by_key(output)  # each object once: the restart sent only what had no row
    expected = {f"first-{n}.png" for n in range(3)} | {f"meanwhile-{n}.png" for n in range(3)}
    assert set(found) == expected | {"later.png"}
    assert found["later.png"]["top"] == "blue"
    assert server.stats.requests == 7


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def follower(source: str, *, settle: float, clock: Clock, notes: list[str]) -> Follower:
    return Follower(
        [source],
        WatchConfig(settle=settle),
        extensions=DEFAULT_EXTENSIONS,
        keep=lambda _: True,
        clock=clock,
        note=notes.append,
    )


def test_a_key_settles_by_the_listings_and_a_changed_one_waits_again(s3: S3) -> None:
    s3.bucket("rules")
    clock, notes = Clock(), list[str]()
    watch = follower("s3://rules/in/", settle=10.0, clock=clock, notes=notes)
    assert watch.objects is not None
    assert (watch.mode, watch.objects.every) == ("polling", WatchConfig.DEFAULT_OBJECT_POLL)
    assert "listing s3://rules/in/ every 30 s" in watch.why
    s3.put("rules", "in/a.png", b"first")
    s3.put("rules", "in/b.png", b"first")
    # As ``follow`` does: a listing, then a look at what is settling.
    watch.objects.list_all(watch.settling.add)
    assert watch.settling.ripe() == [] and len(watch.settling) == 2
    clock.now += 6
    s3.put("rules", "in/a.png", b"second, longer")  # written again: it waits anew
    s3.backend.delete_object("rules", "in/b.png")  # deleted before it was sent: dropped
    watch.objects.list_all(watch.settling.add)
    assert watch.settling.ripe() == [] and len(watch.settling) == 1
    clock.now += 6  # 12 s since the first listing, 6 since the change
    assert watch.settling.ripe() == []
    clock.now += 4
    [(item, arrived)] = watch.settling.ripe()
    assert item.id == item.path == "s3://rules/in/a.png"
    assert arrived == 1000.0
    assert notes == []


def test_a_failed_listing_is_noted_once_and_the_watch_goes_on(s3: S3) -> None:
    s3.bucket("flaky")
    s3.put("flaky", "a.png", b"x")
    clock, notes = Clock(), list[str]()
    watch = follower("s3://flaky/", settle=10.0, clock=clock, notes=notes)
    assert watch.objects is not None
    watch.objects.list_all(watch.settling.add)
    assert len(watch.settling) == 1
    s3.backend.delete_object("flaky", "a.png")
    s3.backend.delete_bucket("flaky")
    first = watch.objects.list_all(watch.settling.add)
    second = watch.objects.list_all(watch.settling.add)
    assert first == [
        "listing s3://flaky/: no such bucket (check its name, and the endpoint: "
        "AWS_ENDPOINT_URL for MinIO and other S3-compatible stores); trying again in 30 s"
    ]
    assert second == []  # said once
    # The last complete listing stands: what was settling still is.
    assert len(watch.settling) == 1 and watch.settling.ripe() == []
    s3.bucket("flaky")
    s3.put("flaky", "b.png", b"y")
    assert watch.objects.list_all(watch.settling.add) == ["listing s3://flaky/ works again"]
    clock.now += 11
    assert [item.id for item, _ in watch.settling.ripe()] == ["s3://flaky/b.png"]


def test_a_folder_and_a_prefix_are_followed_by_one_job_each_in_its_own_way(
    s3: S3, tmp_path: Path
) -> None:
    s3.bucket("mixed")
    folder = tmp_path / "in"
    folder.mkdir()
    clock, notes = Clock(), list[str]()
    watch = Follower(
        [str(folder), "s3://mixed/"],
        WatchConfig(settle=1.0, poll=5.0),
        extensions=DEFAULT_EXTENSIONS,
        keep=lambda _: True,
        clock=clock,
        note=notes.append,
    )
    assert watch.objects is not None and watch.objects.every == 5.0
    assert watch.mode == "polling" and watch.poll_every == 5.0
    assert watch.why == (
        "polling every 5 s (--poll); listing s3://mixed/ every 5 s (object storage sends no "
        "notifications; a listing is a request per 1,000 keys: --poll to choose the interval)"
    )
    (folder / "a.png").write_bytes(b"file")
    s3.put("mixed", "b.png", b"object")
    watch._poll_folders()
    watch.objects.list_all(watch.settling.add)
    assert len(watch.settling) == 2
    clock.now += 2
    ripe = {item.id.rpartition("/")[2] for item, _ in watch.settling.ripe()}
    assert ripe == {"a.png", "b.png"} and notes == []
