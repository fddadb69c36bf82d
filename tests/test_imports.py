"""A job imports only what it uses: a plain run over a folder into JSONL loads none of the
optional features' modules (the answer cache's sqlite3, Parquet, Pillow, tqdm off a terminal,
object storage, the manifest readers and csv, several servers, the local server, the other
commands), and a job that uses them loads them. What a real ``python -m batchclassify`` child
had in ``sys.modules`` when it exited is checked, not a time."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import batchclassify
from batchclassify import config
from batchclassify.commands.cli import COMMAND_MODULES, main
from batchclassify.job import runner
from batchclassify.server import BackgroundServer
from tests.conftest import PYTHON, Cli, MakeServer, make_images, read_rows, run_args, subprocess_env

#: Runs ``python -m batchclassify ARGS`` and writes the names in ``sys.modules`` at exit to
#: the first argument.
_DUMP_AT_EXIT = """
import atexit, runpy, sys
dump = sys.argv.pop(1)
def write():
    with open(dump, "w") as handle:
        handle.write("\\n".join(sorted(sys.modules)))
atexit.register(write)
sys.argv[0] = "batchclassify"
runpy.run_module("batchclassify", run_name="__main__", alter_sys=True)
"""

#: Never imported by a job that does not use them (top-level names: their submodules too).
OPTIONAL = {
    "sqlite3": "the answer cache (--cache)",
    "pyarrow": "Parquet",
    "PIL": "Pillow (--max-size)",
    "tqdm": "the progress bar (on a terminal only)",
    "fsspec": "object storage",
    "csv": "CSV manifests",
    "xml": "the Label Studio export",
    "batchclassify.server": "the local server",
    "batchclassify.inputs.manifests": "manifests",
    "batchclassify.inputs.manifest_parquet": "Parquet manifests",
    "batchclassify.output.parquet_sink": "Parquet output",
    "batchclassify.inputs.objectstore": "object storage",
    "batchclassify.api.fleet": "several --api-url",
    "batchclassify.commands.cache": "the cache command",
    "batchclassify.commands.processes": "--processes",
    "batchclassify.commands.report": "the report command",
    "batchclassify.commands.export": "the export command",
    "batchclassify.commands.plan": "the plan command",
    "batchclassify.commands.status": "the status command",
    "batchclassify.commands.merge": "the merge command",
    "aiohttp": "the aiohttp transport (BATCHCLASSIFY_HTTP=aiohttp)",
}


def _modules_of_job(tmp_path: Path, args: list[str]) -> set[str]:
    """The modules a ``batchclassify ARGS`` child had loaded when it exited (exit 0)."""
    dump = tmp_path / "modules.txt"
    done = subprocess.run(
        [PYTHON, "-c", _DUMP_AT_EXIT, str(dump), *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return set(dump.read_text().split())


def _loaded(modules: set[str], name: str) -> bool:
    return any(module == name or module.startswith(name + ".") for module in modules)


def test_a_plain_folder_job_imports_no_optional_feature(
    server: BackgroundServer, tmp_path: Path
) -> None:
    make_images(tmp_path / "in", 3)
    output = tmp_path / "out.jsonl"
    modules = _modules_of_job(tmp_path, run_args(server, output, tmp_path / "in"))
    assert [row["status"] for row in read_rows(output)] == ["ok"] * 3
    # The dump saw the job's imports.
    assert {"batchclassify.job.runner", "batchclassify.api.http1"} <= modules
    loaded = {name: why for name, why in OPTIONAL.items() if _loaded(modules, name)}
    assert loaded == {}


def test_the_features_a_job_uses_are_imported(make_server: MakeServer, tmp_path: Path) -> None:
    """The other side: with a CSV manifest, --cache and two servers, their modules load (so
    the test above would see them if a plain job loaded them); the rest still do not."""
    images = make_images(tmp_path / "in", 2)
    manifest = tmp_path / "list.csv"
    manifest.write_text("path\n" + "".join(f"{path}\n" for path in images))
    output = tmp_path / "out.jsonl"
    first, second = make_server(), make_server()
    cache = tmp_path / "answers.sqlite"
    args = [*run_args(first, output, manifest), "--api-url", second.url, "--cache", str(cache)]
    modules = _modules_of_job(tmp_path, args)
    assert [row["status"] for row in read_rows(output)] == ["ok"] * 2
    used = {"csv", "batchclassify.inputs.manifests", "sqlite3", "batchclassify.api.fleet"}
    assert {name for name in OPTIONAL if _loaded(modules, name)} == used


def test_status_starts_without_the_job_modules(
    cli: Cli, server: BackgroundServer, tmp_path: Path
) -> None:
    """``batchclassify status`` (and ``import batchclassify``) load no aiohttp, anyio or runner."""
    make_images(tmp_path / "in", 2)
    output = tmp_path / "out.jsonl"
    assert cli(*run_args(server, output, tmp_path / "in")).code == 0
    modules = _modules_of_job(tmp_path, ["status", str(output)])
    assert "batchclassify.commands.status" in modules
    job_modules = {"aiohttp", "anyio", "batchclassify.job.runner", "batchclassify.api.client"}
    assert job_modules & modules == set()


def test_every_public_name_is_there() -> None:
    """The package's names are imported on first use, each the object of its home module."""
    names: dict[str, object] = {}
    exec("from batchclassify import *", names)
    assert set(batchclassify.__all__) <= set(names)
    assert names["Job"] is runner.Job and names["JobConfig"] is config.JobConfig
    assert set(dir(batchclassify)) >= set(batchclassify.__all__)
    with pytest.raises(AttributeError):
        _ = batchclassify.not_a_name


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """The commands are imported only when run, yet ``--help`` lists them all, with help."""
    with pytest.raises(SystemExit):
        main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    for command in ["run", "serve", *COMMAND_MODULES]:
        described = [line for line in lines if line.split()[:1] == [command]]
        assert len(described) == 1 and len(described[0].split()) > 2, command


@pytest.mark.parametrize("command", sorted(COMMAND_MODULES))
def test_each_command_parses_on_its_own(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``batchclassify COMMAND --help`` builds that command's parser alone and shows it."""
    with pytest.raises(SystemExit) as stopped:
        main([command, "--help"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: batchclassify {command}")
