"""Client CPU per image: batchclassify against the lean and the floor clients (issue 25).

    python benchmarks/cpu_bench.py [--items 10000] [--concurrency 8,32,128] [--repeats 3]
        [--images small,medium] [--clients batchclassify,batchclassify:asyncio,lean,floor]
        [--url-items 50000]

Each client is its own process, unpinned (as users run it), against the local server in
another process (``--model-cost hash``: answers from a checksum of the bytes, so the server
costs little). CPU is user + system seconds of the client process (``os.wait4``), so it
holds on a busy machine far better than wall time. Per image = (CPU over ``--items`` images
- CPU over one image) / (items - 1): interpreter start, imports and the first connection
drop out. The clients run interleaved, in an order rotated every repeat, and each ratio is
taken within a repeat (paired), so a slow minute of the machine hits both sides.

Clients: ``batchclassify`` (the CLI as installed: uvloop when the ``[fast]`` extra is),
``batchclassify:asyncio`` (the same with ``BATCHCLASSIFY_EVENT_LOOP=asyncio``),
``batchclassify@DIR`` (the CLI of another checkout: old against new), ``batchclassify:trim``
(glibc told not to trim its heap: ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``), ``lean``
(``lean_client.py``: aiohttp, N in flight, rows written) and ``floor`` (``floor_client.py``:
an asyncio protocol, keep-alive, read, pybase64, post; no JSON, no rows).

Images: ``small`` (640x480, ~50 KB) and ``medium`` (1024x768, ~130 KiB), 2,000 files each,
hardlinked into as many distinct paths as ``--items``. ``--url-items N`` adds a run over N
URL items (the server fetches 48 tiny JPEGs from its own ``/_files/`` route) and reports
items per client CPU second: the rate one client core could sustain.
Writes ``data/cpu/results.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import clients
import datagen
import orjson
from harness import ROOT, Server, run_client

DATA = ROOT / "data"
OUT = DATA / "cpu"


def _env_for(name: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("BATCHCLASSIFY_EVENT_LOOP", None)
    if name.endswith(":asyncio"):
        env["BATCHCLASSIFY_EVENT_LOOP"] = "asyncio"
    if name.endswith(":uvloop"):
        env["FLOOR_LOOP"] = "uvloop"
    if name.endswith(":trim"):  # glibc keeps freed memory instead of trimming the heap
        env["MALLOC_TRIM_THRESHOLD_"] = str(128 << 20)
        env["MALLOC_TOP_PAD_"] = str(32 << 20)
    return env


def _command(name: str, manifest: Path, url: str, output: Path, concurrency: int) -> list[str]:
    base = name.split(":", 1)[0]
    if base == "floor":
        output.unlink(missing_ok=True)
        args = [str(manifest), url, clients.MODEL, str(output), str(concurrency), clients.API_KEY]
        return [sys.executable, str(ROOT / "floor_client.py"), *args]
    return clients.command(base, manifest=manifest, url=url, output=output, concurrency=concurrency)


def _ok_count(name: str, output: Path) -> int:
    if not output.exists():
        return 0
    if name.startswith("floor"):
        return int(orjson.loads(output.read_bytes()).get("200", 0))
    with open(output, "rb") as handle:
        return sum(1 for line in handle if b'"status":"ok"' in line)


def _cpu(name: str, manifest: Path, url: str, concurrency: int, tag: str) -> tuple[float, int]:
    output = OUT / f"{tag}.jsonl"
    cmd = _command(name, manifest, url, output, concurrency)
    result = run_client(cmd, output=None, cpu=None, log=OUT / f"{tag}.log", env=_env_for(name))
    if result.exit_code != 0:
        raise RuntimeError(f"{name} exited {result.exit_code}; see {OUT / (tag + '.log')}")
    return result.cpu, _ok_count(name, output)


def measure(
    names: list[str], many: Path, one: Path, items: int, url: str, concurrency: int, repeats: int
) -> dict[str, list[float]]:
    """Client CPU ms per image for each client, one figure per repeat (rotated order)."""
    per_image: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            tag = f"{name.replace('/', '_').replace(':', '-')}-c{concurrency}"
            cpu_one, _ = _cpu(name, one, url, concurrency, tag + "-one")
            cpu_many, ok = _cpu(name, many, url, concurrency, tag + "-many")
            if ok != items:
                raise RuntimeError(f"{name}: {ok} of {items} answers ok")
            per_image[name].append((cpu_many - cpu_one) / (items - 1) * 1000)
    return per_image


def _ratios(a: list[float], b: list[float]) -> str:
    pairs = sorted(x / y for x, y in zip(a, b, strict=True))
    return f"{statistics.median(pairs):.2f}× ({pairs[0]:.2f}–{pairs[-1]:.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", default="8,32,128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", default="small,medium")
    parser.add_argument("--clients", default="batchclassify,batchclassify:asyncio,lean,floor")
    parser.add_argument("--url-items", type=int, default=0)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    names = args.clients.split(",")
    results: dict[str, object] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": os.getloadavg()[0],
        "items": args.items,
        "runs": [],
    }
    runs: list[dict[str, object]] = results["runs"]  # type: ignore[assignment]
    with Server(
        ["--model-cost", "hash", "--files-dir", str(DATA / "tiny")],
        cpu=None,
        log=OUT / "server.log",
    ) as server:
        for kind in [k for k in args.images.split(",") if k]:
            originals = datagen.ensure_images(
                DATA / kind, 2000, large=False, medium=kind == "medium"
            )
            paths = clients.hardlinked_copies(originals, args.items, DATA / f"copies-{kind}")
            many = clients.write_manifest(OUT / f"{kind}-many.txt", [str(p) for p in paths])
            one = clients.write_manifest(OUT / f"{kind}-one.txt", [str(paths[0])])
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                per = measure(names, many, one, args.items, server.url, concurrency, args.repeats)
                runs.append({"images": kind, "concurrency": concurrency, "ms_per_image": per})
                _print(kind, concurrency, per)
        if args.url_items:
            tiny = [p.name for p in datagen.ensure_tiny(DATA / "tiny", 48)]
            many = OUT / "urls-many.txt"
            datagen.write_url_manifest(many, f"{server.url}/_files", tiny, args.url_items)
            one = OUT / "urls-one.txt"
            datagen.write_url_manifest(one, f"{server.url}/_files", tiny, 1)
            for concurrency in (32,):
                per = measure(
                    names, many, one, args.url_items, server.url, concurrency, args.repeats
                )
                runs.append({"images": "url", "concurrency": concurrency, "ms_per_image": per})
                _print("url", concurrency, per)
    results["load_after"] = os.getloadavg()[0]
    (OUT / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


def _print(kind: str, concurrency: int, per: dict[str, list[float]]) -> None:
    cells = [
        f"{name} {statistics.median(v):.3f} ({min(v):.3f}–{max(v):.3f})" for name, v in per.items()
    ]
    line = f"{kind} c={concurrency}: ms/image " + ", ".join(cells)
    for base in ("lean", "floor"):
        for name in per:
            if name.startswith("batchclassify") and base in per:
                line += f"\n    {name} / {base}: {_ratios(per[name], per[base])}"
    if kind == "url":
        line += "\n    items per client CPU second: " + ", ".join(
            f"{name} {1000 / statistics.median(v):,.0f}" for name, v in per.items()
        )
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
