"""Fewer garbage collections while a job runs.

CPython runs a young-generation collection every 700 net allocations of container objects.
A job keeps many such objects alive for a while (each request in flight holds its item,
race, response and the transport's), so each of those collections walks thousands of live
objects to find almost no garbage: at ``--concurrency 128`` against a fast server, 8 µs of
CPU per image (4% of it), twice the lean client's, measured with ``gc.callbacks``. Memory does
not depend on the collector: finished requests are freed by reference counting (no cycle
holds an image body: ``tests/test_request_memory.py``), so collecting a tenth as often only
lets the rare cyclic garbage wait a little longer.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: The young-generation threshold while a job runs (CPython's default is 700).
JOB_THRESHOLD = 10_000


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the young-generation threshold for the block, then put back what was set,
    unless something else changed it meanwhile. A threshold of 0 (collection off) or one
    already higher is left alone."""
    before = gc.get_threshold()
    raised = 0 < before[0] < JOB_THRESHOLD
    if raised:
        gc.set_threshold(JOB_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        if raised and gc.get_threshold()[0] == JOB_THRESHOLD:
            gc.set_threshold(*before)


def prepare_job_process() -> None:
    """For a process that runs one job and nothing else (the command line, a ``--processes``
    child), before the job starts a thread: settings that would be rude to impose on a
    library caller's process.

    * Everything made so far (modules, classes, functions) moves out of the collector's
      sight: full collections walk only what the job makes.
    * On glibc, every thread allocates from one malloc arena (``mallocarena.py``): big image
      bodies read in threads are reused by all instead of kept per thread.
    """
    from .mallocarena import limit_malloc_arenas

    limit_malloc_arenas()
    gc.freeze()  # no collection first: 8 ms of start-up to free a handful of objects
