"""``run --watch``'s rules without a running job: the flags, what cannot be followed, when a
file counts as whole (``Settling`` on an injected clock), which way new files are noticed."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchclassify.commands.status import format_status
from batchclassify.commands.watchflags import parse_until
from batchclassify.config import WatchConfig
from batchclassify.inputs.watching import Follower, Settling, file_system_of
from batchclassify.models import Item

from .conftest import unique_png


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_file_is_whole_once_unchanged_for_settle_seconds(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "a.png"
    path.write_bytes(b"part")
    # The wall clock says the file was written just now (its mtime).
    settling = Settling(2.0, clock=clock, wall=lambda: path.stat().st_mtime)
    settling.add(Item(id=str(path), path=str(path)))
    clock.now += 1.5
    assert settling.ripe() == []
    with open(path, "ab") as file:  # more bytes: the wait starts again
        file.write(b" and more")
    clock.now += 1.0
    assert settling.ripe() == []
    clock.now += 1.5
    assert settling.ripe() == []  # 1.5 s unchanged so far
    clock.now += 0.5
    [(item, arrived)] = settling.ripe()
    assert item.path == str(path) and arrived == 1000.0
    assert len(settling) == 0


def test_a_file_deleted_while_settling_leaves_silently(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "a.png"
    path.write_bytes(b"x")
    settling = Settling(0.5, clock=clock, wall=lambda: path.stat().st_mtime)
    settling.add(Item(id=str(path), path=str(path)))
    path.unlink()
    clock.now += 5
    assert settling.ripe() == [] and len(settling) == 0


def test_a_file_there_long_before_is_whole_at_the_second_look(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "old.png"
    path.write_bytes(b"x")
    old = path.stat().st_mtime - 3600
    os.utime(path, (old, old))
    settling = Settling(30.0, clock=clock, wall=lambda: old + 3600)
    settling.add(Item(id=str(path), path=str(path)))
    clock.now += 0.1
    assert [item.path for item, _ in settling.ripe()] == [str(path)]


def test_watch_until_takes_hh_mm_as_the_next_such_time_and_refuses_the_past() -> None:
    now = datetime(2026, 5, 1, 18, 30).astimezone()
    assert parse_until("19:00", now=now) == (now + timedelta(minutes=30)).timestamp()
    assert parse_until("18:00", now=now) == (now + timedelta(hours=23, minutes=30)).timestamp()
    later = datetime.now().astimezone() + timedelta(days=2)
    text = later.replace(microsecond=0, tzinfo=None).isoformat()
    assert parse_until(text) == later.replace(microsecond=0).timestamp()
    from batchclassify.errors import UsageError

    with pytest.raises(UsageError, match="that time has passed"):
        parse_until("2020-01-01T10:00")
    with pytest.raises(UsageError, match="write HH:MM or an ISO date"):
        parse_until("tea time")


def test_flags_that_need_watch_and_sources_it_cannot_follow_are_refused(
    cli: Any, tmp_path: Path
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    out = tmp_path / "out.jsonl"
    base = ["run", source, "--model", "colors/1", "--api-url", "local", "--output", out]
    result = cli(*base, "--idle-exit", "5")
    assert result.code == 2 and "--idle-exit needs --watch" in result.err
    result = cli(*base, "--watch", "--processes", "2")
    assert result.code == 2 and "--watch and --processes: pick one" in result.err
    result = cli(*base, "--watch", "--settle", "-1")
    assert result.code == 2 and "--settle: must be 0 or more seconds" in result.err
    manifest = tmp_path / "list.txt"
    manifest.write_text(str(source / "a.png") + "\n")
    result = cli(*base[:1], manifest, *base[2:], "--watch")
    assert result.code == 2
    assert f"--watch follows folders and object-store prefixes: {manifest} is a manifest" in (
        result.err
    )
    assert not out.exists()


def test_a_folder_on_a_network_file_system_is_polled_and_the_reason_said(
    tmp_path: Path,
) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
        f"40 22 0:50 / {tmp_path} rw,relatime - nfs4 server:/export rw\n"
    )
    assert file_system_of(str(tmp_path / "in"), str(table)) == "nfs4"
    follower = Follower(
        [str(tmp_path)],
        WatchConfig(settle=1),
        extensions=frozenset({"png"}),
        keep=lambda item_id: True,
        mount_table=str(table),
    )
    assert follower.mode == "polling" and follower.poll_every == WatchConfig.DEFAULT_POLL
    assert "is on nfs4" in follower.why
    local = Follower(
        [str(tmp_path)],
        WatchConfig(settle=1),
        extensions=frozenset({"png"}),
        keep=lambda item_id: True,
        mount_table=str(tmp_path / "no-such-table"),
    )
    assert local.mode == "inotify"


def test_polling_lists_only_folders_that_changed_and_finds_new_ones(tmp_path: Path) -> None:
    source = tmp_path / "in"
    (source / "quiet").mkdir(parents=True)
    (source / "quiet" / "a.png").write_bytes(unique_png("red", "a"))
    for folder in (source / "quiet", source):
        os.utime(folder, (1e9, 1e9))  # unchanged for long
    follower = Follower(
        [str(source)],
        WatchConfig(settle=0.1, poll=1),
        extensions=frozenset({"png"}),
        keep=lambda item_id: False,  # everything there is done already
    )
    follower._poll_folders()
    assert len(follower.settling) == 0
    follower._keep = lambda item_id: True
    (source / "new" / "deep").mkdir(parents=True)
    (source / "new" / "deep" / "b.png").write_bytes(unique_png("red", "b"))
    (source / "new" / ".hidden.png").write_bytes(unique_png("red", "h"))
    follower._poll_folders()
    assert str(source / "new" / "deep" / "b.png") in follower.settling
    # Not the hidden one, nor the quiet folder's file (its folder is not listed again).
    assert len(follower.settling) == 1


def test_status_text_while_watching() -> None:
    status = {
        "output": "out.jsonl",
        "summary": "watching",
        "running": True,
        "ok": 10,
        "failed": 0,
        "watching": {
            "following": True,
            "how": "polling every 2 s (--poll)",
            "settling": 3,
            "queued": 1,
            "latency_p50_s": 2.5,
            "latency_p95_s": 4.25,
            "latency_samples": 10,
        },
    }
    text = format_status(status)
    assert text.splitlines()[0] == "out.jsonl: watching"
    assert (
        "watching (polling every 2 s (--poll)); backlog: 3 settling, 1 sent without a row yet; "
        "arrival to row: median 2.5 s, p95 4.25 s (last 10 files)"
    ) in text


@pytest.mark.parametrize("poll", [None, 0.1], ids=["notifications", "polling"])
def test_following_ends_at_watch_until_or_once_idle_after_sending_what_came(
    tmp_path: Path, poll: float | None
) -> None:
    async def follow(config: WatchConfig) -> tuple[str | None, list[str]]:
        source = tmp_path / f"in-{config.idle_exit}"
        source.mkdir()
        sent: list[str] = []  # the producer's screen: an id handed on is not kept again
        follower = Follower(
            [str(source)],
            config,
            extensions=frozenset({"png"}),
            keep=lambda item_id: item_id not in sent,
        )
        follower.start()
        (source / f"{config.idle_exit}.png").write_bytes(unique_png("red", str(config)))
        try:
            async for batch in follower.follow(anyio.Event()):
                sent.extend(item.id for item, _ in batch)
        finally:
            follower.close()
        return follower.ended_by, [Path(item_id).name for item_id in sent]

    past = time.time() - 1
    assert anyio.run(follow, WatchConfig(settle=0.1, poll=poll, until=past)) == ("until", [])
    ended, names = anyio.run(follow, WatchConfig(settle=0.1, poll=poll, idle_exit=0.5))
    assert (ended, names) == ("idle", ["0.5.png"])
