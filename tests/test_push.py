"""``batchclassify push``: a run's images into a project on the local server, with their
classes saved as predictions; what the server received is the judge (``stats.dataset``)."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchclassify.server import BackgroundServer

from .conftest import KEY, Cli, MakeServer, make_images, read_rows, run_args


def ledger_lines(output: Path, project: str, tag: str) -> list[dict[str, Any]]:
    path = output.parent / f"{output.name}.push-{project}{tag}.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def ledger_of(output: Path, project: str, server: BackgroundServer) -> list[dict[str, Any]]:
    """The ledger's lines (header first) of a push of ``output`` to ``server``."""
    from batchclassify.commands.push.ledger import ledger_path

    path = ledger_path(output, project, server.url)
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def classified(cli: Cli, make_server: MakeServer, tmp_path: Path) -> tuple[Path, BackgroundServer]:
    """An output of 24 images in six colours, one broken file (an error row) and two URL
    items served by the classifying server."""
    images = tmp_path / "images"
    make_images(images, 24)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    served = tmp_path / "served"
    make_images(served, 2)
    server = make_server(files_dir=served)
    manifest = tmp_path / "urls.txt"
    manifest.write_text(
        "".join(f"{server.url}/_files/{p.name}\n" for p in sorted(served.iterdir()))
    )
    output = tmp_path / "out.jsonl"
    result = cli(*run_args(server, output, images, manifest))
    assert result.code == 1, result.err  # the broken file
    return output, server


def push(cli: Cli, output: Path, server: BackgroundServer, *flags: str | Path) -> Any:
    return cli("push", output, "--project", "pets", "--api-url", server.url, *flags)


def test_push_uploads_each_image_once_and_saves_its_class_as_a_prediction(
    cli: Cli, classified: tuple[Path, BackgroundServer], make_server: MakeServer
) -> None:
    output, classifier = classified
    rows = {row["id"]: row for row in read_rows(output)}
    target = make_server()
    result = push(cli, output, target, "--batch", "night-1", "--tag", "a", "--tag", "b")
    assert result.code == 0, result.err
    log = target.stats.dataset
    stored = log.stored("pets")
    ok = [row for row in rows.values() if row["status"] == "ok"]
    assert len(ok) == 26 and len(stored) == 26 and len(log.uploads) == 26
    by_image = {record.image_id: record for record in stored}
    for row in ok:
        record = next(
            r for r in stored if r.metadata and r.metadata["batchclassify_id"] == row["id"]
        )
        if row["url"] is not None:
            assert (record.source, record.url) == ("url", row["url"])
        else:
            assert record.source == "file" and record.sha256 == sha(row["path"])
            assert record.name == Path(row["path"]).name
        assert (record.split, record.batch, record.tags) == ("train", "night-1", ("a", "b"))
        assert record.metadata is not None and record.metadata["model"] == "colors/1"
        annotation = log.annotated["pets", record.image_id]
        assert annotation.annotation == row["top"] and annotation.name == row["top"]
        assert annotation.prediction and annotation.job_name == "night-1"
    assert len(log.annotations) == 26 and set(log.annotated) == {("pets", i) for i in by_image}
    # The error row was never sent; the key is nowhere a person or a file sees.
    ledger = ledger_of(output, "pets", target)
    text = result.out + result.err + "".join(map(str, ledger))
    assert KEY not in text
    assert "26 uploaded" in result.err and "1 failed rows in the output" in result.err
    # A rerun sends nothing.
    before = sum(log.statuses.values())
    again = push(cli, output, target, "--batch", "night-1", "--tag", "a", "--tag", "b")
    assert again.code == 0 and sum(log.statuses.values()) == before
    assert "26 done by an earlier push: nothing sent" in again.err
    assert classifier.stats.dataset.uploads == []


def test_multilabel_classes_are_saved_as_a_json_list(
    cli: Cli, make_server: MakeServer, tmp_path: Path
) -> None:
    make_images(tmp_path / "images", 6)
    server = make_server()
    output = tmp_path / "multi.jsonl"
    assert (
        cli(*run_args(server, output, tmp_path / "images", model="colors-multilabel/1")).code == 0
    )
    result = push(cli, output, server)
    assert result.code == 0, result.err
    log = server.stats.dataset
    for row in read_rows(output):
        record = next(r for r in log.stored("pets") if r.sha256 == sha(row["path"]))
        annotation = log.annotated["pets", record.image_id]
        if row["predicted_classes"]:
            assert orjson.loads(annotation.annotation) == row["predicted_classes"]
            assert annotation.name == annotation.annotation and annotation.prediction
        else:  # nothing passed the threshold: uploaded for a person to label, no prediction
            pytest.fail(f"expected a class for {row['id']}")


