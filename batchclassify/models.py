"""The data that flows through a job: input items, parsed predictions and output rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from .error_types import ErrorType
from .errors import ItemError
from .names import as_text

#: Output columns, in order. Manifest metadata columns follow them.
ROW_FIELDS: tuple[str, ...] = (
    "id",
    "path",
    "url",
    "status",
    "top",
    "confidence",
    "predicted_classes",
    "predictions",
    "multilabel",
    "image_width",
    "image_height",
    "inference_id",
    "attempts",
    "http_status",
    "error_type",
    "error",
    "elapsed_ms",
    # Where the answer came from and what it cost (cache.py, cost.py); outputs written before
    # these columns existed lack them, and are still read and resumed.
    "cached",
    "cached_from",
    "server_ms",
    "cold_start",
    "credits",
)
#: The columns every output batchclassify ever wrote has: what marks a row (or part) as ours.
CORE_ROW_FIELDS: tuple[str, ...] = ROW_FIELDS[: ROW_FIELDS.index("elapsed_ms") + 1]
#: What an answer consists of, kept in the answer cache and copied into a cached row.
ANSWER_FIELDS: tuple[str, ...] = ROW_FIELDS[
    ROW_FIELDS.index("top") : ROW_FIELDS.index("inference_id") + 1
]
_RESERVED = frozenset(ROW_FIELDS)
#: A row with every column empty: each row starts as a copy (cheaper than building one).
_EMPTY_ROW: dict[str, Any] = dict.fromkeys(ROW_FIELDS)


#: Whether the job wants the item of an id (the producer's ``Screen``: not done before, not a
#: duplicate, in its shard). The sources ask it as soon as an id is known, before they build
#: anything else for the item.
Keep = Callable[[str], bool]


def keep_all(item_id: str) -> bool:
    """The ``Keep`` of a walk that screens nothing out."""
    return True


@dataclass(slots=True)
class Item:
    """One thing to classify: a local file or a URL, with the id used for resume and dedup.

    ``problem`` is set when the source itself was faulty for this item (a malformed manifest
    row, an empty path): the item gets an error row without any request being made, with
    ``problem_kind`` as its ``error_type``.
    ``problem_group`` names the kind of problem without the row's particulars (manifest rows:
    ``"<manifest>: <problem>"``) and ``problem_at`` where it is (``"line 12"``), so the summary
    lists each kind once with a few places instead of one entry per line.

    ``id`` is what resume and de-duplication go by (see ``sources`` for how it is made);
    ``path`` is the file as the user spelled it.

    Never changed once made. Not ``frozen``: a frozen dataclass sets each field through
    ``object.__setattr__``, a measurable cost for an object made once per image (as are
    ``Prediction`` and ``EncodedImage``).
    """

    id: str
    path: str | None = None
    url: str | None = None
    metadata: dict[str, Any] | None = None
    problem: str | None = None
    problem_kind: ErrorType = ErrorType.BAD_MANIFEST_ROW
    problem_group: str | None = None
    problem_at: str | None = None


class Prediction(NamedTuple):
    """A 200 answer, normalised to one shape for single- and multi-label models.

    A named tuple: ``parse_prediction`` builds it with ``tuple.__new__`` (no Python-level
    ``__init__`` per answer); ``_replace`` makes a changed copy."""

    multilabel: bool
    top: str | None
    confidence: float | None
    predictions: list[dict[str, Any]]
    predicted_classes: list[str]
    image_width: int | None
    image_height: int | None
    inference_id: str | None
    server_ms: float | None = None
    """The server's processing time (its ``X-Processing-Time`` header), if it said."""
    cold_start: bool | None = None
    """The server loaded the model for this request (``X-Model-Cold-Start``), if it said."""
    credits: float | None = None
    """What the request cost under the endpoint's billing rule (``cost.py``); ``None``: the
    server reported no processing time for a rule that bills by it."""


_new_tuple = tuple.__new__


def _as_int(value: Any) -> int | None:
    if type(value) is int:  # the usual case first: one check
        return value
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_float(value: Any) -> float | None:
    if type(value) is float:  # the usual case first: one check
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _as_str(value: Any) -> str | None:
    return value if type(value) is str or isinstance(value, str) else None


def _by_confidence(prediction: dict[str, Any]) -> float:
    return -prediction["confidence"]  # type: ignore[no-any-return]


