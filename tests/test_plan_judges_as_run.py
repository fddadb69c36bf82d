"""``plan`` judges an existing ``--output`` exactly as ``run`` does: one check
(``resume.check_resumable``), so what a run refuses is never counted as "done" by a plan.

Before, ``plan`` compared its own list of settings keys (model, confidence, max size, shard)
and skipped the rest: an output of an older id scheme, or one batchclassify did not write,
was counted as already done by the plan and refused by the run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from batchclassify.server import BackgroundServer

from .conftest import Cli, make_images, run_args


def _older_id_scheme(output: Path) -> None:
    settings_file = Path(f"{output}.job.json")
    settings = orjson.loads(settings_file.read_bytes())
    del settings["id_scheme"]  # written before the key existed: scheme 1
    settings_file.write_bytes(orjson.dumps(settings))


def _foreign_output(output: Path) -> None:
    Path(f"{output}.job.json").unlink()  # a JSONL file batchclassify did not write
    output.write_text('{"name": "someone else\'s file"}\n')


def _foreign_settings(output: Path) -> None:
    Path(f"{output}.job.json").write_text('{"model": "colors/1"}')


def _unreadable_settings(output: Path) -> None:
    Path(f"{output}.job.json").write_text("{not json")


def _nothing(output: Path) -> None:
    pass


@pytest.mark.parametrize(
    ("change", "flags"),
    [
        (_older_id_scheme, []),
        (_foreign_output, []),
        (_foreign_settings, []),
        (_unreadable_settings, []),
        (_nothing, ["--model", "colors/2"]),
        (_nothing, ["--max-size", "64"]),
        (_nothing, ["--confidence", "0.7"]),
        (_nothing, ["--shard", "0/2"]),
    ],
    ids=[
        "older-id-scheme",
        "foreign-output",
        "foreign-settings",
        "unreadable-settings",
        "other-model",
        "other-max-size",
        "other-confidence",
        "a-shard",
    ],
)
def test_plan_refuses_what_run_refuses_with_the_same_words(
    tmp_path: Path,
    server: BackgroundServer,
    cli: Cli,
    change: Callable[[Path], None],
    flags: list[str],
) -> None:
    make_images(tmp_path / "in", 3)
    output = tmp_path / "out.jsonl"
    assert cli(*run_args(server, output, tmp_path / "in")).code == 0
    change(output)
    before = output.read_bytes()
    model = flags[1] if flags[:1] == ["--model"] else "colors/1"
    rest = flags[2:] if flags[:1] == ["--model"] else flags

    ran = cli(*run_args(server, output, tmp_path / "in", model=model), *rest)
    planned = cli("plan", tmp_path / "in", "--model", model, "--output", output, *rest, "--json")

    assert ran.code == 2, ran.err
    assert planned.code == 2, planned.out
    assert planned.out == ""  # no plan, so nothing counted as done
    assert planned.err.strip() == ran.err.strip()  # refused with run's very message
    assert output.read_bytes() == before


def test_plan_counts_an_output_run_resumes(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "in", 3)
    output = tmp_path / "out.jsonl"
    assert cli(*run_args(server, output, tmp_path / "in")).code == 0
    planned = cli("plan", tmp_path / "in", "--model", "colors/1", "--output", output, "--json")
    assert planned.code == 0, planned.err
    assert orjson.loads(planned.out)["already_done"] == 3
    assert cli(*run_args(server, output, tmp_path / "in")).code == 0
    assert server.stats.requests == 3  # and run agrees: nothing left to send
