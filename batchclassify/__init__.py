"""batchclassify: classify very large image collections through Roboflow's classification API.

The job in one call::

    from batchclassify import JobConfig, HttpConfig, classify
    summary = classify(JobConfig(sources="photos/", model="colors/1",
                                 output="results.jsonl", http=HttpConfig(api_url="local")))
    if summary.stop_cause is StopCause.API_REFUSED: ...

``classify`` runs the job on a worker thread with its own event loop, so it also works where
a loop is already running (a Jupyter notebook). ``run_job`` is the same as a coroutine, for
async code; ``Job`` is one run, for async code that wants ``request_stop()``.

This module exports exactly what a caller meets: the configuration, the functions that run a
job, what they return (``JobSummary`` with its ``StopCause``, ``ExitCode`` and
``InputReport``; rows' ``ErrorType``), the progress listener they accept (and the
``Progress`` snapshots it is shown), the HTTP ``Transport`` a job may be given (and the
``Response`` it returns), the errors they raise or report, and ``read_results``, which reads
an output's rows back (each image's latest). The rest of the package is internal and may
change.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .api.transport import Response, Transport
    from .config import (
        HttpConfig,
        JobConfig,
        OutageConfig,
        RateConfig,
        RetryConfig,
        WatchConfig,
    )
    from .error_types import ErrorType
    from .errors import (
        ApiUnreachableError,
        BatchClassifyError,
        BudgetReachedError,
        CreditsExhaustedError,
        FatalApiError,
        JobStopped,
        OpenFilesError,
        OutageTimeoutError,
        OutputError,
        OutputWriteError,
        StopCause,
        TooManyFailuresError,
        UsageError,
    )
    from .exit_codes import ExitCode
    from .job.runner import Job, classify, run_job
    from .output.reading import read_results
    from .shards import Shard, parse_shard
    from .summary import InputReport, JobSummary, Progress, ProgressListener, SilentProgress

#: Where each name lives. Imported on first use (PEP 562), so that ``import batchclassify``,
#: and with it every command (``batchclassify status``, ``serve``...), does not load the job's
#: modules, aiohttp and anyio until something needs them.
_HOMES = {
    "Response": "api.client",
    "Transport": "api.client",
    "HttpConfig": "config",
    "JobConfig": "config",
    "OutageConfig": "config",
    "RateConfig": "config",
    "WatchConfig": "config",
    "RetryConfig": "config",
    "ErrorType": "error_types",
    "ApiUnreachableError": "errors",
    "BatchClassifyError": "errors",
    "BudgetReachedError": "errors",
    "CreditsExhaustedError": "errors",
    "FatalApiError": "errors",
    "JobStopped": "errors",
    "OpenFilesError": "errors",
    "OutageTimeoutError": "errors",
    "OutputError": "errors",
    "OutputWriteError": "errors",
    "StopCause": "errors",
    "TooManyFailuresError": "errors",
    "UsageError": "errors",
    "ExitCode": "exit_codes",
    "Job": "job.runner",
    "classify": "job.runner",
    "run_job": "job.runner",
    "read_results": "output.reading",
    "Shard": "shards",
    "parse_shard": "shards",
    "InputReport": "summary",
    "JobSummary": "summary",
    "Progress": "summary",
    "ProgressListener": "summary",
    "SilentProgress": "summary",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # once found, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ApiUnreachableError",
    "BatchClassifyError",
    "BudgetReachedError",
    "CreditsExhaustedError",
    "ErrorType",
    "ExitCode",
    "FatalApiError",
    "HttpConfig",
    "InputReport",
    "Job",
    "JobConfig",
    "JobStopped",
    "JobSummary",
    "OpenFilesError",
    "OutageConfig",
    "OutageTimeoutError",
    "OutputError",
    "OutputWriteError",
    "Progress",
    "ProgressListener",
    "RateConfig",
    "Response",
    "RetryConfig",
    "Shard",
    "SilentProgress",
    "StopCause",
    "TooManyFailuresError",
    "Transport",
    "UsageError",
    "WatchConfig",
    "__version__",
    "classify",
    "parse_shard",
    "read_results",
    "run_job",
]