def parse_prediction(
    body: Any,
    *,
    server_ms: float | None = None,
    cold_start: bool | None = None,
    credits: float | None = None,
) -> Prediction:
    """Normalise a classification answer; raise ``ItemError`` for a body of another shape.

    The shape of ``predictions`` tells the model kind: a list for single-label, an object keyed
    by class for multi-label. Every other field is optional, as servers differ. ``server_ms``
    and ``cold_start``: what the answer's headers said it cost; ``credits``: its price under
    the endpoint's rule (``cost.py``).

    Runs once per answer: each check tries the type a JSON parser gives first.
    """
    if not isinstance(body, dict) or "predictions" not in body:
        raise ItemError(
            "server answered 200 without 'predictions': not a classification model's answer",
            kind=ErrorType.BAD_RESPONSE,
        )
    raw = body["predictions"]
    image = body.get("image")
    if type(image) is dict or isinstance(image, dict):
        width, height = image.get("width"), image.get("height")
        if type(width) is not int:
            width = _as_int(width)
        if type(height) is not int:
            height = _as_int(height)
    else:
        width = height = None
    inference_id = body.get("inference_id")
    if type(inference_id) is not str:
        inference_id = _as_str(inference_id)
    multilabel = False
    if type(raw) is list or isinstance(raw, list):
        predictions = _single_label_predictions(raw)
        top = body.get("top")
        if type(top) is not str:
            top = _as_str(top)
        if top is None:
            top = predictions[0]["class"] if predictions else None
        top = top or None  # the server sends "" when no class passes the threshold
        confidence = body.get("confidence")
        if type(confidence) is not float:
            confidence = _as_float(confidence)
        if confidence is None and predictions:
            confidence = predictions[0]["confidence"]
        if top is None:
            confidence = None
        predicted = [top] if top else []
    elif isinstance(raw, dict):
        multilabel = True
        predictions = _multi_label_predictions(raw)
        chosen = body.get("predicted_classes")
        predicted = [c for c in chosen if isinstance(c, str)] if isinstance(chosen, list) else []
        best = predictions[0] if predictions else None
        top = best["class"] if best else None
        confidence = best["confidence"] if best else None
    else:
        raise ItemError(
            "server answered 200 with 'predictions' that is neither a list nor an object",
            kind=ErrorType.BAD_RESPONSE,
        )
    return _new_tuple(
        Prediction,
        (
            multilabel,
            top,
            confidence,
            predictions,
            predicted,
            width,
            height,
            inference_id,
            server_ms,
            cold_start,
            credits,
        ),
    )


def _single_label_predictions(raw: list[Any]) -> list[dict[str, Any]]:
    """``[{"class", "confidence"}, ...]`` entries, best first; malformed entries left out."""
    predictions: list[dict[str, Any]] = []
    for entry in raw:
        if type(entry) is dict or isinstance(entry, dict):
            name = entry.get("class")
            if type(name) is str or isinstance(name, str):
                conf = entry.get("confidence")
                if type(conf) is not float:
                    conf = _as_float(conf)
                predictions.append({"class": name, "confidence": conf or 0.0})
    predictions.sort(key=_by_confidence)
    return predictions


def _multi_label_predictions(raw: dict[Any, Any]) -> list[dict[str, Any]]:
    """``{class: {"confidence"}, ...}`` as ``[{"class", "confidence"}, ...]``, best first."""
    predictions: list[dict[str, Any]] = []
    for name, entry in raw.items():
        conf = _as_float(entry.get("confidence")) if isinstance(entry, dict) else None
        predictions.append({"class": str(name), "confidence": conf or 0.0})
    predictions.sort(key=_by_confidence)
    return predictions


class ContradictoryRowError(AssertionError):
    """A bug: a row that contradicts itself reached the writer of rows or the answer cache
    (``ok`` without a prediction, a failure without an error type). Never a user's mistake,
    so not a ``BatchClassifyError``: it stops the job with a traceback, in the first test
    that takes the new path, instead of writing a wrong answer that looks right."""


def is_answer(fields: dict[str, Any]) -> bool:
    """Whether ``fields`` (a row, or a cached answer's ``ANSWER_FIELDS``) hold a prediction
    the server made: ``predictions`` a list and ``multilabel`` a bool, as ``ok_row`` always
    writes them. A failed item's row has neither. The one rule for "a real answer": the
    row writer, the answer cache and cached rows all ask it."""
    return type(fields.get("predictions")) is list and type(fields.get("multilabel")) is bool


