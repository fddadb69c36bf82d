"""Fit the job to the process's open-file limit (``ulimit -n``): raise it, or lower concurrency.

Every request in flight holds a socket and every read an open file. macOS starts shells at
``ulimit -n 256``; with ``-c 256`` the job used to run out of file descriptors and record
most images as ``unreadable``. So before a job starts, the soft limit is raised as far as the
job needs and the hard limit allows, and if that is still not enough, concurrency is lowered
to what fits, once, with a message saying so and how to raise the limit.
"""

from __future__ import annotations

import os
from dataclasses import replace

from ..api.transport import CONNECTIONS_PER_WORKER
from ..config import JobConfig

#: File descriptors per unit of --concurrency: the sockets a worker may hold (its request,
#: the spare standing in for it when it is stuck, the copies sent of it) and the file it reads.
PER_WORKER = CONNECTIONS_PER_WORKER + 1
#: Beyond what the process holds already: the output, its journal, the settings file, the
#: event loop's own, libraries opening files on the side.
HEADROOM = 32


def open_descriptors() -> int:
    """File descriptors this process holds now (an estimate where it cannot be counted)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder))
        except OSError:
            continue
    return 16


def fit_open_files(config: JobConfig) -> tuple[JobConfig, str | None]:
    """Raise the soft open-file limit for ``config``'s concurrency where the hard limit allows;
    where it does not, return the config with the concurrency that fits, and a message."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to fit
        return config, None
    concurrency = config.http.concurrency
    base = open_descriptors() + HEADROOM
    needed = base + PER_WORKER * concurrency
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return config, None
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError):
        pass  # e.g. macOS refuses more than OPEN_MAX even under an unlimited hard limit
    if soft >= needed:
        return config, None
    fits = max(1, (soft - base) // PER_WORKER)
    message = (
        f"--concurrency {concurrency} lowered to {fits}: the open-file limit (ulimit -n) is "
        f"{soft} and {concurrency} requests in flight need about {needed}; "
        f"raise it (ulimit -n {max(needed, 1024)}) to go faster"
    )
    return replace(config, http=replace(config.http, concurrency=fits)), message
