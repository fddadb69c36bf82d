"""Several servers (fleet.py): the choice and health rules on a fake clock, the transport's
URL swap in memory, and a job over three local servers, one stopped and restarted mid-job."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio
import orjson
from yarl import URL

from batchclassify import HttpConfig, JobConfig, OutageConfig, classify
from batchclassify.api.client import Response
from batchclassify.api.fleet import (
    FAILS_TO_TAKE_OUT,
    SILENCE_FLOOR,
    FleetTransport,
    Server,
    ServerPool,
    silence_limit,
)
from batchclassify.commands.status import format_status
from batchclassify.error_types import ErrorType
from batchclassify.errors import RetryableError
from batchclassify.output.progressfile import progress_path
from batchclassify.server import BackgroundServer
from tests.conftest import KEY, CliResult, make_images, read_rows


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NoTransport:
    """A transport the pool never calls (the pool does no I/O)."""

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        raise AssertionError("not sent")

    async def aclose(self) -> None:
        pass


def _pool(count: int, clock: FakeClock, notes: list[str] | None = None) -> ServerPool:
    servers = [Server(f"http://10.0.0.{n}:9001", NoTransport()) for n in range(count)]
    return ServerPool(
        servers,
        probe_initial=1.0,
        probe_max=8.0,
        clock=clock,
        notify=lambda text: notes.append(text) if notes is not None and text else None,
    )


def _refused() -> RetryableError:
    error = RetryableError("cannot connect to 10.0.0.0:9001: refused", kind=ErrorType.CONNECTION)
    error.unreachable = True
    return error


def _timeout() -> RetryableError:
    return RetryableError("no answer from 10.0.0.0:9001 within 60 s", kind=ErrorType.TIMEOUT)


def test_requests_go_to_the_server_with_the_fewest_in_flight() -> None:
    clock = FakeClock()
    pool = _pool(3, clock)
    a, b, c = pool.servers
    assert [pool.pick() for _ in range(3)] == [a, b, c]  # ties: the least recently picked
    pool.answered(b, clock.now, ok=True)
    assert pool.pick() is b  # the only one with a free place
    pool.answered(a, clock.now, ok=True)
    pool.answered(c, clock.now, ok=True)
    assert pool.pick() is a  # a and c idle: a was picked longer ago
    assert pool.pick() is c
    assert [s.in_flight for s in pool.servers] == [1, 1, 1]


def test_a_refused_connection_takes_a_server_out_at_once_and_it_gets_no_requests() -> None:
    clock = FakeClock()
    notes: list[str] = []
    pool = _pool(2, clock, notes)
    a, b = pool.servers
    assert pool.pick() is a
    assert pool.failed(a, _refused()) is True  # out, and b is in: the server's failure
    assert a.is_out and "10.0.0.0:9001 taken out" in notes[-1]
    assert {pool.pick() for _ in range(5)} == {b}


def test_failures_in_a_row_take_a_server_out_answers_in_between_do_not() -> None:
    clock = FakeClock()
    pool = _pool(2, clock)
    a = pool.servers[0]
    for _ in range(FAILS_TO_TAKE_OUT - 1):
        a.in_flight += 1
        assert pool.failed(a, _timeout()) is False
    a.in_flight += 1
    pool.answered(a, clock.now, ok=False)  # a 400 for a bad image: the server is up
    for _ in range(FAILS_TO_TAKE_OUT - 1):
        a.in_flight += 1
        pool.failed(a, _timeout())
    assert not a.is_out
    a.in_flight += 1
    assert pool.failed(a, _timeout()) is True
    assert a.is_out and a.times_out == 1


def test_an_out_server_is_probed_on_a_growing_interval_and_put_back_when_it_answers() -> None:
    clock = FakeClock()
    notes: list[str] = []
    pool = _pool(2, clock, notes)
    a, b = pool.servers
    pool.pick()
    pool.failed(a, _refused())
    clock.now += 0.5
    assert pool.check() == []  # probe not due yet
    clock.now += 0.6
    assert pool.check() == [a]  # the probe, sent by the fleet itself
    assert pool.check() == []  # one probe at a time
    # No user's image goes to a server that is out, probe due or not.
    assert {pool.pick() for _ in range(5)} == {b}
    pool.probed(a, "cannot connect: refused")
    waits = []
    for _ in range(4):  # the interval doubles, up to probe_max
        started = clock.now
        while pool.check() != [a]:
            clock.now += 0.25
        waits.append(clock.now - started)
        pool.probed(a, "cannot connect: refused")
    assert waits == [2.0, 4.0, 8.0, 8.0]
    assert a.requests == 1 and a.failures == 1  # probes are not user requests
    clock.now += 8
    assert pool.check() == [a]
    pool.probed(a, None)
    assert not a.is_out and notes[-1] == "server 10.0.0.0:9001 answers again: back in"
    snapshot = pool.snapshot()[0]
    assert snapshot["state"] == "in" and snapshot["ok"] == 0 and snapshot["times_out"] == 1
    assert pool.pick() is a  # back in: it gets requests again


def _silent_pool(count: int, clock: FakeClock, deadline: float | None = 0.5) -> ServerPool:
    return ServerPool(
        [Server(f"http://10.0.0.{n}:9001", NoTransport()) for n in range(count)],
        silent_after=lambda: 5.0,
        suspect_after=lambda: deadline,
        clock=clock,
    )


def test_a_server_silent_past_the_deadline_gets_no_requests_and_its_own_are_routed_around() -> None:
    clock = FakeClock()
    pool = _silent_pool(2, clock)
    a, b = pool.servers
    assert pool.pick() is a and pool.pick() is b and pool.pick() is a  # a hangs: 2 in flight
    pool.answered(b, clock.now, ok=True)
    clock.now += 0.4  # under the deadline: a straggler's time, not yet the server's fault
    assert pool.pick() is b
    pool.answered(b, clock.now, ok=True)
    assert not pool.routed_around(a) and not a.silent
    clock.now += 0.2  # a: nothing answered for 0.6 s while b answers
    assert pool.routed_around(a) and a.silent and not a.is_out
    assert not pool.routed_around(b)
    assert {pool.pick() for _ in range(5)} == {b}  # new requests go to b alone
    # Not out yet: that takes silent_after (5 s); then its requests are routed around too.
    clock.now += 5
    pool.answered(b, clock.now, ok=True)
    assert pool.check() == [] and a.is_out
    assert pool.routed_around(a)
    # Its answer (a slow batch, say) ends the silence.
    pool.answered(a, clock.now - 6, ok=True)
    assert not a.silent and not a.is_out


def test_one_slow_request_is_a_straggler_not_a_silent_server() -> None:
    clock = FakeClock()
    pool = _silent_pool(2, clock)
    a, b = pool.servers
    assert pool.pick() is a  # one request, slow
    for _ in range(10):
        clock.now += 0.2
        assert pool.pick() is b
        pool.answered(b, clock.now, ok=True)
    assert not pool.routed_around(a)  # the hedging's budget decides for a straggler


def test_silence_is_not_judged_before_the_deadline_is_known_nor_when_all_are_silent() -> None:
    clock = FakeClock()
    unknown = _silent_pool(2, clock, deadline=None)
    a, _ = unknown.servers
    unknown.pick(), unknown.pick(), unknown.pick()
    clock.now += 3
    assert not unknown.routed_around(a)
    pool = _silent_pool(2, clock)
    a, b = pool.servers
    for _ in range(4):
        pool.pick()  # two each, none answered
    clock.now += 3
    assert not pool.routed_around(a) and not pool.routed_around(b)


def test_with_every_server_out_a_failure_counts_as_usual() -> None:
    clock = FakeClock()
    pool = _pool(2, clock)
    a, b = pool.servers
    pool.pick(), pool.pick()
    assert pool.failed(a, _refused()) is True
    assert pool.failed(b, _refused()) is False  # none left: the job's outage logic decides
    # All out: requests still go somewhere, to the server whose probe comes first.
    chosen = pool.pick()
    assert chosen is a and a.probing


def test_a_server_that_stops_answering_while_others_answer_is_taken_out() -> None:
    clock = FakeClock()
    notes: list[str] = []
    pool = ServerPool(
        [Server(f"http://10.0.0.{n}:9001", NoTransport()) for n in range(2)],
        silent_after=lambda: 5.0,
        clock=clock,
        notify=lambda text: notes.append(text) if text else None,
    )
    a, b = pool.servers
    assert pool.pick() is a  # hangs
    for _ in range(10):  # b keeps answering
        clock.now += 0.5
        assert pool.pick() is b
        pool.answered(b, clock.now - 0.1, ok=True)
    assert a.is_out and a.in_flight == 1
    assert "none answered for 5 s while other servers answer" in notes[-1]
    # Its hung request ends in a timeout at last: the item goes elsewhere, not counted.
    assert pool.failed(a, _timeout()) is True


def test_requests_cut_for_a_copy_elsewhere_do_not_restart_a_silence() -> None:
    clock = FakeClock()
    pool = ServerPool(
        [Server(f"http://10.0.0.{n}:9001", NoTransport()) for n in range(2)],
        silent_after=lambda: 5.0,
        clock=clock,
    )
    a, b = pool.servers
    assert pool.pick() is a  # hangs
    assert pool.pick() is b
    pool.answered(b, clock.now, ok=True)
    for _ in range(3):
        clock.now += 2
        pool.cancelled(a)  # a copy sent to b answered first
        assert pool.pick() is a  # idle again, picked again: still no answer from it
        assert pool.pick() is b
        pool.answered(b, clock.now, ok=True)
    assert a.is_out


def test_silence_alone_is_not_a_server_failure() -> None:
    # Nobody answers: not one server's fault; the job's watchdog and outage logic decide.
    clock = FakeClock()
    pool = ServerPool(
        [Server(f"http://10.0.0.{n}:9001", NoTransport()) for n in range(2)],
        silent_after=lambda: 5.0,
        clock=clock,
    )
    pool.pick(), pool.pick()
    clock.now += 60
    pool.pick()
    assert not any(server.is_out for server in pool.servers)


def test_the_silence_limit_follows_the_stuck_request_deadline() -> None:
    assert silence_limit(None, 60) == 60  # not learned yet: the request timeout
    assert silence_limit(0.5, 60) == SILENCE_FLOOR
    assert silence_limit(10, 60) == 20
    assert silence_limit(40, 60) == 60


def test_a_cancelled_request_says_nothing_about_the_server() -> None:
    clock = FakeClock()
    pool = _pool(1, clock)
    (a,) = pool.servers
    for _ in range(FAILS_TO_TAKE_OUT * 2):
        pool.pick()
        pool.cancelled(a)
    assert not a.is_out and a.in_flight == 0 and a.failures == 0


class Recording:
    """An in-memory server: records the URLs it was sent, answers with ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.urls: list[str] = []
        self.gate: anyio.Event | None = None
        """Set: the next request waits for it."""

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        self.urls.append(str(url))
        if self.gate is not None:
            await self.gate.wait()
        return Response(self.status, {}, orjson.dumps({"message": "busy"}))

    async def aclose(self) -> None:
        pass


