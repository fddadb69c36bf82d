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
``InputReport``; rows' ``ErrorType``), the progress listener they accept, the HTTP
``Transport`` a ``Job`` may be given (and the ``Response`` it returns), and the errors they
raise or report. The rest of the package is internal and may change.
"""

from __future__ import annotations

from .client import Response, Transport
from .config import HttpConfig, JobConfig, OutageConfig, RateConfig, RetryConfig
from .error_types import ErrorType
from .errors import (
    ApiUnreachableError,
    BatchClassifyError,
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
from .runner import Job, classify, run_job
from .shards import Shard, parse_shard
from .summary import InputReport, JobSummary, ProgressListener, SilentProgress
from .version import __version__

__all__ = [
    "ApiUnreachableError",
    "BatchClassifyError",
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
    "__version__",
    "classify",
    "parse_shard",
    "run_job",
]