def row_is_ok(row: dict[str, Any]) -> bool:
    """Whether a row read back from an output is a success: ``status`` ok *and* a real answer
    (``is_answer``). An ``ok`` row with empty answer columns (an older version's cache bug
    wrote some) is a failure: resume retries it, and report, export, diff, status and plan
    count it failed. A row of another writer without the answer columns at all is taken by
    its status, as the resume scan's fast path takes it. The one rule every reader asks."""
    if row.get("status") != "ok":
        return False
    return "predictions" not in row or is_answer(row)


def check_row(row: dict[str, Any]) -> None:
    """Refuse (``ContradictoryRowError``) a row that contradicts itself: ``ok`` without a
    prediction, or not ``ok`` without an error type. Called for every row written."""
    if row["status"] == "ok":
        if not is_answer(row):
            raise ContradictoryRowError(
                f"row {row['id']!r} is 'ok' without a prediction (predictions="
                f"{row.get('predictions')!r}, cached={row.get('cached')!r}): not written"
            )
    elif row.get("error_type") is None:
        raise ContradictoryRowError(
            f"row {row['id']!r} has status {row['status']!r} but no error type: not written"
        )


def _base_row(item: Item, status: str) -> dict[str, Any]:
    row = _EMPTY_ROW.copy()
    row["id"] = item.id
    # Non-UTF-8 file-name bytes as \xNN, as in ids: JSON cannot hold surrogate escapes.
    row["path"] = None if item.path is None else as_text(item.path)
    row["url"] = item.url
    row["status"] = status
    if item.metadata:
        _add_metadata(row, item.metadata)
    return row


def _add_metadata(row: dict[str, Any], metadata: dict[str, Any]) -> None:
    """A manifest row's other columns, after the row's own (renamed ``meta_*`` if taken)."""
    for key, value in metadata.items():
        row[f"meta_{key}" if key in _RESERVED else key] = value


def ok_row(
    item: Item, prediction: Prediction, *, attempts: int, elapsed_ms: float
) -> dict[str, Any]:
    # One dict display, in ROW_FIELDS order (checked below): the row of every image.
    path = item.path
    row = {
        "id": item.id,
        "path": None if path is None else as_text(path),
        "url": item.url,
        "status": "ok",
        "top": prediction.top,
        "confidence": prediction.confidence,
        "predicted_classes": prediction.predicted_classes,
        "predictions": prediction.predictions,
        "multilabel": prediction.multilabel,
        "image_width": prediction.image_width,
        "image_height": prediction.image_height,
        "inference_id": prediction.inference_id,
        "attempts": attempts,
        "http_status": 200,
        "error_type": None,
        "error": None,
        "elapsed_ms": round(elapsed_ms, 1),
        "cached": False,
        "cached_from": None,
        "server_ms": prediction.server_ms,
        "cold_start": prediction.cold_start,
        "credits": prediction.credits,  # the endpoint rule's price (cost.py), or unknown
    }
    if item.metadata:
        _add_metadata(row, item.metadata)
    return row


def cached_row(
    item: Item,
    answer: dict[str, Any],
    *,
    cached_from: str,
    original_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """An ok row whose answer was not requested for it: from the answer cache, or shared with
    the identical image ``cached_from`` in flight. No request, so no cost.

    ``answer`` must be a real one (``is_answer``): another item's failure is never this
    item's ``ok``."""
    if not is_answer(answer):
        raise ContradictoryRowError(
            f"{item.id!r}: an answer taken from {cached_from!r} holds no prediction"
        )
    row = _base_row(item, "ok")
    for name in ANSWER_FIELDS:
        row[name] = answer.get(name)
    if original_size is not None:  # a downscaled copy was keyed; report the user's image
        row["image_width"], row["image_height"] = original_size
    row["attempts"] = 0
    row["http_status"] = 200
    row["elapsed_ms"] = 0.0
    row["cached"] = True
    row["cached_from"] = cached_from
    return row


def error_row(
    item: Item,
    *,
    error: str,
    error_type: ErrorType,
    attempts: int,
    http_status: int | None = None,
    elapsed_ms: float | None = None,
) -> dict[str, Any]:
    row = _base_row(item, "error")
    row["attempts"] = attempts
    row["http_status"] = http_status
    row["error_type"] = str(error_type)  # a plain str: rows hold no enum objects
    row["error"] = error
    row["elapsed_ms"] = None if elapsed_ms is None else round(elapsed_ms, 1)
    row["cached"] = False
    return row