def test_the_transport_swaps_the_base_url_and_marks_a_server_taken_out_by_5xx() -> None:
    first, second = Recording(), Recording(503)
    gate = anyio.Event()
    fleet = FleetTransport([("http://a:1/v1/", first), ("http://b:2/api", second)])
    url = URL("http://a:1/v1/colors/1").with_query(api_key="k", confidence="0.5")
    answers: list[Response] = []

    async def held() -> None:  # keeps a request in flight on the first server
        first.gate = gate
        answers.append(await fleet.send(url, b"", {}))

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(held)
            await anyio.sleep(0.01)
            first.gate = None
            for _ in range(FAILS_TO_TAKE_OUT + 1):
                answers.append(await fleet.send(url, b"", {}))
            gate.set()

    anyio.run(main)
    assert first.urls[0] == str(url)
    assert second.urls[0] == "http://b:2/api/colors/1?api_key=k&confidence=0.5"
    assert len(second.urls) == FAILS_TO_TAKE_OUT  # then out: the last went to the first
    assert [r.server_out for r in answers if r.status == 503] == [False, False, True]
    assert len(first.urls) == 2 and len(answers) == FAILS_TO_TAKE_OUT + 2
    states = {s["server"]: s["state"] for s in fleet.snapshot()}
    assert states == {"a:1": "in", "b:2": "out"}


