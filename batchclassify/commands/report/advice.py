"""What to do about each kind of failed row, keyed by the row's ``error_type``."""

from __future__ import annotations

#: One sentence per ``ErrorType`` value (a test checks that none is missing).
ADVICE: dict[str, str] = {
    "missing_file": "The file vanished or is a broken symlink: restore it or fix the path, "
    "then rerun with --retry-failed.",
    "unreadable": "Permission denied or an I/O error: fix the file's permissions or the "
    "mount, then rerun with --retry-failed.",
    "empty_file": "The file has 0 bytes (an interrupted copy?): copy it again or drop it.",
    "too_large": "Over the API's size limit: rerun with --retry-failed --max-size 2048.",
    "bad_image": "The server could not decode it: open the file to check it is an image; "
    "re-encode or drop it.",
    "bad_manifest_row": "A malformed manifest line or an empty path: fix the manifest row, "
    "then rerun.",
    "http_error": "The server refused this image (see the row's http_status and error): "
    "fix what the message says, then rerun with --retry-failed.",
    "bad_response": "The server answered something that is not a classification: check "
    "--api-url and --model.",
    "server_error": "The API kept failing (5xx) after the retries: rerun with "
    "--retry-failed later.",
    "rate_limited": "Still refused (429) after the retries: rerun with --retry-failed and a "
    "lower --rate-limit or --concurrency.",
    "timeout": "No answer within --timeout after the retries: rerun with --retry-failed, "
    "perhaps with a longer --timeout or --max-size to send smaller images.",
    "connection": "The connection failed after the retries: check the network, then rerun "
    "with --retry-failed.",
    "bad_input": "The Ray Data row has no image: give it a bytes, path or url column.",
    "fatal": "The API refused the job: fix the key, model or credits, then classify these "
    "rows again.",
    "internal": "An unexpected error: classify these rows again, and report it if it persists.",
}

FALLBACK = "See the 'error' column of these rows; rerun with --retry-failed once fixed."


def advice(error_type: str) -> str:
    """A sentence saying what to do about rows that failed with ``error_type`` (an
    ``ErrorType`` value; anything else, from an output of another version, gets ``FALLBACK``)."""
    return ADVICE.get(error_type, FALLBACK)
