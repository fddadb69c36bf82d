"""One malloc arena for every thread (glibc), so image buffers freed in one are reused by all.

glibc's malloc gives each thread that allocates its own arena (up to 8 per core), and a
chunk freed goes back to the arena it came from. Reads of big files run in worker threads
(``fileread.py``): each ~6 MB base64 body is allocated in its reading thread's arena and,
once its request is sent, freed there, where only reads that happen to run on that thread
reuse it; past glibc's dynamic mmap threshold (raised to the size of the first big buffer
freed) such chunks are not given back to the system either. Every reading thread thus kept a
few bodies' worth of memory: 4000×3000 JPEGs at ``-c 8`` peaked at 150–186 MB of RSS,
against 104–115 MB with one arena and 106–114 MB for the lean benchmark client, which reads
on its event loop (benchmarks/RESULTS.md, *memrate*). With ``M_ARENA_MAX`` at 1 every thread
allocates from the main arena and any read reuses any freed body. The threads allocate
while holding the GIL, so sharing one arena's lock costs nothing measurable (client CPU was
unchanged); unlike a lower mmap threshold, which would return each body to the system and
fault it in afresh (+70% CPU per image, measured).

The setting is process-wide and lasts (glibc reads it when a thread first needs an arena),
like the open-file limit ``fdlimit.py`` raises, so a job applies it when it starts, before
it starts a thread; threads that already have an arena keep it. A no-op off glibc and when
the user chose a limit (``MALLOC_ARENA_MAX``, ``glibc.malloc.arena_max``).
"""

from __future__ import annotations

import os

#: glibc's ``mallopt`` parameter for the most arenas (malloc.h).
M_ARENA_MAX = -8


def limit_malloc_arenas() -> bool:
    """Make threads that allocate from now on share the main arena; ``True`` if glibc took
    the setting, ``False`` where it does not apply."""
    if "MALLOC_ARENA_MAX" in os.environ or "arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
    except (AttributeError, ValueError, OSError):  # not glibc (musl, macOS, Windows)
        return False
    import ctypes  # here: ~3 ms of import that `import batchclassify` does not pay

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, 1) == 1)
