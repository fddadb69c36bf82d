"""The resume index's hot calls, timed: ``set_all`` (the resume scan), ``set`` and ``get``.

    PYTHONPATH=<checkout> python benchmarks/idindex_speed.py [--ids 1000000] [--repeat 3]

In one process per checkout (compare two by running it twice): fills an ``IdIndex`` with
``--ids`` ids by ``set_all`` in chunks of 2,000 (as the scan does), first reserved for them
(as the job does) and then not (doubling as it goes); then ``set`` and ``get`` of every id
present, ``get`` of as many absent ids, and ``set`` of new ids into a reserved index, alone
and after a ``get`` (a fresh job's walk). Prints the best of ``--repeat`` in ns per call,
and the index's bytes per id.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from batchclassify.output.idindex import IdIndex

_CHUNK = 2_000


def best(
    repeat: int, calls: int, setup: Callable[[], object], run: Callable[[object], None]
) -> float:
    times = []
    for _ in range(repeat):
        state = setup()
        started = time.perf_counter()
        run(state)
        times.append(time.perf_counter() - started)
    return min(times) / calls * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.ids
    ids = [f"https://images.example/{i % 48}.jpg?n={i}" for i in range(n)]
    absent = [f"https://images.example/{i % 48}.jpg?m={i}" for i in range(n)]
    tags = [1] * _CHUNK
    chunks = [ids[start : start + _CHUNK] for start in range(0, n, _CHUNK)]

    def reserved() -> IdIndex:
        index = IdIndex()
        index.reserve(n)
        return index

    def fill(index: object) -> None:
        assert isinstance(index, IdIndex)
        for chunk in chunks:
            index.set_all(chunk, tags[: len(chunk)])

    def filled() -> IdIndex:
        index = reserved()
        fill(index)
        return index

    def set_each(index: object) -> None:
        assert isinstance(index, IdIndex)
        set_ = index.set
        for item_id in ids:
            set_(item_id, 3)

    def get_each(names: list[str]) -> Callable[[object], None]:
        def run(index: object) -> None:
            assert isinstance(index, IdIndex)
            get = index.get
            for item_id in names:
                get(item_id)

        return run

    def walk_fresh(index: object) -> None:
        assert isinstance(index, IdIndex)
        get, set_ = index.get, index.set
        for item_id in ids:
            if not get(item_id):
                set_(item_id, 3)

    full = filled()
    figures = {
        "set_all, reserved": best(args.repeat, n, reserved, fill),
        "set_all, growing": best(args.repeat, n, IdIndex, fill),
        "set, new ids (reserved)": best(args.repeat, n, reserved, set_each),
        "get+set, new ids (reserved)": best(args.repeat, n, reserved, walk_fresh),
        "set, present ids": best(args.repeat, n, lambda: full, set_each),
        "get, present ids": best(args.repeat, n, lambda: full, get_each(ids)),
        "get, absent ids": best(args.repeat, n, lambda: full, get_each(absent)),
    }
    for name, ns in figures.items():
        print(f"{name:28} {ns:7.0f} ns/call")
    print(f"{'bytes per id (reserved)':28} {full.nbytes / len(full):7.2f}")


if __name__ == "__main__":
    main()
