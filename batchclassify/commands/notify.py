"""``--notify URL`` and ``--on-finish CMD``: say that the job ended, whatever ended it.

When ``run`` ends (finished, failed items, a fatal stop, out of credits, ``--max-credits``,
Ctrl-C or SIGTERM), the summary goes out as one JSON object: POSTed to ``--notify``'s URL,
signed with HMAC-SHA256 of the body when a secret is given (``--notify-secret`` or
``$BATCHCLASSIFY_NOTIFY_SECRET``), and written to ``--on-finish``'s command's stdin. The
webhook is tried a few times with backoff, all within ``TOTAL_SECONDS``, so an unreachable
receiver delays the exit by seconds, not minutes; a failure is reported, never fatal. Neither
carries the API key: the payload holds none, messages are redacted, and the command's
environment has no ``ROBOFLOW_API_KEY``. ``--notify-every``'s progress calls, on the way,
are ``progresscalls.py``'s.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..api.redaction import redact
from ..errors import UsageError
from ..exit_codes import ExitCode
from ..summary import JobSummary

#: Environment variable holding the webhook's secret (kept out of shell history).
SECRET_ENV = "BATCHCLASSIFY_NOTIFY_SECRET"
SIGNATURE_HEADER = "X-Batchclassify-Signature"
#: The webhook's attempts, and the wall-clock bound on all of them with their waits.
ATTEMPTS = 3
TOTAL_SECONDS = 10.0
_BACKOFF = (0.5, 1.5)
#: Seconds ``--on-finish``'s command may take before it is stopped.
COMMAND_TIMEOUT = 60.0


def add_notify_options(group: Any) -> None:
    """``--notify``, ``--notify-secret`` and ``--on-finish``, for ``run``."""
    group.add_argument(
        "--notify",
        metavar="URL",
        help="when the job ends, for any reason (finished, failed, stopped, out of credits, "
        "--max-credits, Ctrl-C), POST its summary as JSON to URL (a few tries, at most "
        f"{TOTAL_SECONDS:g} s in all; a failure is reported, the exit code stays the job's)",
    )
    group.add_argument(
        "--notify-every",
        metavar="PERCENT",
        type=float,
        help="with --notify, also POST a progress call (event batchclassify.job.progress) "
        "each time another PERCENT of the total is done (10: at 10%%, 20%%, ... 90%%; "
        "the end call says 100%%); never slows the job",
    )
    group.add_argument(
        "--notify-secret",
        metavar="SECRET",
        help=f"sign --notify's body: {SIGNATURE_HEADER}: sha256=HMAC-SHA256(SECRET, body) "
        f"in hex (default: ${SECRET_ENV})",
    )
    group.add_argument(
        "--on-finish",
        metavar="CMD",
        help="when the job ends, run CMD (a shell command) with the summary JSON on stdin",
    )


def payload(summary: JobSummary, code: int, *, api_key: str | None = None) -> dict[str, Any]:
    """The summary as the receiver gets it: state, counts, credits, output, stop cause."""
    state = ExitCode.of_process(code).name.lower()
    fatal = None if summary.fatal is None else redact(summary.fatal, api_key)
    cause = summary.stop_cause
    spent = summary.budget_spent if summary.budget_spent is not None else summary.credits
    return {
        "event": "batchclassify.job.ended",
        "state": state,
        "exit_code": int(code),
        "output": str(summary.output),
        "stop_cause": None if cause is None else str(cause),
        "stopped": fatal,
        "duration_s": round(summary.elapsed, 3),
        "counts": {
            "ok": summary.ok,
            "failed": summary.failed,
            "already_done": summary.already_done,
            "previously_failed": summary.previously_failed,
            "cache_hits": summary.cache_hits,
            "shared": summary.shared,
            "retries": summary.retries,
        },
        "credits": {
            "billing": summary.billing,
            "spent": round(spent, 6),
            "costed_requests": summary.costed,
            "uncosted_requests": summary.uncosted,
            "max_credits": summary.max_credits,
            "left": None
            if summary.max_credits is None
            else round(max(0.0, summary.max_credits - spent), 6),
        },
    }


def sign(body: bytes, secret: str) -> str:
    """The signature header's value: ``sha256=`` and the body's HMAC-SHA256 in hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(
    url: str,
    body: bytes,
    *,
    secret: str | None,
    api_key: str | None,
    attempts: int = ATTEMPTS,
    total_seconds: float = TOTAL_SECONDS,
    attempt_seconds: float = 4.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    give_up: Callable[[], bool] = lambda: False,
) -> tuple[bool, str]:
    """POST ``body`` (signed when there is a secret): ``attempts`` tries with backoff, all
    within ``total_seconds``. Whether it was delivered, and the answer (``HTTP 200``) or the
    last problem (redacted).
    ``give_up`` is asked before each try (the progress calls' sender, when the job ends)."""
    headers = {"Content-Type": "application/json", "User-Agent": "batchclassify"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    deadline = clock() + total_seconds
    problem = "no attempt made"
    for attempt in range(attempts):
        left = deadline - clock()
        if left <= 0.1 or give_up():
            break
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=min(left, attempt_seconds)) as answer:
                return True, f"HTTP {answer.status}"
        except urllib.error.HTTPError as error:
            problem = f"HTTP {error.code}"
            if error.code < 500 and error.code not in (408, 429):
                break  # the receiver refused it: another try would be refused too
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            problem = redact(str(reason), api_key) or type(error).__name__
        if attempt < min(attempts - 1, len(_BACKOFF)):
            wait = min(_BACKOFF[attempt], deadline - clock() - 0.1)
            if wait > 0:
                sleep(wait)
    return False, problem


