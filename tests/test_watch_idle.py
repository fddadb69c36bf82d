"""``--idle-exit`` counts from when following begins, and the files that arrived during the
first walk are looked at first: a long walk does not end the job with them unsent. On an
injected clock that moves on each look, so a "minute-long walk" takes no time."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from batchclassify.config import WatchConfig
from batchclassify.inputs.watching import Follower, Settling
from batchclassify.models import Item

from .conftest import unique_png


class _Ticking:
    """A clock that moves on by ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 1000.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.mark.parametrize("poll", [None, 0.1], ids=["notifications", "polling"])
def test_a_walk_longer_than_idle_exit_still_sends_what_arrived_during_it(
    tmp_path: Path, poll: float | None
) -> None:
    clock = _Ticking(0.2)
    source = tmp_path / "in"
    source.mkdir()
    sent: list[str] = []

    async def follow() -> str | None:
        follower = Follower(
            [str(source)],
            WatchConfig(settle=0.1, poll=poll, idle_exit=1.0),
            extensions=frozenset({"png"}),
            keep=lambda item_id: item_id not in sent,
            clock=clock,
        )
        follower.start()  # notifications start before the first walk...
        (source / "during-the-walk.png").write_bytes(unique_png("red", "walk"))
        clock.now += 60  # ...which took a minute, far past --idle-exit
        try:
            async for batch in follower.follow(anyio.Event()):
                sent.extend(item.id for item, _ in batch)
        finally:
            follower.close()
        return follower.ended_by

    assert anyio.run(follow) == "idle"
    assert [Path(item_id).name for item_id in sent] == ["during-the-walk.png"]


@pytest.mark.parametrize("poll", [None, 0.1], ids=["notifications", "polling"])
def test_idle_exit_counts_from_when_following_begins_not_from_before_the_walk(
    tmp_path: Path, poll: float | None
) -> None:
    clock = _Ticking(0.0)  # time stands still while following: never idle for 5 s
    source = tmp_path / "in"
    source.mkdir()

    async def follow() -> str | None:
        follower = Follower(
            [str(source)],
            WatchConfig(settle=0.1, poll=poll, idle_exit=5.0),
            extensions=frozenset({"png"}),
            keep=lambda item_id: True,
            clock=clock,
        )
        follower.start()
        clock.now += 60  # a minute-long first walk that found nothing new
        stop = anyio.Event()

        async def stop_soon() -> None:
            await anyio.sleep(0.2)
            stop.set()

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(stop_soon)
                async for _batch in follower.follow(stop):
                    pass
        finally:
            follower.close()
        return follower.ended_by

    assert anyio.run(follow) is None  # still following when told to stop: not "idle"


def test_a_file_written_in_pieces_with_pauses_under_settle_is_never_sent_part_way(
    tmp_path: Path,
) -> None:
    clock = _Ticking(0.0)
    path = tmp_path / "slow.png"
    whole = unique_png("green", "slow") * 4
    path.write_bytes(whole[:10])
    settling = Settling(2.0, clock=clock, wall=lambda: path.stat().st_mtime)
    settling.add(Item(id=str(path), path=str(path)))
    step = -(-len(whole) // 8)
    for start in range(10, len(whole), step):
        clock.now += 1.9  # a pause just under --settle, then the next piece
        assert settling.ripe() == []
        with open(path, "ab") as file:
            file.write(whole[start : start + step])
        clock.now += 0.05
        assert settling.ripe() == []  # changed under our eyes: the wait starts again
    clock.now += 2.0
    [(item, _arrived)] = settling.ripe()
    assert item.path == str(path) and path.read_bytes() == whole
