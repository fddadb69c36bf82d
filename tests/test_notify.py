"""``--notify`` and ``--on-finish``: one signed call per job end, whatever ended it.

A local receiver (aiohttp on 127.0.0.1, port 0, on its own thread) checks each call's
HMAC-SHA256 signature against the body, as a real receiver would, and keeps the payloads.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from batchclassify.commands.notify import SIGNATURE_HEADER, Notifier
from batchclassify.summary import JobSummary

from .conftest import KEY, PYTHON, Cli, MakeServer, make_images, run_args, subprocess_env

SECRET = "whsec-test-0b1d"


class Receiver:
    """A webhook receiver: records each call's payload and whether its signature holds."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.valid: list[bool] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/hook?token=t0ken"

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        self.valid.append(hmac.compare_digest(request.headers.get(SIGNATURE_HEADER, ""), expected))
        self.bodies.append(body)
        self.calls.append(orjson.loads(body))
        return web.json_response({"ok": True})

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    monkeypatch.setenv("BATCHCLASSIFY_NOTIFY_SECRET", SECRET)
    running = Receiver()
    yield running
    running.stop()


def test_a_finished_job_calls_once_signed_without_the_key(
    tmp_path: Path, make_server: MakeServer, cli: Cli, receiver: Receiver
) -> None:
    server = make_server()
    make_images(tmp_path / "in", 5)
    output = tmp_path / "out.jsonl"
    result = cli(*run_args(server, output, tmp_path / "in"), "--notify", receiver.url)

    assert result.code == 0, result.err
    assert receiver.valid == [True]
    call = receiver.calls[0]
    assert call["state"] == "ok" and call["exit_code"] == 0 and call["stop_cause"] is None
    assert call["counts"]["ok"] == 5 and call["output"] == str(output)
    assert call["credits"]["billing"] == "self-hosted"
    assert call["credits"]["spent"] == pytest.approx(5 / 3000, abs=1e-6)
    assert call["duration_s"] >= 0
    assert KEY.encode() not in receiver.bodies[0]
    assert "notify: summary sent to http://127.0.0.1" in result.err
    assert "t0ken" not in result.err  # a URL's query (tokens) is never shown


def test_a_fatal_stop_calls_once_with_its_cause(
    tmp_path: Path, make_server: MakeServer, cli: Cli, receiver: Receiver
) -> None:
    server = make_server()
    make_images(tmp_path / "in", 5)
    args = run_args(server, tmp_path / "out.jsonl", tmp_path / "in", model="no-credits/1")
    copy = "import sys; open(sys.argv[1], 'wb').write(sys.stdin.buffer.read())"
    on_finish = f'{sys.executable} -c "{copy}" {tmp_path / "got.json"}'
    result = cli(*args, "--notify", receiver.url, "--on-finish", on_finish)

    assert result.code == 4
    assert receiver.valid == [True]
    call = receiver.calls[0]
    assert call["state"] == "out_of_credits" and call["stop_cause"] == "credits"
    assert "Not enough credits" in call["stopped"]
    assert orjson.loads((tmp_path / "got.json").read_bytes()) == call  # the same summary
    assert "--on-finish: the command ran" in result.err


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_calls_once_as_interrupted(
    tmp_path: Path, make_server: MakeServer, receiver: Receiver
) -> None:
    server = make_server(latency=0.2)
    make_images(tmp_path / "in", 200)
    output = tmp_path / "out.jsonl"
    args = [*run_args(server, output, tmp_path / "in"), "-c", "2", "--notify", receiver.url]
    process = subprocess.Popen(
        [PYTHON, "-m", "batchclassify", *args],
        env=subprocess_env(BATCHCLASSIFY_NOTIFY_SECRET=SECRET),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while server.stats.requests < 4:
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)

    assert process.returncode == 130, err
    assert receiver.valid == [True]
    assert receiver.calls[0]["state"] == "interrupted"
    assert receiver.calls[0]["stop_cause"] == "interrupted"
    assert 0 < receiver.calls[0]["counts"]["ok"] < 200


def test_an_unreachable_webhook_is_reported_and_the_exit_code_stays_the_jobs(
    tmp_path: Path, make_server: MakeServer, cli: Cli, refusing_port: int
) -> None:
    server = make_server()
    make_images(tmp_path / "in", 3)
    url = f"http://127.0.0.1:{refusing_port}/hook"
    result = cli(*run_args(server, tmp_path / "out.jsonl", tmp_path / "in"), "--notify", url)
    assert result.code == 0, result.err
    assert f"notify: could not send the summary to {url}" in result.err


def test_the_webhooks_retries_are_bounded_in_time(refusing_port: int) -> None:
    """Every attempt refused: three tries, backoff between them, all within ten seconds
    (on a fake clock: the waits are what the notifier asked for, not what a busy machine
    took)."""
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    notifier = Notifier(
        url=f"http://127.0.0.1:{refusing_port}/hook", clock=lambda: now[0], sleep=sleep
    )
    said = notifier.tell(JobSummary(output=Path("out.jsonl")), 0)
    assert said[0].startswith("notify: could not send the summary")
    assert len(waits) == 2 and sum(waits) < 10
