"""Shared fixtures: a real local server on 127.0.0.1 port 0, images on disk, the CLI.

The CLI runs in-process through ``batchclassify.commands.cli.main`` (its own event loop, like the
real command) against a ``BackgroundServer`` on another thread; tests that need a real
process (signals, kill -9) start ``python -m batchclassify`` with ``subprocess``.
"""

from __future__ import annotations

import io
import os
import resource
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image, PngImagePlugin

from batchclassify.commands.cli import main
from batchclassify.server import BackgroundServer, ServerConfig

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_manifests"
KEY = "sk-test-5ecret-4f1c9e"

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 30),
    "green": (20, 200, 40),
    "blue": (20, 40, 220),
    "yellow": (235, 220, 30),
    "white": (250, 250, 250),
    "black": (5, 5, 5),
}


def make_image(
    path: Path, color: str = "red", size: tuple[int, int] = (40, 30), fmt: str | None = None
) -> Path:
    """A solid-colour image the local server classifies as ``color``; a JPEG or PNG carries
    its path (a comment, a text chunk), so two such files are not identical images."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, COLORS[color])
    fmt = fmt or ("JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None)
    options: dict[str, Any] = {}
    if fmt == "JPEG":
        options["comment"] = str(path).encode("utf-8", "surrogateescape")
    elif fmt == "PNG" or (fmt is None and path.suffix.lower() == ".png"):
        info = PngImagePlugin.PngInfo()
        info.add_text(
            "batchclassify", str(path).encode("utf-8", "surrogateescape").decode("latin-1")
        )
        options["pnginfo"] = info
    image.save(path, format=fmt, **options)
    return path


_PNG: dict[tuple[str, int], bytes] = {}


def png(color: str, side: int = 8) -> bytes:
    """A small solid-colour PNG the local server classifies as ``color``."""
    if (color, side) not in _PNG:
        buffer = io.BytesIO()
        Image.new("RGB", (side, side), COLORS[color]).save(buffer, format="PNG")
        _PNG[color, side] = buffer.getvalue()
    return _PNG[color, side]


def unique_png(color: str, tag: str) -> bytes:
    """``png(color)`` with a text chunk holding ``tag``: the same picture in other bytes, so a
    job does not answer it from an identical image (see answers.py)."""
    plain = png(color)
    text = b"tEXt" + b"batchclassify\0" + tag.encode()
    chunk = struct.pack(">I", len(text) - 4) + text + struct.pack(">I", zlib.crc32(text))
    return plain[:-12] + chunk + plain[-12:]  # before the IEND chunk


def make_images(folder: Path, count: int) -> dict[str, str]:
    """``count`` tiny images in ``folder``, each with bytes of its own; returns id (the path
    as walked) -> colour."""
    folder.mkdir(parents=True, exist_ok=True)
    colors = list(COLORS)
    expected = {}
    for n in range(count):
        color = colors[n % len(colors)]
        path = folder / f"{n:05d}-{color}.png"
        path.write_bytes(unique_png(color, str(path)))
        expected[str(path)] = color
    return expected


def run_args(
    server: BackgroundServer, output: Path, *sources: str | Path, model: str = "colors/1"
) -> list[str]:
    """``run SOURCES --model M --api-url URL --output OUT`` for the CLI."""
    return [
        "run",
        *map(str, sources),
        "--model",
        model,
        "--api-url",
        server.url,
        "--output",
        str(output),
    ]


def read_rows(output: Path) -> list[dict[str, Any]]:
    """Every row of a JSONL output, or of a Parquet dataset folder."""
    if output.is_dir() or output.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_table(output).to_pylist())
    return [orjson.loads(line) for line in output.read_bytes().splitlines()]


def rows_by_id(output: Path) -> dict[str, dict[str, Any]]:
    rows = read_rows(output)
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == len(rows), "duplicate ids in the output"
    return by_id


@dataclass
class CliResult:
    code: int
    out: str
    err: str


#: The ``cli`` fixture's type: ``cli("run", ...) -> CliResult``.
Cli = Callable[..., CliResult]
#: The ``make_server`` fixture's type: ``make_server(**ServerConfig knobs) -> BackgroundServer``.
MakeServer = Callable[..., BackgroundServer]


@pytest.fixture
def server() -> Iterator[BackgroundServer]:
    """A local server that requires ``KEY``."""
    with BackgroundServer(ServerConfig(api_key=KEY)) as running:
        yield running


@pytest.fixture
def make_server() -> Iterator[Callable[..., BackgroundServer]]:
    """Start servers with any ``ServerConfig`` knobs; all are stopped after the test."""
    started: list[BackgroundServer] = []

    def start(**knobs: Any) -> BackgroundServer:
        knobs.setdefault("api_key", KEY)
        running = BackgroundServer(ServerConfig(**knobs))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 where connections are refused: bound, for the whole test, by a
    socket that does not listen, so no other process (another test's server) can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliResult]:
    """Run ``batchclassify ARGS`` in-process; the key comes from ROBOFLOW_API_KEY."""
    monkeypatch.setenv("ROBOFLOW_API_KEY", KEY)

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        code = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for ``python -m batchclassify`` in a child process."""
    env = dict(os.environ)
    env["ROBOFLOW_API_KEY"] = KEY
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


PYTHON = sys.executable


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (several seconds each: kill -9 rounds, jobs paced by latency) run
    first, so that with ``pytest -n N`` no worker is left starting one at the very end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def sample_ok_row(item_id: str, **metadata: Any) -> dict[str, Any]:
    """A row as the worker writes it for an image classified ``red`` (for sink tests)."""
    from batchclassify.models import Item, Prediction, ok_row

    prediction = Prediction(
        multilabel=False,
        top="red",
        confidence=0.9,
        predictions=[{"class": "red", "confidence": 0.9}, {"class": "blue", "confidence": 0.1}],
        predicted_classes=["red"],
        image_width=64,
        image_height=48,
        inference_id="abc",
    )
    return ok_row(
        Item(id=item_id, path=item_id, metadata=metadata), prediction, attempts=1, elapsed_ms=3.0
    )


def sample_failed_row(item_id: str) -> dict[str, Any]:
    """A row as the worker writes it for an image the server could not decode."""
    from batchclassify.error_types import ErrorType
    from batchclassify.models import Item, error_row

    return error_row(
        Item(id=item_id, path=item_id),
        error="HTTP 400: bad",
        error_type=ErrorType.BAD_IMAGE,
        attempts=1,
    )


def wait_for_job(condition: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    """Wait (up to 30 s) until ``condition()`` holds while the job in ``process`` runs."""
    deadline = time.monotonic() + 30
    while not condition():
        assert process.poll() is None, f"the job ended early: {process.communicate()[1]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def start_cli(args: list[str], *, file_size_limit: int | None = None) -> subprocess.Popen[str]:
    """``batchclassify ARGS`` in a child process; ``file_size_limit`` caps every file it
    writes (RLIMIT_FSIZE: a write past it fails with EFBIG, as on a full disk; Python ignores
    SIGXFSZ, so the process is not killed by it)."""

    def limit() -> None:
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.Popen(
        [PYTHON, "-m", "batchclassify", *args],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )
