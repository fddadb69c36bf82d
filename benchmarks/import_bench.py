"""Start-up cost: imports and a one-image job, old code vs new vs the lean client.

    .venv/bin/python benchmarks/import_bench.py --base /path/to/old/checkout [--runs 7]

Each run, in turn for the base checkout, this checkout and the lean client
(``benchmarks/lean_client.py``): ``python -X importtime -c "import batchclassify.cli"`` (the
lean client: ``import asyncio, aiohttp, orjson, pybase64``), summed over the top-level
imports, with the number of modules; then a one-image job against the local server (started
once, in a process of its own, from this checkout), whose user+sys CPU comes from
``os.wait4``'s rusage, with the modules it imported (``-X importtime`` of the same job).
Prints min-max per measure. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMAGE = ROOT / "sample_manifests" / "images" / "more" / "red-small.jpg"
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def importtime(stderr: str) -> tuple[float, int, set[str]]:
    """Top-level cumulative ms, module count and names from ``-X importtime`` output."""
    total, names = 0, set()
    for line in stderr.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        names.add(match.group(4))
        if len(match.group(3)) <= 1:  # top level: one space after the bar
            total += int(match.group(2))
    return total / 1000, len(names), names


def run_cpu(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """User+sys CPU seconds of one child process (and its stderr)."""
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"{argv} failed ({process.returncode}):\n{text[-2000:]}")
    return usage.ru_utime + usage.ru_stime, text


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "batchclassify", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    match = re.search(r"http://\S+", line)
    if match is None:
        server.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return server, match.group(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="a checkout of the old code")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="import-bench-"))
    (work / "one").mkdir()
    shutil.copy(IMAGE, work / "one" / IMAGE.name)
    (work / "one.txt").write_text(f"{work / 'one' / IMAGE.name}\n")
    base_env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BATCHCLASSIFY_CACHE")
    }
    envs = {
        "base": {**base_env, "PYTHONPATH": str(args.base.resolve())},
        "new": {**base_env, "PYTHONPATH": str(ROOT)},
    }
    server, url = start_server(envs["new"])
    results: dict[str, dict[str, list[float]]] = {}
    modules: dict[str, set[str]] = {}
    try:
        for index in range(args.runs):
            for variant in ("base", "new", "lean"):
                env = envs.get(variant, base_env)
                stats = results.setdefault(variant, {})
                code = (
                    "import asyncio, aiohttp, orjson, pybase64"
                    if variant == "lean"
                    else "import batchclassify.cli"
                )
                done = subprocess.run(
                    [sys.executable, "-X", "importtime", "-c", code],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                ms, count, _ = importtime(done.stderr)
                stats.setdefault("import ms", []).append(ms)
                stats.setdefault("import modules", []).append(count)
                out = work / f"out-{variant}-{index}.jsonl"
                if variant == "lean":
                    job = [HERE / "lean_client.py", work / "one.txt", url, "colors/1", out, "8"]
                else:
                    job = ["-m", "batchclassify", "run", work / "one", "--model", "colors/1"]
                    job += ["--api-url", url, "--output", out, "--quiet", "--no-cache"]
                argv = [sys.executable, *map(str, job)]
                cpu, _ = run_cpu(argv, env)
                stats.setdefault("one-image run CPU s", []).append(cpu)
                for extra in (".job.json", ".progress.json"):
                    Path(f"{out}{extra}").unlink(missing_ok=True)
                out.unlink(missing_ok=True)
                _, text = run_cpu([sys.executable, "-X", "importtime", *argv[1:]], env)
                _, count, names = importtime(text)
                stats.setdefault("run modules", []).append(count)
                modules[variant] = names
            print(f"run {index + 1}/{args.runs} done", file=sys.stderr)
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'measure':<22}" + "".join(f"{v:>20}" for v in results))
    for measure in results["base"]:
        cells = []
        for variant in results:
            values = results[variant][measure]
            cells.append(f"{min(values):.3g}–{max(values):.3g}")
        print(f"{measure:<22}" + "".join(f"{c:>20}" for c in cells))
    print("\nmodules a one-image run imports, base but not new:")
    print(" ".join(sorted(modules["base"] - modules["new"])))
    print("\nnew but not base:", " ".join(sorted(modules["new"] - modules["base"])) or "-")
    print("\nnew but not lean:", " ".join(sorted(modules["new"] - modules["lean"])))


if __name__ == "__main__":
    main()
