"""The producer-to-workers queue (itemqueue.py): bounded, refilled in runs, and never
leaves the producer or a worker waiting for ever. Pure logic on an event loop."""

from __future__ import annotations

import anyio
import pytest

from batchclassify.job.itemqueue import ItemQueue
from batchclassify.models import Item


def _items(count: int) -> list[Item]:
    return [Item(f"/in/{n}.jpg", path=f"/in/{n}.jpg") for n in range(count)]


def test_the_producer_waits_when_full_and_refills_once_down_to_a_quarter() -> None:
    queue = ItemQueue(8)
    queue.join()
    events: list[str] = []

    async def producer() -> None:
        for item in _items(12):
            if not queue.put_nowait(item):
                events.append(f"full at {len(queue.items)}")
                assert await queue.wait_for_room()
                events.append(f"room at {len(queue.items)}")
                assert queue.put_nowait(item)
        queue.close()

    async def worker(taken: list[str]) -> None:
        while True:
            item = await queue.wait_for_item()
            if item is None:
                return
            taken.append(item.id)
            await anyio.lowlevel.checkpoint()

    async def main() -> list[str]:
        taken: list[str] = []
        async with anyio.create_task_group() as group:
            group.start_soon(producer)
            group.start_soon(worker, taken)
        return taken

    taken = anyio.run(main)
    assert taken == [item.id for item in _items(12)]  # each once, in order
    assert events == ["full at 8", "room at 2"]  # woken once, at a quarter, not per item


def test_workers_waiting_for_items_end_when_the_producer_closes() -> None:
    queue = ItemQueue(4)
    got: list[Item | None] = []

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(3):
                queue.join()
                group.start_soon(lambda: _take(queue, got))
            await anyio.wait_all_tasks_blocked()
            assert queue.put_nowait(_items(1)[0])
            queue.close()

    anyio.run(main)
    assert sorted(str(item and item.id) for item in got) == ["/in/0.jpg", "None", "None"]


async def _take(queue: ItemQueue, got: list[Item | None]) -> None:
    got.append(await queue.wait_for_item())
    queue.leave()


def test_a_producer_waiting_for_room_stops_once_every_worker_has_left() -> None:
    """Workers stop (a stop request) with the queue full: the producer is told, not left
    waiting, so the job can end."""
    queue = ItemQueue(2)
    for _ in range(2):
        queue.join()
    for item in _items(2):
        assert queue.put_nowait(item)
    answers: list[bool] = []

    async def producer() -> None:
        answers.append(await queue.wait_for_room())

    async def main() -> None:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(producer)
                await anyio.wait_all_tasks_blocked()
                queue.leave()
                await anyio.wait_all_tasks_blocked()
                assert answers == []  # one worker is still there
                queue.leave()

    anyio.run(main)
    assert answers == [False]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ItemQueue(0)
