"""A push killed with kill -9 partway (some 140 ledger events in), against a server failing
5% of requests, then rerun: every image stored once and annotated once, as the server
records it; a third run sends nothing."""

from __future__ import annotations

import hashlib
import signal
from collections import Counter
from pathlib import Path

import orjson
import pytest

from batchclassify.commands.push.ledger import ledger_path

from .conftest import (
    KEY,
    Cli,
    MakeServer,
    make_images,
    read_rows,
    run_args,
    start_cli,
    wait_for_job,
)

IMAGES = 280
URLS = 20


@pytest.mark.slow
def test_push_killed_halfway_resumes_without_sending_anything_twice(
    cli: Cli, make_server: MakeServer, tmp_path: Path
) -> None:
    make_images(tmp_path / "images", IMAGES)
    served = tmp_path / "served"
    make_images(served, URLS)
    classifier = make_server(files_dir=served)
    manifest = tmp_path / "urls.txt"
    manifest.write_text(
        "".join(f"{classifier.url}/_files/{p.name}\n" for p in sorted(served.iterdir()))
    )
    output = tmp_path / "out.jsonl"
    made = cli(
        *run_args(classifier, output, tmp_path / "images", manifest, model="colors-multilabel/1")
    )
    assert made.code == 0, made.err
    rows = {row["id"]: row for row in read_rows(output)}
    assert len(rows) == IMAGES + URLS

    target = make_server(error_rate=0.05, latency=0.02, seed=11)
    ledger = ledger_path(output, "farm", target.url)
    args = ["push", str(output), "--project", "farm", "--api-url", target.url, "-c", "4"]
    process = start_cli(args)

    def partway() -> bool:
        return ledger.exists() and ledger.read_bytes().count(b"\n") >= IMAGES // 2

    wait_for_job(partway, process)
    process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    log = target.stats.dataset
    assert 0 < len(log.annotations) < len(rows)

    rerun = cli(*args)
    assert rerun.code == 0, rerun.err
    assert KEY not in err + rerun.out + rerun.err + ledger.read_text()

    stored = log.stored("farm")
    assert len(stored) == len(rows)  # each image once: the server keeps one per content
    # Upload requests repeated only for answers lost in the kill (at most one per worker).
    assert sum(upload.duplicate for upload in log.uploads) <= 4
    assert Counter(a.image_id for a in log.annotations) == Counter(
        {record.image_id: 1 for record in stored}
    )
    by_id = {record.metadata["batchclassify_id"]: record for record in stored if record.metadata}
    assert set(by_id) == set(rows)
    for item_id, row in rows.items():
        record = by_id[item_id]
        if row["url"] is not None:
            assert (record.source, record.url) == ("url", row["url"])
        else:
            assert record.sha256 == hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest()
        annotation = log.annotated["farm", record.image_id]
        assert annotation.prediction
        assert orjson.loads(annotation.annotation) == row["predicted_classes"]
    assert log.statuses[500] > 0  # the failures did happen, and were retried

    before = sum(log.statuses.values())
    third = cli(*args)
    assert third.code == 0 and sum(log.statuses.values()) == before
