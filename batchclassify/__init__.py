"""batchclassify: classify very large image collections through Roboflow's classification API.

The job in one call::

    from batchclassify import JobConfig, HttpConfig, classify
    summary = classify(JobConfig(sources="photos/", model="colors/1",
                                 output="results.jsonl", http=HttpConfig(api_url="local")))

``classify`` runs the job on a worker thread with its own event loop, so it also works where
a loop is already running (a Jupyter notebook). ``run_job`` is the same as a coroutine, for
async code.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import HttpConfig, JobConfig, RateConfig, RetryConfig
from .errors import (
    BatchClassifyError,
    FatalApiError,
    ItemError,
    OutputError,
    RetryableError,
    UsageError,
)
from .runner import Job, JobSummary, classify, run_job

__all__ = [
    "BatchClassifyError",
    "FatalApiError",
    "HttpConfig",
    "ItemError",
    "Job",
    "JobConfig",
    "JobSummary",
    "OutputError",
    "RateConfig",
    "RetryConfig",
    "RetryableError",
    "UsageError",
    "__version__",
    "classify",
    "run_job",
]
