"""Start-up cost: imports and a one-image job, old code vs new vs the lean client.

    .venv/bin/python benchmarks/import_bench.py --base /path/to/old/checkout [--runs 7]
        [--from-source] [--callgrind]

Each run, in turn for the base checkout, this checkout and the lean client
(``benchmarks/lean_client.py``): ``python -X importtime -c "import batchclassify.commands.cli,
batchclassify.job.runner, batchclassify.commands.progress"`` (what a run imports before it starts;
the lean client: ``import asyncio, aiohttp, orjson, pybase64``), summed over the top-level
imports, with the number of modules; then a one-image job against the local server (started
once, in a process of its own, from this checkout), whose user+sys CPU comes from
``os.wait4``'s rusage, and the job again under ``-X importtime``: the sum of all its
imports (the base's CLI also imports every command's module) and their number. anyio's
event-loop backend, imported inside ``anyio.run``, does not show in ``-X importtime``.

Bytecode: by default the children write and read ``.pyc`` files under a temporary
``PYTHONPYCACHEPREFIX`` (a warm-up run fills it), as an installed package does; with
``--from-source`` they run with ``PYTHONDONTWRITEBYTECODE=1`` and no cached bytecode for the
checkouts, so every batchclassify module is compiled at each start (how this machine's shell
is set up, and how the earlier figures in RESULTS.md were taken).

``--callgrind``: also count the instructions of the import and of the one-image job once per
variant under ``valgrind --tool=callgrind`` (slow, ~10-30 s each; load does not move it).
Prints min-max (median) per measure. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
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
        process = subprocess.Popen(
            argv, env=env, cwd=env["BENCH_CWD"], stdout=subprocess.DEVNULL, stderr=err
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"{argv} failed ({process.returncode}):\n{text[-2000:]}")
    return usage.ru_utime + usage.ru_stime, text


def _commands(variant: str, work: Path, url: str, index: int) -> tuple[list[str], list[str]]:
    """The import and the one-image job of ``variant``, as argv lists."""
    out = work / f"out-{index}.jsonl"
    if variant == "lean":
        code = "import asyncio, aiohttp, orjson, pybase64"
        job = [HERE / "lean_client.py", work / "one.txt", url, "colors/1", out, "8"]
    else:
        # What a run imports before it starts (the new cli alone defers the job's modules).
        code = "import batchclassify.commands.cli, batchclassify.job.runner, "
        code += "batchclassify.commands.progress"
        job = ["-m", "batchclassify", "run", work / "one", "--model", "colors/1"]
        job += ["--api-url", url, "--output", out, "--quiet", "--no-cache"]
    return [sys.executable, "-c", code], [sys.executable, *map(str, job)]


def _clean(work: Path, index: int) -> None:
    """Remove a job's output, so the next one classifies the image again."""
    out = work / f"out-{index}.jsonl"
    for name in (out, Path(f"{out}.job.json"), Path(f"{out}.progress.json")):
        name.unlink(missing_ok=True)


def _instructions(argv: list[str], env: dict[str, str]) -> float:
    """Instructions executed by ``argv`` (all threads), from callgrind's summary."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        env=env,
        cwd=env["BENCH_CWD"],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Collected : (\d+)", done.stderr)
    if match is None:
        raise SystemExit(f"no instruction count from callgrind:\n{done.stderr[-2000:]}")
    return float(match.group(1))


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
    parser.add_argument("--from-source", action="store_true", help="no cached bytecode")
    parser.add_argument("--callgrind", action="store_true", help="count instructions too")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="import-bench-"))
    (work / "one").mkdir()
    shutil.copy(IMAGE, work / "one" / IMAGE.name)
    (work / "one.txt").write_text(f"{work / 'one' / IMAGE.name}\n")
    skip = ("PYTHONPATH", "BATCHCLASSIFY_CACHE", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    base_env = {k: v for k, v in os.environ.items() if k not in skip}
    base_env["BENCH_CWD"] = str(work)  # the children's working folder
    if args.from_source:
        base_env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        base_env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    envs = {
        "base": {**base_env, "PYTHONPATH": str(args.base.resolve())},
        "new": {**base_env, "PYTHONPATH": str(ROOT)},
    }
    server, url = start_server(envs["new"])
    results: dict[str, dict[str, list[float]]] = {}
    modules: dict[str, set[str]] = {}
    try:
        for index in range(-1, args.runs):  # run -1 warms up (fills the bytecode cache)
            for variant in ("base", "new", "lean"):
                env = envs.get(variant, base_env)
                import_argv, run_argv = _commands(variant, work, url, index)
                done = subprocess.run(
                    [sys.executable, "-X", "importtime", *import_argv[1:]],
                    env=env,
                    cwd=work,  # not this checkout: '' on sys.path would shadow --base
                    capture_output=True,
                    text=True,
                    check=True,
                )
                ms, count, _ = importtime(done.stderr)
                cpu, _ = run_cpu(run_argv, env)
                _clean(work, index)
                _, text = run_cpu([sys.executable, "-X", "importtime", *run_argv[1:]], env)
                _clean(work, index)
                if index < 0:
                    continue
                stats = results.setdefault(variant, {})
                stats.setdefault("import ms", []).append(ms)
                stats.setdefault("import modules", []).append(count)
                stats.setdefault("one-image run CPU s", []).append(cpu)
                ms, count, names = importtime(text)
                stats.setdefault("run: imports ms", []).append(ms)
                stats.setdefault("run modules", []).append(count)
                modules[variant] = names
            print(f"run {index + 1}/{args.runs} done", file=sys.stderr)
            time.sleep(0.2)
        if args.callgrind:
            for variant in ("base", "new", "lean"):
                env = envs.get(variant, base_env)
                import_argv, run_argv = _commands(variant, work, url, 0)
                stats = results[variant]
                stats["import, M instructions"] = [_instructions(import_argv, env) / 1e6]
                stats["run, M instructions"] = [_instructions(run_argv, env) / 1e6]
                _clean(work, 0)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'measure':<22}" + "".join(f"{v:>26}" for v in results))
    for measure in results["base"]:
        cells = []
        for variant in results:
            values = results[variant][measure]
            low, high, median = min(values), max(values), statistics.median(values)
            cells.append(f"{low:.4g}" if low == high else f"{low:.3g}–{high:.3g} ({median:.3g})")
        print(f"{measure:<22}" + "".join(f"{c:>26}" for c in cells))
    print("\nmodules a one-image run imports, base but not new:")
    print(" ".join(sorted(modules["base"] - modules["new"])))
    print("\nnew but not base:", " ".join(sorted(modules["new"] - modules["base"])) or "-")
    print("\nnew but not lean:", " ".join(sorted(modules["new"] - modules["lean"])))


if __name__ == "__main__":
    main()
