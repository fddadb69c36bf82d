"""Which plain reader calls read a Parquet output folder (e.g. a ``run --processes`` one).

    PYTHONPATH=. python benchmarks/plain_reads.py FOLDER [FOLDER ...]

Prints a Markdown table: for each reader call, the rows it read from each folder, or the
start of its error. Not a test: the installed pyarrow, pandas, polars and DuckDB decide.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any


def calls(folder: str) -> dict[str, Callable[[], Any]]:
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    glob = f"{folder}/**/*.parquet"
    return {
        "pyarrow.parquet.read_table(F)": lambda: pq.read_table(folder).num_rows,
        'pyarrow.dataset.dataset(F, format="parquet")': lambda: ds.dataset(
            folder, format="parquet"
        ).count_rows(),
        "pandas.read_parquet(F)": lambda: len(pd.read_parquet(folder)),
        'polars.read_parquet("F/**/*.parquet")': lambda: pl.read_parquet(glob).height,
        "polars.read_parquet(F)": lambda: pl.read_parquet(folder).height,
        "duckdb read_parquet('F/**/*.parquet')": lambda: duckdb.sql(
            f"select count(*) from read_parquet('{glob}')"
        ).fetchall()[0][0],
        "duckdb read_parquet('F')": lambda: duckdb.sql(
            f"select count(*) from read_parquet('{folder}')"
        ).fetchall()[0][0],
    }


def attempt(call: Callable[[], Any]) -> str:
    try:
        return str(call())
    except Exception as exc:  # any reader's error is a result here
        return f"error: {type(exc).__name__}: {str(exc)[:60]}"


def main(folders: list[str]) -> None:
    warnings.simplefilter("ignore")
    results = {
        folder: {name: attempt(call) for name, call in calls(folder).items()} for folder in folders
    }
    print("| call | " + " | ".join(folders) + " |")
    print("|---|" + "---|" * len(folders))
    for name in calls(folders[0]):
        print(f"| `{name}` | " + " | ".join(results[f][name] for f in folders) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
