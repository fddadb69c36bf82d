"""``batchclassify.__all__`` is exactly what a caller meets: every type in the signatures of the
public functions and in the fields of what they take and return, every error they raise or
report, documented; and nothing internal besides."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any

import batchclassify
from batchclassify import errors

#: What a caller calls, builds or gets back; their signatures and fields are walked.
ENTRY_POINTS: tuple[Any, ...] = (
    batchclassify.classify,
    batchclassify.run_job,
    batchclassify.Job.__init__,
    batchclassify.Job.run,
    batchclassify.Job.request_stop,
    batchclassify.read_results,
    batchclassify.ProgressListener.progress,
)


def _package_types(hint: Any) -> set[type]:
    """The batchclassify classes a type hint mentions (inside unions, generics...)."""
    found: set[type] = set()
    if isinstance(hint, type) and hint.__module__.startswith("batchclassify"):
        found.add(hint)
    for arg in typing.get_args(hint):
        found |= _package_types(arg)
    return found


def _met_types() -> set[type]:
    """Every package class reachable from the entry points through signatures and fields."""
    pending: list[Any] = list(ENTRY_POINTS)
    seen: set[type] = set()
    while pending:
        thing = pending.pop()
        hints = typing.get_type_hints(thing)
        for hint in hints.values():
            for cls in _package_types(hint) - seen:
                seen.add(cls)
                if dataclasses.is_dataclass(cls):
                    pending.append(cls)
    return seen


def test_every_type_a_caller_meets_is_exported() -> None:
    met = _met_types()
    assert {cls.__name__ for cls in met} >= {
        "JobConfig",
        "HttpConfig",
        "RetryConfig",
        "RateConfig",
        "OutageConfig",
        "JobSummary",
        "ProgressListener",
        "Progress",
        "InputReport",
        "JobStopped",
    }
    for cls in met:
        assert cls.__name__ in batchclassify.__all__, cls
        assert getattr(batchclassify, cls.__name__) is cls


def test_every_stop_a_caller_can_meet_is_exported() -> None:
    stops = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.JobStopped)
    ]
    assert len(stops) == 9  # the base and each way a job stops
    for cls in stops:
        assert cls.__name__ in batchclassify.__all__
    causes = {cls.cause for cls in stops if cls is not errors.JobStopped}
    assert causes == set(errors.StopCause) - {errors.StopCause.INTERRUPTED}


def test_item_errors_stay_internal() -> None:
    """An item's failure is a row, never an exception a caller sees."""
    for name in ("ItemError", "RetryableError", "RateLimitedError"):
        assert name not in batchclassify.__all__


def test_every_export_exists_and_is_documented() -> None:
    assert len(set(batchclassify.__all__)) == len(batchclassify.__all__)
    for name in batchclassify.__all__:
        value = getattr(batchclassify, name)
        if name == "__version__":
            assert isinstance(value, str) and value.count(".") == 2
            continue
        assert inspect.getdoc(value), f"{name} has no docstring"


def test_classify_and_run_job_take_the_same_arguments() -> None:
    assert inspect.signature(batchclassify.classify).parameters.keys() == (
        inspect.signature(batchclassify.run_job).parameters.keys()
    )
