"""The three clients under test, how each is started, and how its output is checked."""

from __future__ import annotations

import os
import subprocess
import venv
from dataclasses import dataclass
from pathlib import Path

import orjson
from harness import PY, ROOT

MODEL = "colors/1"
API_KEY = "bench-key"
SDK_VERSION = "1.8.3"
SDK_VENV = ROOT / ".venv-sdk"
CLIENTS = ("batchclassify", "lean", "sdk")
#: ``python -c`` that runs the CLI of the checkout given as its first argument.
_RUN_CHECKOUT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from batchclassify.commands.cli import main; sys.exit(main(sys.argv[1:]))"
)


def sdk_python(log: object = print) -> Path:
    """The benchmark venv's python with inference-sdk installed, created on first use."""
    python = SDK_VENV / "bin" / "python"
    check = [str(python), "-c", "import inference_sdk"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    assert callable(log)
    log(f"creating {SDK_VENV} with inference-sdk=={SDK_VERSION} (once; about a minute) ...")
    venv.EnvBuilder(with_pip=True, clear=True).create(SDK_VENV)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"inference-sdk=={SDK_VERSION}"], check=True
    )
    return python


def command(
    client: str,
    *,
    manifest: Path,
    url: str,
    output: Path,
    concurrency: int,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The command line that runs ``client`` over ``manifest``, writing JSONL to ``output``."""
    for stale in (output, output.with_name(output.name + ".job.json")):
        if stale.exists():
            stale.unlink()
    output.parent.mkdir(parents=True, exist_ok=True)
    if client == "batchclassify" or client.startswith("batchclassify@"):
        # batchclassify@/other/checkout: that checkout's code, to compare two versions.
        _, _, checkout = client.partition("@")
        start = ["-m", "batchclassify"]
        if checkout:
            start = ["-c", _RUN_CHECKOUT, checkout]
        return [
            PY,
            *start,
            "run",
            str(manifest),
            "--model",
            MODEL,
            "--api-url",
            url,
            "--api-key",
            API_KEY,
            "--output",
            str(output),
            "--concurrency",
            str(concurrency),
            "--quiet",
            *extra,
        ]
    args = [str(manifest), url, MODEL, str(output), str(concurrency), API_KEY, *extra]
    if client == "lean":
        return [PY, str(ROOT / "lean_client.py"), *args]
    if client == "sdk":
        return [str(sdk_python()), str(ROOT / "sdk_client.py"), *args]
    raise ValueError(f"unknown client {client!r}")


def write_manifest(path: Path, refs: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{ref}\n" for ref in refs), encoding="utf-8")
    return path


def image_key(ref: str) -> str:
    """What identifies the image behind a row id: its file name (URLs and hardlinks alike)."""
    return ref.rsplit("/", 1)[-1].split("?", 1)[0]


@dataclass
class Checked:
    rows: int = 0
    ok: int = 0
    correct: int = 0
    http_429_rows: int = 0

    @property
    def wrong(self) -> int:
        return self.ok - self.correct


def check_output(output: Path, expected: dict[str, str | None]) -> Checked:
    """Compare every ok row's ``top`` with the server's answer for that image."""
    checked = Checked()
    if not output.exists():
        return checked
    with open(output, "rb") as handle:
        for line in handle:
            row = orjson.loads(line)
            checked.rows += 1
            if row.get("http_status") == 429:
                checked.http_429_rows += 1
            if row.get("status") != "ok":
                continue
            checked.ok += 1
            want = expected.get(image_key(row["id"]))
            if (row.get("top") or None) == want:
                checked.correct += 1
    return checked


def hardlinked_copies(paths: list[Path], count: int, folder: Path) -> list[Path]:
    """``count`` distinct paths cycling over ``paths``: copy k is a hardlink in ``folder/ck``.

    Distinct paths are distinct items (ids), yet the bytes on disk and in the page cache are
    those of the originals, so a long run costs no extra disk.
    """
    result: list[Path] = []
    for i in range(count):
        copy, source = divmod(i, len(paths))
        original = paths[source]
        if copy == 0:
            result.append(original)
            continue
        link = folder / f"c{copy}" / original.name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.link(original, link)
        result.append(link)
    return result
