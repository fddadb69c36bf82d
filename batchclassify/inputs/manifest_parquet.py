"""Parquet manifests: record batches to ``Item``s, as ``manifests`` does for text manifests."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from typing import Any

from ..errors import UsageError
from ..models import Item, Keep, keep_all
from ..names import LocalIds, as_text
from .manifests import Manifest, csv_columns

_PARQUET_BATCH_ROWS = 8192


def _import_parquet(name: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(
            f"{name}: reading Parquet manifests needs pyarrow: pip install 'batchclassify[parquet]'"
        ) from None
    return pq


def parquet_columns(source: str) -> tuple[int | None, int | None, int | None]:
    """Open only the footer; ``UsageError`` if unreadable or without a path/url column."""
    name = as_text(source)
    pq = _import_parquet(name)
    import pyarrow as pa

    try:
        with open(source, "rb") as handle:
            names = pq.ParquetFile(handle).schema_arrow.names
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise UsageError(
            f"{name}: cannot read this Parquet file ({exc}); check it was written completely"
        ) from None
    return csv_columns(name, names)


def parquet_items(source: str, ids: LocalIds, keep: Keep = keep_all) -> Iterator[Item | None]:
    manifest = Manifest(source, ids, keep)
    pq = _import_parquet(manifest.name)
    path_col, url_col, id_col = parquet_columns(source)
    import pyarrow as pa

    number = 0
    with open(source, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        names = parquet.schema_arrow.names
        meta_cols = [i for i, n in enumerate(names) if n and i not in (path_col, url_col, id_col)]
        batches = parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (OSError, ValueError, pa.ArrowException) as exc:
                raise UsageError(
                    f"{manifest.name}: cannot read past row {number} ({exc}); "
                    "check the file is whole"
                ) from None
            rows = batch.num_rows
            paths = _column(batch, path_col, rows)
            urls = _column(batch, url_col, rows)
            id_values = _column(batch, id_col, rows)
            meta = [(names[i], _meta_values(batch.column(i))) for i in meta_cols]
            for row in range(rows):
                number += 1
                try:
                    path, url, ident = _cell(paths[row]), _cell(urls[row]), _cell(id_values[row])
                except TypeError as exc:
                    yield manifest.bad("row", number, str(exc))
                    continue
                if not path and not url:
                    yield manifest.bad(
                        "row", number, "empty path/url value; fill it or drop the row"
                    )
                    continue
                metadata = {key: values[row] for key, values in meta} if meta else None
                yield manifest.item("row", number, path, url, ident, metadata)


def _column(batch: Any, index: int | None, rows: int) -> list[Any]:
    return [None] * rows if index is None else list(batch.column(index).to_pylist())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if type(value) is str:
        return value.strip()
    if type(value) is int:
        return str(value)
    if type(value) is bytes:
        return os.fsdecode(value).strip()
    raise TypeError(f"a {type(value).__name__} where text was expected")


def _meta_values(column: Any) -> list[Any]:
    """A metadata column as JSON-ready Python values (the sinks serialise with orjson)."""
    import pyarrow as pa

    values = column.to_pylist()
    kind = column.type
    plain = (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_null(kind)
    )
    return list(values) if plain else [_jsonable(value) for value in values]


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return str(value)
