"""A job run until it ends or is told to stop: by SIGINT/SIGTERM, or by its parent's death.

The CLI runs a lone job this way, and each child of ``run --processes`` does too: the first
signal stops the job gently (requests in flight finish, every row is written), the second
at once. A child also watches a pipe its parent holds the other end of (its stdin): when
the parent dies, however it dies (``kill -9`` included), the OS closes that end, the child
reads end-of-file and stops gently, as on SIGTERM. A pipe rather than Linux's
``PR_SET_PDEATHSIG``: it works on macOS too, and it fires on the parent *process*'s death,
not on the death of the thread that started the child.

Such a process runs its job on uvloop when it is installed (the ``[fast]`` extra): a faster
event loop for the same code (``loop_options``).
"""

from __future__ import annotations

import importlib.util
import os
import signal
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from ..summary import JobSummary
    from .runner import Job


#: Set to ``asyncio`` for the standard event loop even with uvloop installed (to compare).
EVENT_LOOP_VARIABLE = "BATCHCLASSIFY_EVENT_LOOP"


def loop_options() -> dict[str, bool]:
    """anyio's ``backend_options`` for a process that runs one job: uvloop when installed,
    unless ``BATCHCLASSIFY_EVENT_LOOP=asyncio``."""
    if os.environ.get(EVENT_LOOP_VARIABLE, "").strip().lower() == "asyncio":
        return {"use_uvloop": False}
    return {"use_uvloop": importlib.util.find_spec("uvloop") is not None}


async def run_until_signalled(
    job: Job, *, parent_pipe: int | None = None
) -> tuple[JobSummary, int | None]:
    """Run the job; returns its summary and the first signal that stopped it, if any.

    ``parent_pipe``: a file descriptor whose end-of-file means the parent is gone; the job
    then stops gently (no signal is returned for it: ``summary.interrupted`` says it).
    """
    received: list[int] = []
    failure: Exception | None = None
    async with anyio.create_task_group() as group:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    received.append(signum)
                    job.request_stop()

        group.start_soon(watch_signals)
        if parent_pipe is not None:
            group.start_soon(_watch_parent, job, parent_pipe)
        try:
            summary = await job.run()
        except Exception as exc:  # re-raised below, bare rather than in an ExceptionGroup
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return summary, (received[0] if received else None)


async def _watch_parent(job: Job, fd: int) -> None:
    """Stop the job gently once ``fd`` reaches end-of-file (its writer, the parent, is gone)."""
    while True:
        await anyio.wait_readable(fd)
        try:
            if not os.read(fd, 4096):
                break
        except BlockingIOError:
            continue
        except OSError:
            break  # the pipe is broken: the parent is gone just the same
    job.request_stop()