def test_base_urls_are_matched_as_yarl_writes_them() -> None:
    first, second = Recording(), Recording()
    fleet = FleetTransport([("http://GPU-1:80/v1", first), ("https://Gpu-2:443/", second)])
    url = URL("http://GPU-1:80/v1/colors/1").with_query(api_key="k")  # as the client builds it

    async def main() -> None:
        for _ in range(2):
            await fleet.send(url, b"", {})

    anyio.run(main)
    assert first.urls == ["http://gpu-1/v1/colors/1?api_key=k"]
    assert second.urls == ["https://gpu-2/colors/1?api_key=k"]


def _restart_mid_job(servers: list[BackgroundServer], back: list[int]) -> Callable[[], None]:
    """Take ``servers[1]`` down once it has answered some requests, bring it back on its
    port a little later (while the job goes on); ``back``: its request count then. The port
    stays its own meanwhile (``set_down``): a server stopped and started anew could find it
    taken by another test's."""

    def control() -> None:
        victim = servers[1]
        while victim.stats.requests < 20:
            time.sleep(0.005)
        victim.set_down(True)
        time.sleep(0.4)  # its requests fail over; the first probe (1 s) finds it back
        back.append(victim.stats.requests)
        victim.set_down(False)

    return control


def test_a_job_over_three_servers_survives_one_stopped_and_restarted(
    tmp_path: Path,
    make_server: Callable[..., BackgroundServer],
    cli: Callable[..., CliResult],
) -> None:
    expected = make_images(tmp_path / "images", 800)
    servers = [make_server(latency=0.02) for _ in range(3)]
    back: list[int] = []
    controller = threading.Thread(target=_restart_mid_job(servers, back))
    controller.start()
    output = tmp_path / "out.jsonl"
    urls = [arg for server in servers for arg in ("--api-url", server.url)]
    try:
        result = cli(
            "run", tmp_path / "images", "--model", "colors/1", "--output", output,
            "--concurrency", "6", *urls,
        )  # fmt: skip
    finally:
        controller.join()
    assert result.code == 0, result.err
    rows = read_rows(output)
    assert len(rows) == len(expected) and {r["status"] for r in rows} == {"ok"}
    assert {r["id"]: r["top"] for r in rows} == expected
    # Work moved to the others and came back: the restarted server answered requests.
    assert back and servers[1].stats.requests > back[0]
    assert servers[0].stats.requests > 0 and servers[2].stats.requests > 0
    report = result.out + result.err
    assert "servers (3):" in report and "taken out 1×" in report
    status = orjson.loads(progress_path(output).read_bytes())
    by_server = {s["server"]: s for s in status["servers"]}
    victim = by_server[servers[1].url.split("//")[1]]
    assert victim["state"] == "in" and victim["times_out"] == 1 and victim["failures"] >= 1
    assert sum(s["ok"] for s in status["servers"]) == len(expected)
    assert KEY not in report and KEY not in progress_path(output).read_text()
    settings = orjson.loads(Path(f"{output}.job.json").read_bytes())
    assert settings["api_urls"] == [server.url for server in servers]
    shown = cli("status", output)
    assert shown.code == 0 and "servers (3):" in shown.out
    assert f"{victim['server']}: " in shown.out and "taken out 1×" in shown.out


