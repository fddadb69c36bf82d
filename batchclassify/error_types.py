"""``ErrorType``: the values of a failed row's ``error_type`` column, each with what it means.

The table of ``error_type`` values in docs/output.md, the report's advice and the code that
writes rows all use this one enumeration (a test checks the table against it). The column is a
plain string (in JSONL and in the Parquet schema), so outputs written by older versions, and
readers that know nothing of this enum, keep working.
"""

from __future__ import annotations

from enum import StrEnum

from .documented import documented_member


class ErrorType(StrEnum):
    """What went wrong with one item; ``doc`` says it in a sentence (the docs' wording)."""

    doc: str

    def __new__(cls, value: str, doc: str) -> ErrorType:
        return documented_member(cls, str.__new__, value, doc)

    MISSING_FILE = "missing_file", "the file vanished since it was listed, or is a broken symlink"
    UNREADABLE = "unreadable", "the file cannot be read: permissions, an I/O error, a folder"
    EMPTY_FILE = "empty_file", "the file has 0 bytes"
    TOO_LARGE = "too_large", "over the upload limit (20 MB encoded): use `--max-size`"
    BAD_IMAGE = "bad_image", (
        "the server could not decode it (HTTP 400, its message is kept); or, with `--max-size`, "
        "the file is not an image Pillow reads (a HEIC photo, a text file) or is cut short"
    )
    BAD_MANIFEST_ROW = "bad_manifest_row", "a malformed CSV or JSON line, or an empty path"
    BAD_RESPONSE = "bad_response", "the server answered something that is not a classification"
    HTTP_ERROR = "http_error", (
        "the server refused this image with another 4xx status (the row's `http_status`)"
    )
    SERVER_ERROR = "server_error", "5xx answers until the retries ran out"
    RATE_LIMITED = "rate_limited", "429 answers until the retries ran out"
    TIMEOUT = "timeout", (
        "no answer within `--timeout` (or a stuck connection) until the retries ran out"
    )
    CONNECTION = "connection", "the connection failed or was dropped until the retries ran out"
    BAD_INPUT = "bad_input", (
        "Ray Data: the input row has no image (no `bytes`, `path` or `url` value), or its "
        "`bytes` column holds something else"
    )
    FATAL = "fatal", (
        "Ray Data: the API refused the job (key, model, credits), on this row or an earlier "
        "one of the same actor, which then sends no more requests"
    )
    INTERNAL = "internal", "Ray Data: an unexpected error with this row (please report it)"
