"""``report --truth`` and ``diff`` on a 1,000,000-row output: time and peak memory (issue 22).

Uses ``report_command.py``'s synthetic single-label output (10 classes, 2% errors; the
JSONL and the same rows as Parquet) and writes a truth CSV of ``id,label`` beside it: the
row's top class for 80% of the ids, another class for 15%, no line for 5% (rows without a
truth). Runs the real CLI in a child process: ``report --truth`` (text), with ``--json`` and
``--write-thresholds``, and ``diff`` of the JSONL against the Parquet (the same rows: every
id is looked up) with ``--truth``. Peak RSS is the child's. Writes its section of
``RESULTS.md`` in place.

    python benchmarks/truth_bench.py            # 1,000,000 rows
    python benchmarks/truth_bench.py --rows 100000
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
from pathlib import Path

import orjson
from report_command import CLASSES, DATA, ROOT, measure, outputs

MARK_START, MARK_END = "<!-- truth-benchmark -->", "<!-- /truth-benchmark -->"


def make_truth(jsonl: Path, truth: Path) -> None:
    rng = random.Random(22)
    with open(jsonl, "rb") as rows, open(truth, "w") as handle:
        handle.write("id,label\n")
        for line in rows:
            row = orjson.loads(line)
            draw = rng.random()
            if draw < 0.05:
                continue
            label = row.get("top") if draw < 0.85 and row.get("top") else rng.choice(CLASSES)
            handle.write(f"{row['id']},{label}\n")


def write_section(lines: list[str]) -> None:
    results = ROOT / "RESULTS.md"
    text = results.read_text()
    section = "\n".join([MARK_START, *lines, MARK_END])
    pattern = re.compile(re.escape(MARK_START) + ".*?" + re.escape(MARK_END), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text + "\n" + section
    results.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    options = parser.parse_args()
    # The outputs are made in a child (see report_command.py: ru_maxrss and fork).
    subprocess.run(
        [sys.executable, str(ROOT / "report_command.py"), "--rows", str(options.rows),
         "--make-only"],
        check=True,
    )  # fmt: skip
    jsonl, parquet = outputs(options.rows, multilabel=False)
    truth = DATA / f"truth-{options.rows}.csv"
    if not truth.exists():
        make_truth(jsonl, truth)
    thresholds = DATA / "thresholds.json"
    thresholds.unlink(missing_ok=True)
    runs = [
        ("jsonl", ["report", str(jsonl), "--truth", str(truth)]),
        ("parquet", ["report", str(parquet), "--truth", str(truth)]),
        ("jsonl", ["report", str(jsonl), "--truth", str(truth), "--json",
                   "--write-thresholds", str(thresholds)]),
        ("jsonl", ["report", str(jsonl)]),
        ("jsonl vs parquet", ["diff", str(jsonl), str(parquet)]),
        ("jsonl vs parquet", ["diff", str(jsonl), str(parquet), "--truth", str(truth)]),
    ]  # fmt: skip
    table = ["| output | command | wall time | peak RSS |", "|---|---|---:|---:|"]
    for kind, args in runs:
        seconds, peak = measure(args)
        shown = " ".join(
            "TRUTH.csv" if a == str(truth) else "T.json" if a == str(thresholds) else a
            for a in args
            if a not in (str(jsonl), str(parquet))
        )
        table.append(f"| {kind} | `{shown}` | {seconds:.1f} s | {peak:.0f} MB |")
        print(table[-1], flush=True)
    write_section(
        [
            f"## `report --truth` and `diff` on a {options.rows:,}-row output (issue 22)",
            "",
            "`python benchmarks/truth_bench.py`: `report_command.py`'s single-label rows (10 "
            "classes, 2% errors) and a truth CSV of `id,label` (80% the top class, 15% "
            "another, 5% of ids absent). The real CLI in a child process; peak RSS is the "
            "child's. `report` without `--truth` for comparison; `diff` joins the JSONL and "
            "the Parquet copy of the same rows (every id found).",
            "",
            *table,
        ]
    )


if __name__ == "__main__":
    main()