def test_status_says_which_servers_are_out() -> None:
    status = {
        "output": "out.jsonl", "summary": "running", "ok": 5, "failed": 0,
        "servers": [
            {"server": "gpu-1:9001", "state": "in", "requests": 9, "ok": 5, "failures": 0,
             "latency_ms_mean": 180.0, "latency_ms_p95": 420.0, "times_out": 0},
            {"server": "gpu-2:9001", "state": "out", "requests": 4, "ok": 0, "failures": 4,
             "latency_ms_mean": None, "latency_ms_p95": None, "times_out": 1,
             "last_error": "cannot connect to gpu-2:9001: refused"},
        ],
    }  # fmt: skip
    lines = format_status(status).splitlines()
    assert lines[-2:] == [
        "    gpu-1:9001: 9 requests, 5 ok, 0 failures, 180 ms mean, 420 ms p95",
        "    gpu-2:9001: 4 requests, 0 ok, 4 failures, no answer yet; taken out 1×; "
        "OUT (cannot connect to gpu-2:9001: refused), probing",
    ]


def test_local_cannot_be_one_of_several_servers(
    tmp_path: Path, server: BackgroundServer, cli: Callable[..., CliResult]
) -> None:
    make_images(tmp_path / "images", 1)
    result = cli(
        "run", tmp_path / "images", "--model", "colors/1", "--output", tmp_path / "o.jsonl",
        "--api-url", server.url, "--api-url", "local",
    )  # fmt: skip
    assert result.code == 2
    assert "'local' cannot be one of several servers" in result.err
    again = cli(
        "run", tmp_path / "images", "--model", "colors/1", "--output", tmp_path / "o.jsonl",
        "--api-url", server.url, "--api-url", server.url + "/",
    )  # fmt: skip
    assert again.code == 2 and "given more than once" in again.err