def shown(url: str) -> str:
    """The URL as messages show it: no query (tokens live there), no user:password@."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


@dataclass(frozen=True, kw_only=True)
class Notifier:
    """Where the end of a job is told; ``tell`` does it and returns what to report."""

    url: str | None = None
    secret: str | None = None
    command: str | None = None
    api_key: str | None = None
    every: float | None = None
    """``--notify-every``: a progress call each time this percent more is done."""
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, api_key: str | None) -> Notifier:
        url = getattr(args, "notify", None)
        if url is not None and not url.startswith(("http://", "https://")):
            raise UsageError(f"--notify: {url!r} is not an http(s) URL")
        every = getattr(args, "notify_every", None)
        if every is not None and url is None:
            raise UsageError("--notify-every: needs --notify URL (where the progress calls go)")
        if every is not None and not 0 < every < 100:
            raise UsageError(f"--notify-every: {every:g} is not a percent between 0 and 100")
        secret = getattr(args, "notify_secret", None) or os.environ.get(SECRET_ENV) or None
        return cls(
            url=url,
            secret=secret,
            command=getattr(args, "on_finish", None),
            api_key=api_key,
            every=every,
        )

    @property
    def wanted(self) -> bool:
        return self.url is not None or self.command is not None

    def tell(self, summary: JobSummary, code: int) -> list[str]:
        """Send the summary; one line per problem (or delivery) to show the user."""
        if not self.wanted:
            return []
        # Redacted whole: no key in a path or a note can reach the receiver either.
        text = orjson.dumps(payload(summary, code, api_key=self.api_key)).decode()
        body = redact(text, self.api_key).encode()
        said = []
        if self.url is not None:
            said.append(self._post(self.url, body))
        if self.command is not None:
            said.append(self._run(self.command, body))
        return said

    def _post(self, url: str, body: bytes) -> str:
        sent, said = post(
            url, body, secret=self.secret, api_key=self.api_key, clock=self.clock, sleep=self.sleep
        )
        if sent:
            return f"notify: summary sent to {shown(url)} ({said})"
        return f"notify: could not send the summary to {shown(url)}: {said}"

    def _run(self, command: str, body: bytes) -> str:
        env = {k: v for k, v in os.environ.items() if k != "ROBOFLOW_API_KEY"}
        try:
            done = subprocess.run(
                command, shell=True, input=body, env=env, timeout=COMMAND_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            return f"--on-finish: the command was stopped after {COMMAND_TIMEOUT:g} s"
        except OSError as error:
            return f"--on-finish: the command could not run: {error.strerror}"
        if done.returncode != 0:
            return f"--on-finish: the command exited with status {done.returncode}"
        return "--on-finish: the command ran"