def test_a_file_that_is_no_longer_an_image_is_never_sent(
    cli: Cli, classified: tuple[Path, BackgroundServer], make_server: MakeServer
) -> None:
    output, _ = classified
    victim = next(row for row in read_rows(output) if row["status"] == "ok" and row["path"])
    Path(victim["path"]).write_text("<html>replaced by a web page</html>")
    target = make_server()
    result = push(cli, output, target)
    assert result.code == 1
    names = [record.name for record in target.stats.dataset.uploads]
    assert len(names) == 25 and Path(victim["path"]).name not in names
    failed = [line for line in ledger_of(output, "pets", target) if "failed" in line]
    assert [(f["id"], f["failed"], f["error_type"]) for f in failed] == [
        (victim["id"], "read", "bad_image")
    ]
    assert "not an image" in failed[0]["error"] or "text" in failed[0]["error"]


def test_a_refused_key_stops_the_push_at_once_without_showing_the_key(
    cli: Cli, classified: tuple[Path, BackgroundServer], make_server: MakeServer
) -> None:
    output, _ = classified
    target = make_server(api_key="another-key")
    result = push(cli, output, target, "--concurrency", "2")
    assert result.code == 3
    assert "403" in result.err and "check --api-key" in result.err and KEY not in result.err
    assert sum(target.stats.dataset.statuses.values()) <= 2
    assert all(KEY not in str(line) for line in ledger_of(output, "pets", target))


def test_dry_run_counts_images_bytes_and_credits_and_sends_nothing(
    cli: Cli, classified: tuple[Path, BackgroundServer], make_server: MakeServer
) -> None:
    output, _ = classified
    target = make_server()
    result = push(cli, output, target, "--dry-run")
    assert result.code == 0, result.err
    size = sum(
        Path(row["path"]).stat().st_size
        for row in read_rows(output)
        if row["status"] == "ok" and row["path"]
    )
    assert f"26 images to upload: 24 files, {size:,} bytes" in result.out
    assert "and 2 by URL" in result.out and "upload credits: 0.0026" in result.out
    assert sum(target.stats.dataset.statuses.values()) == 0
    assert not list(output.parent.glob("*.push-*"))


def test_a_rerun_only_annotates_what_was_uploaded_before_a_stop(
    cli: Cli, classified: tuple[Path, BackgroundServer], make_server: MakeServer
) -> None:
    output, _ = classified
    target = make_server()
    # One worker: the first upload succeeds, the annotation after it meets a refused key.
    target.script(200, 401)
    first = push(cli, output, target, "--concurrency", "1")
    assert first.code == 3 and "401" in first.err
    log = target.stats.dataset
    assert len(log.uploads) == 1 and log.annotations == []
    second = push(cli, output, target)
    assert second.code == 0, second.err
    assert len(log.uploads) == 26  # the first image was not uploaded again
    assert Counter(a.image_id for a in log.annotations) == Counter(
        r.image_id for r in log.stored("pets")
    )


def test_an_image_annotated_already_keeps_its_annotation_unless_told(
    cli: Cli, classified: tuple[Path, BackgroundServer], make_server: MakeServer, tmp_path: Path
) -> None:
    output, _ = classified
    target = make_server()
    assert push(cli, output, target).code == 0
    log = target.stats.dataset
    # Another ledger (another machine): uploads are duplicates, annotations already there.
    again = push(cli, output, target, "--ledger", tmp_path / "other.jsonl")
    assert again.code == 0, again.err
    assert len(log.stored("pets")) == 26 and len(log.annotations) == 26
    assert "26 already in the project" in again.err and "26 already annotated" in again.err
    replaced = push(
        cli, output, target, "--ledger", tmp_path / "third.jsonl", "--overwrite-annotations"
    )
    assert replaced.code == 0
    assert len(log.annotations) == 52 and all(a.overwrite for a in log.annotations[26:])


def test_a_failed_row_is_refused_where_rows_become_uploads(tmp_path: Path) -> None:
    from batchclassify.commands.push.options import PushOptions
    from batchclassify.commands.push.selection import _item
    from batchclassify.models import ContradictoryRowError

    from .conftest import sample_failed_row, sample_ok_row

    options = PushOptions(output=tmp_path / "out.jsonl", project="pets")
    assert _item(sample_ok_row("/x/a.png"), options).classes == ("red",)
    with pytest.raises(ContradictoryRowError):
        _item(sample_failed_row("/x/b.png"), options)