def test_a_server_that_stops_answering_is_taken_out_and_the_job_finishes(
    tmp_path: Path, make_server: Callable[..., BackgroundServer]
) -> None:
    # Long enough (~3 s) to go on after the hung server's 2 s of silence (--timeout 2).
    expected = make_images(tmp_path / "images", 240)
    fine = [make_server(latency=0.05) for _ in range(2)]
    hung = make_server(hang_rate=1.0)  # accepts every request, answers none
    config = JobConfig(
        sources=tmp_path / "images",
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(
            api_url=[server.url for server in (*fine, hung)],
            api_key=KEY,
            concurrency=6,
            timeout=2,
        ),
        # No probe within this short job: a probe of a hung server holds its item --timeout.
        outage=OutageConfig(probe_initial=30, probe_max=60),
    )
    summary = classify(config)
    assert summary.failed == 0 and summary.exit_code == 0
    assert {r["id"]: r["top"] for r in read_rows(config.output)} == expected
    by_server = {s["server"]: s for s in summary.servers}
    stopped = by_server[hung.url.removeprefix("http://")]
    assert stopped["state"] == "out" and stopped["ok"] == 0 and stopped["requests"] >= 1
    assert sum(s["ok"] for s in summary.servers) == len(expected)


def test_ties_go_to_a_server_whose_latest_outcome_was_an_answer() -> None:
    clock = FakeClock()
    pool = _pool(2, clock)
    a, b = pool.servers
    pool.pick(), pool.pick()
    pool.answered(a, clock.now, ok=True)
    pool.failed(b, _timeout())  # one timeout: not out, but not the first choice either
    assert pool.pick() is a  # although b was picked less recently
    pool.answered(a, clock.now, ok=True)
    assert pool.pick() is a


def test_with_every_server_unreachable_the_job_stops_naming_them_all(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Callable[..., CliResult]
) -> None:
    make_images(tmp_path / "images", 5)
    gone = [make_server() for _ in range(2)]
    for server in gone:
        server.set_down(True)  # nothing listens on its port now, and nothing else can
    urls = [arg for server in gone for arg in ("--api-url", server.url)]
    result = cli(
        "run", tmp_path / "images", "--model", "colors/1", "--output", tmp_path / "o.jsonl",
        *urls,
    )  # fmt: skip
    assert result.code == 3
    assert f"cannot reach the API at {gone[0].url}, {gone[1].url} " in result.err
    assert "0 of 2 server(s) in" in result.err
