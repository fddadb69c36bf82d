"""The connect timeout's default is one rule in ``HttpConfig`` (``connect_seconds``): the
library, ``run`` and ``--processes`` children stop alike at an address that never accepts."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchclassify import HttpConfig, JobConfig, OutageConfig, classify
from batchclassify.config import DEFAULT_CONNECT_TIMEOUT
from batchclassify.errors import StopCause, UsageError

from .conftest import KEY, make_images, read_rows


def test_the_connect_timeout_defaults_under_the_request_timeout() -> None:
    assert HttpConfig().connect_seconds == DEFAULT_CONNECT_TIMEOUT  # 60 s requests
    assert HttpConfig(timeout=4).connect_seconds == 2  # half: told from a slow answer
    assert HttpConfig(timeout=4, connect_timeout=3).connect_seconds == 3  # as given
    assert HttpConfig(timeout=4, connect_timeout=30).connect_seconds == 4  # never past timeout
    with pytest.raises(UsageError, match=r"http\.connect_timeout"):
        HttpConfig(connect_timeout=0)


@contextlib.contextmanager
def never_accepting() -> Iterator[str]:
    """A listening socket whose accept queue is full and never drained: further connections
    are left unanswered, as behind a firewall that drops them. Yields its URL."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            yield f"http://127.0.0.1:{port}"
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.slow
def test_the_library_stops_at_an_address_that_never_accepts_as_the_cli_does(
    tmp_path: Path,
) -> None:
    # Before: the library's connect timeout (10 s) outlasted a 2 s request, so each request
    # ended as a plain timeout and the job sat out max_outage as an outage.
    make_images(tmp_path / "in", 4)
    output = tmp_path / "out.jsonl"
    with never_accepting() as api_url:
        summary = classify(
            JobConfig(
                sources=tmp_path / "in",
                model="colors/1",
                output=output,
                http=HttpConfig(api_url=api_url, api_key=KEY, timeout=2),
                outage=OutageConfig(max_outage=15),
            )
        )
    assert summary.stop_cause is StopCause.UNREACHABLE, summary.stopped_by
    assert f"cannot reach the API at {api_url} " in str(summary.stopped_by)
    assert "the connection was not accepted within 1 s" in str(summary.stopped_by)
    assert not output.exists() or read_rows(output) == []
