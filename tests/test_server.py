"""The local Roboflow-compatible server: protocol, colour model, fault knobs, SDK compatibility.

Each test starts a real server on 127.0.0.1 port 0 (in-process, or on a thread for the
synchronous ``inference_sdk``) and talks HTTP to it; nothing is patched.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from batchclassify.server import (
    CLASSES,
    BackgroundServer,
    Fault,
    RunningServer,
    ServerConfig,
    SlidingWindowLimiter,
    Uplink,
    longtail_latency,
    start_server,
)

IMAGES = Path(__file__).resolve().parent.parent / "sample_manifests" / "images"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
KEY = "test-secret-key"


def b64(name: str) -> bytes:
    return base64.b64encode((IMAGES / name).read_bytes())


def key_channel(server: RunningServer | BackgroundServer) -> str | None:
    """Where the last request carried its key ("query", "header", "both" or None)."""
    return server.stats.last.api_key_in


Scenario = Callable[[RunningServer, aiohttp.ClientSession], Awaitable[None]]


@asynccontextmanager
async def serving(config: ServerConfig) -> AsyncIterator[tuple[RunningServer, Any]]:
    server = await start_server(config)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            yield server, session
    finally:
        await server.stop()


def run(scenario: Scenario, config: ServerConfig | None = None) -> None:
    """Run ``scenario(server, session)`` against a fresh server (no pytest-asyncio here)."""

    async def main() -> None:
        async with serving(config or ServerConfig(files_dir=IMAGES)) as (server, session):
            await scenario(server, session)

    asyncio.run(main())


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = FORM,
    **params: str,
) -> tuple[int, dict[str, Any], Any]:
    # aiohttp adds a Content-Type of its own unless told not to.
    skip = () if headers is None or "Content-Type" in headers else ("Content-Type",)
    async with session.post(
        url, data=body, params=params, headers=headers, skip_auto_headers=skip
    ) as response:
        return response.status, orjson.loads(await response.read()), response.headers


@pytest.mark.parametrize(
    ("name", "colour"),
    [
        ("red.jpg", "red"),
        ("green.png", "green"),
        ("blue.JPG", "blue"),
        ("yellow.jpeg", "yellow"),
        ("white.png", "white"),
        ("black.jpg", "black"),
        ("gray.PNG", "gray"),
        ("more/red-small.jpg", "red"),
    ],
)
def test_single_label_answer_names_the_dominant_colour(name: str, colour: str) -> None:
    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        status, body, _ = await post(session, f"{server.url}/colors/1", b64(name))
        assert status == 200, body
        assert body["top"] == colour and body["confidence"] > 0.9
        assert body["predictions"][0] == {
            "class": colour,
            "class_id": body["predictions"][0]["class_id"],
            "confidence": body["confidence"],
        }
        assert isinstance(body["inference_id"], str) and body["time"] >= 0
        assert all(p["confidence"] >= 0.4 for p in body["predictions"])

    run(scenario)


def test_hash_model_answers_without_decoding_and_consistently() -> None:
    """``model_cost="hash"`` (for client benchmarks): a class per image from its bytes."""

    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        answers = []
        for name in ("red.jpg", "green.png", "red.jpg"):
            status, body, _ = await post(session, f"{server.url}/colors/1", b64(name))
            assert status == 200, body
            answers.append(body["top"])
        assert answers[0] == answers[2]
        assert set(answers) <= {name for name, _ in CLASSES}
        # No decoding: bytes that are no image still get an answer.
        status, body, _ = await post(session, f"{server.url}/colors/1", base64.b64encode(b"x"))
        assert status == 200 and body["image"] == {"width": 0, "height": 0}

    run(scenario, ServerConfig(model_cost="hash"))


def test_response_reports_the_upright_original_size() -> None:
    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        _, body, _ = await post(session, f"{server.url}/colors/1", b64("red.jpg"))
        assert body["image"] == {"width": 320, "height": 240}
        _, body, _ = await post(session, f"{server.url}/colors/1", b64("more/turned.jpg"))
        assert body["image"] == {"width": 120, "height": 160}  # EXIF orientation 6 applied
        assert body["top"] == "yellow"

    run(scenario)


def test_multi_label_answer_lists_every_class_and_the_ones_over_threshold() -> None:
    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        url = f"{server.url}/colors-multilabel/3"
        status, body, _ = await post(session, url, b64("more/red-blue.png"))
        assert status == 200
        assert set(body["predicted_classes"]) == {"red", "blue"}
        assert set(body["predictions"]) == {
            "red", "green", "blue", "yellow", "white", "black", "gray"
        }  # fmt: skip
        assert body["predictions"]["red"]["class_id"] == 0
        assert body["predictions"]["green"]["confidence"] < 0.4
        _, body, _ = await post(session, url, b64("green.png"))
        assert body["predicted_classes"] == ["green"]

    run(scenario)


def test_multipart_and_data_uri_bodies_are_accepted() -> None:
    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        form = aiohttp.FormData()
        form.add_field("file", (IMAGES / "blue.JPG").read_bytes(), filename="blue.JPG")
        status, body, _ = await post(session, f"{server.url}/colors/1", form, headers=None)
        assert (status, body["top"]) == (200, "blue")
        uri = b"data:image/png;base64," + b64("green.png")
        status, body, _ = await post(session, f"{server.url}/colors/1", uri)
        assert (status, body["top"]) == (200, "green")
        # Base64 wrapped at 76 columns, as the `base64` tool writes it.
        raw = b64("red.jpg")
        wrapped = b"\n".join(raw[i : i + 76] for i in range(0, len(raw), 76))
        status, body, _ = await post(session, f"{server.url}/colors/1", wrapped)
        assert (status, body["top"]) == (200, "red")

    run(scenario)


def test_api_key_in_query_or_bearer_header_with_the_query_winning() -> None:
    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        url = f"{server.url}/colors/1"
        image = b64("red.jpg")
        assert (await post(session, url, image, api_key=KEY))[0] == 200
        assert key_channel(server) == "query"
        bearer = {**FORM, "Authorization": f"Bearer {KEY}"}
        assert (await post(session, url, image, headers=bearer))[0] == 200
        assert key_channel(server) == "header"
        assert "api_key" not in server.stats.last.query_keys

        status, body, _ = await post(session, url, image, api_key="wrong")
        assert (status, body) == (403, {"message": "Forbidden"})
        wrong_bearer = {**FORM, "Authorization": "Bearer wrong"}
        assert (await post(session, url, image, headers=wrong_bearer))[0] == 403
        # Both present: the query decides.
        assert (await post(session, url, image, headers=wrong_bearer, api_key=KEY))[0] == 200
        assert (await post(session, url, image, headers=bearer, api_key="wrong"))[0] == 403

        status, body, _ = await post(session, url, image)
        assert status == 400 and "API key is missing" in body["message"]
        # The key itself is never kept.
        assert KEY not in repr(server.stats.recent)
        assert KEY.encode() not in orjson.dumps(server.stats.as_dict())

    run(scenario, ServerConfig(api_key=KEY))


def test_model_errors_unknown_model_bad_version_and_fatal_workspaces() -> None:
    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        image = b64("red.jpg")
        status, body, _ = await post(session, f"{server.url}/no-such-model/1", image)
        assert status == 404 and "not found" in body["message"]
        for version in ("0", "x", "-1"):
            status, body, _ = await post(session, f"{server.url}/colors/{version}", image)
            assert (status, body) == (400, {"message": "Invalid Model ID sent in request."})
        assert (await post(session, f"{server.url}/paused/1", image))[0] == 423
        assert (await post(session, f"{server.url}/no-credits/1", image))[0] == 402
        async with session.get(f"{server.url}/nowhere/at/all") as response:
            assert response.status == 404 and "message" in await response.json()

    run(scenario)


def test_bad_bodies_answer_400_or_413_with_a_message() -> None:
    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        url = f"{server.url}/colors/1"
        status, body, _ = await post(session, url, base64.b64encode(b"not an image at all"))
        assert status == 400 and "could not be decoded" in body["message"]
        truncated = base64.b64encode((IMAGES / "red.jpg").read_bytes()[:300])
        assert (await post(session, url, truncated))[0] == 400
        raw = (IMAGES / "red.jpg").read_bytes()
        status, body, _ = await post(session, url, raw)
        assert status == 400 and "base64" in body["message"]
        status, body, _ = await post(session, url, b64("red.jpg"), headers={})
        assert status == 400
        assert body == {"message": "Content-Type header not provided with request."}
        status, body, _ = await post(session, url, b"")
        assert status == 400 and "not found in request body" in body["message"]
        status, body, _ = await post(session, url, b"A" * 5000)
        assert status == 413 and "too large" in body["message"]

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length to check up front
            for _ in range(3):
                yield b"A" * 2000

        status, body, _ = await post(session, url, chunked())
        assert status == 413 and "too large" in body["message"]
        assert server.stats.statuses[413] == 2

    run(scenario, ServerConfig(max_body_bytes=4096))


def test_image_url_is_fetched_by_the_server_from_its_own_files_route() -> None:
    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        url = f"{server.url}/colors/1"
        first = f"{server.url}/_files/more/blue.png?n=1"
        status, body, _ = await post(session, url, b"ignored", image=first)
        assert (status, body["top"]) == (200, "blue")
        # The same file under another query string comes from the cache.
        status, body, _ = await post(session, url, None, headers={}, image=f"{first}&n=2")
        assert (status, body["top"]) == (200, "blue")
        assert (server.stats.url_fetches, server.stats.url_cache_hits) == (1, 1)
        assert server.stats.routes["files"] == 1
        assert server.stats.last.image_url == f"{first}&n=2"
        status, body, _ = await post(session, url, None, image=f"{server.url}/_files/gone.jpg")
        assert status == 400 and "HTTP 404" in body["message"]
        status, body, _ = await post(session, url, None, image="ftp://example/x.jpg")
        assert status == 400 and "http" in body["message"]
        async with session.get(f"{server.url}/_files/../pyproject.toml") as response:
            assert response.status == 404

    run(scenario)


def test_confidence_threshold_including_the_percent_form() -> None:
    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        url = f"{server.url}/colors/1"
        image = b64("more/red-blue.png")  # its mean colour is ambiguous: several classes
        _, body, _ = await post(session, url, image, confidence="0.05")
        low = [p["class"] for p in body["predictions"]]
        assert len(low) >= 2
        confidences = [p["confidence"] for p in body["predictions"]]
        assert confidences == sorted(confidences, reverse=True)
        assert all(round(c, 4) == c for c in confidences)
        _, body, _ = await post(session, url, image, confidence="5")  # 5 means 5%
        assert [p["class"] for p in body["predictions"]] == low
        _, body, _ = await post(session, url, b64("red.jpg"), confidence="99.99")
        assert body["predictions"] == [] and (body["top"], body["confidence"]) == ("", 0.0)
        assert server.stats.last.confidence == "99.99"
        multi = f"{server.url}/colors-multilabel/1"
        _, body, _ = await post(session, multi, b64("more/red-blue.png"), confidence="99.5")
        assert body["predicted_classes"] == [] and len(body["predictions"]) == 7
        status, _, _ = await post(session, url, image, confidence="lots")
        assert status == 400

    run(scenario)


def test_rate_limit_answers_429_with_an_integer_retry_after() -> None:
    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        image = b64("red.jpg")
        answers = await asyncio.gather(
            *(post(session, f"{server.url}/colors/1", image) for _ in range(8))
        )
        statuses = sorted(status for status, _, _ in answers)
        assert statuses == [200] * 5 + [429] * 3
        for status, body, headers in answers:
            if status == 429:
                assert "rate limit" in body["message"]
                assert int(headers["Retry-After"]) >= 1

    run(scenario, ServerConfig(rate_limit=5))


def test_sliding_window_allows_exactly_the_rate_in_any_second() -> None:
    now = [0.0]
    limiter = SlidingWindowLimiter(3, clock=lambda: now[0])
    assert [limiter.acquire() for _ in range(3)] == [None, None, None]
    assert limiter.acquire() == pytest.approx(1.0)
    now[0] = 0.6
    assert limiter.acquire() == pytest.approx(0.4)  # rejections do not count
    now[0] = 1.0
    assert limiter.acquire() is None
    slow = SlidingWindowLimiter(0.5, clock=lambda: now[0])  # one per two seconds
    assert slow.acquire() is None and slow.acquire() == pytest.approx(2.0)


def test_upload_mbps_reads_bodies_through_one_uplink_shared_by_all_connections() -> None:
    # About 300 KB of base64: red.jpg, then bytes after its end marker that decoders ignore.
    padded = (IMAGES / "red.jpg").read_bytes() + random.Random(1).randbytes(220_000)
    image = base64.b64encode(padded)
    assert 290_000 < len(image) < 310_000
    elapsed: list[float] = []

    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        answers = await asyncio.gather(
            *(post(session, f"{server.url}/colors/1", image) for _ in range(2))
        )
        elapsed.append(time.monotonic() - started)
        assert [(status, body["top"]) for status, body, _ in answers] == [(200, "red")] * 2
        assert server.stats.bytes_received == 2 * len(image)
        if server.config.upload_mbps is not None:  # multipart bodies wait their turn too
            form = aiohttp.FormData()
            form.add_field("file", padded, filename="red.jpg")
            started = time.monotonic()
            status, body, _ = await post(session, f"{server.url}/colors/1", form, headers=None)
            assert (status, body["top"]) == (200, "red")
            elapsed.append(time.monotonic() - started)

    run(scenario, ServerConfig(upload_mbps=8))  # 1 MB/s: 600 KB take 0.6 s, shared or not
    both, multipart = elapsed
    # At least the link's time (a busy machine only adds to it; the bookings themselves are
    # checked on a fake clock below): two uploads at once share the link, 0.6 s, not 0.3 s.
    assert both > 0.5 and multipart > 0.2
    run(scenario, ServerConfig())  # no uplink: the same requests, answered as before


def test_uplink_shares_its_rate_and_banks_nothing_while_idle() -> None:
    now = [0.0]
    uplink = Uplink(1000, clock=lambda: now[0])  # bytes per second
    assert uplink.reserve(500) == pytest.approx(0.5)
    assert uplink.reserve(500) == pytest.approx(1.0)  # queued behind the first
    now[0] = 0.5
    assert uplink.reserve(100) == pytest.approx(0.6)
    now[0] = 10.0  # idle for long: the next chunk still takes its full time
    assert uplink.reserve(100) == pytest.approx(0.1)


def test_scripted_statuses_then_normal_answers() -> None:
    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        url, image = f"{server.url}/colors/1", b64("red.jpg")
        server.script(503, 429, Fault(status=429, headers={"Retry-After": "7"}), 200, 500)
        answers = [await post(session, url, image) for _ in range(6)]
        assert [a[0] for a in answers] == [503, 429, 429, 200, 500, 200]
        assert answers[0][2]["Retry-After"] == "1"  # as the real server sends on 503
        assert answers[0][1] == {"message": "Model is temporarily not ready - retry request."}
        assert answers[2][2]["Retry-After"] == "7"
        assert "Retry-After" not in answers[4][2]

        server.fail_next(2, 502, {"X-Why": "upstream"}, message="gateway says no")
        first, second, third = [await post(session, url, image) for _ in range(3)]
        assert (first[0], first[1]["message"]) == (502, "gateway says no")
        assert first[2]["X-Why"] == "upstream"
        assert (second[0], third[0]) == (502, 200)
        assert server.stats.statuses[200] == 3

    run(scenario)


def test_per_image_faults_follow_the_image_content() -> None:
    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        url = f"{server.url}/colors/1"
        server.fail_image((IMAGES / "blue.JPG").read_bytes(), 500, times=2)
        server.fail_image(f"{server.url}/_files/red.jpg", 404)
        results = [(await post(session, url, b64(n)))[0] for n in ("blue.JPG", "red.jpg") * 3]
        assert results == [500, 200, 500, 200, 200, 200]
        status, _, _ = await post(session, url, None, image=f"{server.url}/_files/red.jpg")
        assert status == 404

    run(scenario)


def test_dropped_and_hung_requests_get_no_answer() -> None:
    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        url, image = f"{server.url}/colors/1", b64("red.jpg")
        server.script("drop", "hang")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post(session, url, image)
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(
                url, data=image, headers=FORM, timeout=aiohttp.ClientTimeout(total=0.3)
            ):
                pass
        assert time.monotonic() - started < 2
        assert (await post(session, url, image))[0] == 200
        await asyncio.sleep(0.05)  # let the server notice the timed-out client leave
        stats = server.stats
        assert (stats.drops, stats.hangs, stats.in_flight, stats.requests) == (1, 1, 0, 3)
        assert [r.status for r in stats.recent] == [None, None, 200]

    run(scenario)


def test_server_down_refuses_connections_and_comes_back_on_the_same_port() -> None:
    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        url, image = f"{server.url}/colors/1", b64("red.jpg")
        assert (await post(session, url, image))[0] == 200
        await server.set_down(True)
        assert server.down
        async with aiohttp.ClientSession() as fresh:  # a pooled connection was cut as well
            with pytest.raises(aiohttp.ClientConnectorError):
                await post(fresh, url, image)
        await server.set_down(False)
        assert (await post(session, url, image))[0] == 200

    run(scenario)


def test_a_server_down_keeps_its_port_for_its_return() -> None:
    """Down, the port stays bound to the server: connections are refused, and no other
    program can bind it meanwhile (a test restarting a server on a freed port could find
    another test's server there, or none)."""

    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        await server.set_down(True)
        with socket.socket() as other, pytest.raises(OSError) as taken:
            other.bind(("127.0.0.1", server.port))
        assert taken.value.errno == errno.EADDRINUSE
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        for _ in range(2):  # up and down again: the same socket, still bound
            await server.set_down(False)
            async with aiohttp.ClientSession() as fresh:  # down cut the pooled connections
                assert (await post(fresh, f"{server.url}/colors/1", b64("red.jpg")))[0] == 200
            await server.set_down(True)
        await server.set_down(False)

    run(scenario)


def test_random_faults_are_seeded_and_repeatable() -> None:
    async def statuses(config: ServerConfig) -> list[int]:
        async with serving(config) as (server, session):
            image = b64("red.jpg")
            return [(await post(session, f"{server.url}/colors/1", image))[0] for _ in range(30)]

    config = ServerConfig(error_rate=0.3, seed=7)
    first, second = asyncio.run(statuses(config)), asyncio.run(statuses(config))
    assert first == second and 3 <= first.count(500) <= 18 and set(first) == {200, 500}


def test_latency_and_peak_concurrency() -> None:
    async def scenario(server: RunningServer, session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        image = b64("red.jpg")
        await asyncio.gather(*(post(session, f"{server.url}/colors/1", image) for _ in range(4)))
        assert 0.1 <= time.monotonic() - started < 1.0  # 0.4 s scaled by 0.25, concurrently
        assert server.stats.max_in_flight == 4 and server.stats.in_flight == 0
        async with session.get(f"{server.url}/_stats") as response:
            stats = await response.json()
        assert stats["statuses"] == {"200": 4} and stats["cpu_seconds"] > 0
        assert stats["bytes_received"] == 4 * len(image)

    run(scenario, ServerConfig(latency=0.4, latency_scale=0.25))


def test_longtail_latency_has_the_hosted_api_shape() -> None:
    rng = random.Random(3)
    draws = sorted(longtail_latency(rng) for _ in range(40_000))
    p50, p90, p99 = (draws[int(len(draws) * q)] for q in (0.5, 0.9, 0.99))
    assert 0.15 < p50 < 0.21 and 0.5 < p90 < 0.75 and 4.0 < p99 < 7.5


def test_config_rejects_bad_values_naming_the_field() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        ServerConfig(error_rate=1.5)
    with pytest.raises(ValueError, match="rate_limit"):
        ServerConfig(rate_limit=0)
    with pytest.raises(ValueError, match="upload_mbps"):
        ServerConfig(upload_mbps=0)


def test_inference_sdk_v0_client_gets_the_right_answers() -> None:
    pytest.importorskip("inference_sdk")
    from inference_sdk import InferenceConfiguration, InferenceHTTPClient

    with BackgroundServer(ServerConfig(api_key=KEY)) as server:
        client = InferenceHTTPClient(api_url=server.url, api_key=KEY).select_api_v0()
        client.configure(InferenceConfiguration(api_key_transport="legacy"))
        single = client.infer(str(IMAGES / "red.jpg"), model_id="colors/1")
        assert isinstance(single, dict)
        assert single["top"] == "red" and single["image"] == {"width": 320, "height": 240}
        assert key_channel(server) == "query"
        multi = client.infer(str(IMAGES / "more/red-blue.png"), model_id="colors-multilabel/1")
        assert isinstance(multi, dict) and set(multi["predicted_classes"]) == {"red", "blue"}

        client.configure(InferenceConfiguration(api_key_transport="header"))
        single = client.infer(str(IMAGES / "more/green.JPEG"), model_id="colors/1")
        assert isinstance(single, dict) and single["top"] == "green"
        assert key_channel(server) == "header"
        assert server.stats.requests == 3


def test_module_entry_point_prints_its_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "batchclassify.server", "--port", "0", "--rate-limit", "20"],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")

        async def ask() -> dict[str, Any]:
            async with aiohttp.ClientSession() as session, session.get(f"{url}/info") as r:
                return dict(await r.json())

        assert "colors/N" in asyncio.run(ask())["models"]
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
