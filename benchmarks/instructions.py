"""Instructions per image (valgrind's callgrind), batchclassify vs the lean client.

    python benchmarks/instructions.py [--items 2000] [--concurrency 8,32,128] [--repeats 1]

CPU seconds on a shared 2-core machine move by ±25% from run to run; the number of
instructions a client executes for the same work barely moves, whatever else runs
(callgrind counts them, it does not time them). Each client runs under callgrind twice per
concurrency, over ``--items`` small images and over one image, against the local server
(hash model, latency 0, not under valgrind); instructions per image is the difference over
``items - 1``, so start-up and imports drop out. Instructions are not cycles (cache misses
and branch mispredictions are not counted), so this complements, not replaces, the CPU
figures of ``run.py``. Under valgrind a client runs ~50x slower, which changes how many
answers each event-loop turn handles; the counts are for the same work, not the same timing.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import clients
import datagen
from harness import ROOT, Server

DATA = ROOT / "data"
OUT = DATA / "instructions"
_TOTAL = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def instructions(cmd: list[str], tag: str) -> int:
    """Total instructions callgrind counted for ``cmd`` (all threads)."""
    out = OUT / f"{tag}.callgrind"
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--quiet"]
    subprocess.run([*valgrind, *cmd], check=True, cwd=ROOT.parent, capture_output=True)
    match = _TOTAL.search(out.read_bytes())
    assert match, f"no totals in {out}"
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--concurrency", default="8,32,128")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--clients", default="batchclassify,lean")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    small = datagen.ensure_images(DATA / "small", 2000, large=False)
    paths = clients.hardlinked_copies(small, args.items, DATA / "copies")
    many = clients.write_manifest(OUT / "many.txt", [str(p) for p in paths])
    one = clients.write_manifest(OUT / "one.txt", [str(paths[0])])
    names = args.clients.split(",")
    with Server(["--model-cost", "hash"], cpu=None, log=OUT / "server.log") as server:
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            per_image: dict[str, list[float]] = {name: [] for name in names}
            for _ in range(args.repeats):
                for name in names:
                    counts = []
                    for manifest, label in ((many, "many"), (one, "one")):
                        cmd = clients.command(
                            name,
                            manifest=manifest,
                            url=server.url,
                            output=OUT / f"{name}-{label}.jsonl",
                            concurrency=concurrency,
                        )
                        if name == "batchclassify":  # reads on the loop, as in a normal run
                            cmd[1:3] = [str(ROOT / "bc_reads_inline.py")]
                        counts.append(instructions(cmd, f"{name}-{label}-c{concurrency}"))
                    per_image[name].append((counts[0] - counts[1]) / (args.items - 1))
            line = ", ".join(
                f"{name} {min(v) / 1000:.0f}–{max(v) / 1000:.0f} k" for name, v in per_image.items()
            )
            ratio = ""
            if "lean" in per_image and "batchclassify" in per_image:
                ratio = f"  ratio {min(per_image['batchclassify']) / min(per_image['lean']):.3f}"
            print(f"c={concurrency}: instructions per image: {line}{ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
