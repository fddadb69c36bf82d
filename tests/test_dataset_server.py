"""The local server's dataset routes, driven by Roboflow's own client (``roboflow.adapters.rfapi``).

``upload_image`` and ``save_annotation`` build their URLs from the module's ``API_URL`` (read
from the environment when the package is imported); pointing that at the local server makes
these tests check the emulation against Roboflow's client, not against ours.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from roboflow.adapters import rfapi

from batchclassify.server import BackgroundServer, ServerConfig

from .conftest import KEY, make_image


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "files"
    make_image(folder / "red.png", "red")
    make_image(folder / "blue.jpg", "blue")
    (folder / "notes.png").write_text("not an image at all")
    return folder


@pytest.fixture
def served(files: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BackgroundServer]:
    with BackgroundServer(ServerConfig(api_key=KEY, files_dir=files)) as running:
        monkeypatch.setattr(rfapi, "API_URL", running.url)
        yield running


def test_upload_answers_success_then_duplicate_by_content(
    served: BackgroundServer, files: Path, tmp_path: Path
) -> None:
    first = rfapi.upload_image(
        KEY,
        "pets",
        str(files / "red.png"),
        split="valid",
        batch_name="night-1",
        tag_names=["batchclassify", "model-colors-1"],
        metadata={"confidence": 0.91, "source_id": "/x/red.png"},
    )
    assert first["success"] is True and isinstance(first["id"], str) and len(first["id"]) == 20
    # The same bytes under another name are the same image: duplicate, with the first id.
    copy = tmp_path / "copy-of-red.png"
    copy.write_bytes((files / "red.png").read_bytes())
    again = rfapi.upload_image(KEY, "pets", str(copy))
    assert again == {"duplicate": True, "id": first["id"]}
    # Another project holds its own images.
    other = rfapi.upload_image(KEY, "other-project", str(copy))
    assert other["success"] is True and other["id"] != first["id"]

    log = served.stats.dataset
    stored = log.stored("pets")
    assert [record.image_id for record in stored] == [first["id"]]
    record = stored[0]
    assert (record.name, record.split, record.batch) == ("red.png", "valid", "night-1")
    assert record.tags == ("batchclassify", "model-colors-1")
    assert record.metadata == {"confidence": 0.91, "source_id": "/x/red.png"}
    assert record.source == "file" and record.url is None
    assert [upload.duplicate for upload in log.uploads] == [False, True, False]


def test_hosted_image_is_uploaded_by_url(served: BackgroundServer) -> None:
    url = f"{served.url}/_files/blue.jpg"
    answer = rfapi.upload_image(
        KEY, "pets", url, hosted_image=True, split="test", metadata={"k": "v"}
    )
    assert answer["success"] is True
    (record,) = served.stats.dataset.stored("pets")
    assert record.source == "url" and record.url == url
    assert (record.name, record.split, record.metadata) == ("blue.jpg", "test", {"k": "v"})


def test_annotation_is_saved_once_as_a_prediction(served: BackgroundServer, files: Path) -> None:
    image_id = rfapi.upload_image(KEY, "pets", str(files / "red.png"))["id"]
    saved = rfapi.save_annotation(
        KEY, "pets", "red", "red", image_id, job_name="night-1", is_prediction=True
    )
    assert saved["success"] is True
    # A second annotation of the same image: Roboflow's client reads the 409 as a warning.
    again = rfapi.save_annotation(KEY, "pets", "blue", "blue", image_id, is_prediction=True)
    assert again == {"warn": "already annotated"}
    log = served.stats.dataset
    assert [(a.annotation, a.prediction, a.job_name) for a in log.annotations] == [
        ("red", True, "night-1")
    ]
    # overwrite=true replaces it.
    labels = json.dumps(["red", "white"])
    replaced = rfapi.save_annotation(KEY, "pets", labels, labels, image_id, overwrite=True)
    assert replaced["success"] is True
    current = log.annotated["pets", image_id]
    assert json.loads(current.annotation) == ["red", "white"] and current.overwrite
    assert current.prediction is False


def test_refusals_reach_roboflows_client_with_their_status(
    served: BackgroundServer, files: Path
) -> None:
    with pytest.raises(rfapi.ImageUploadError) as refused:
        rfapi.upload_image("wrong-key", "pets", str(files / "red.png"))
    assert refused.value.status_code == 403
    with pytest.raises(rfapi.ImageUploadError) as not_image:
        rfapi.upload_image(KEY, "pets", str(files / "notes.png"))
    assert not_image.value.status_code == 400 and "not an image" in str(not_image.value.message)
    with pytest.raises(rfapi.AnnotationSaveError) as unknown:
        rfapi.save_annotation(KEY, "pets", "red", "red", "NoSuchImage0000000000")
    assert unknown.value.status_code == 404
    assert served.stats.dataset.uploads == []
    assert KEY not in json.dumps(served.stats.as_dict(), default=str)


def test_fault_knobs_apply_to_the_dataset_routes(served: BackgroundServer, files: Path) -> None:
    served.script(500, 429)
    with pytest.raises(rfapi.ImageUploadError) as failed:
        rfapi.upload_image(KEY, "pets", str(files / "red.png"))
    assert failed.value.status_code == 500
    with pytest.raises(rfapi.ImageUploadError) as limited:
        rfapi.upload_image(KEY, "pets", str(files / "red.png"))
    assert limited.value.status_code == 429
    assert rfapi.upload_image(KEY, "pets", str(files / "red.png"))["success"] is True
    image_id = served.stats.dataset.uploads[0].image_id
    served.script(503)
    with pytest.raises(rfapi.AnnotationSaveError) as unavailable:
        rfapi.save_annotation(KEY, "pets", "red", "red", image_id, is_prediction=True)
    assert unavailable.value.status_code == 503
    assert served.stats.dataset.annotations == []
    assert dict(served.stats.dataset.statuses) == {500: 1, 429: 1, 200: 1, 503: 1}
