"""Roboflow's own client, ``inference_sdk.InferenceHTTPClient``, against the local server.

The README says it works against ``batchclassify serve``. For a URL that is not Roboflow's
hosted API the client uses its v1 API by default (model registry, ``/model/add``,
``POST /infer/classification`` with a JSON body), and the legacy route after
``select_api_v0()``; both are tested here, single- and multi-label, with every kind of image
the client accepts. The v1 routes' own answers are checked over plain HTTP too.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from batchclassify.server import BackgroundServer, Fault, ServerConfig

pytest.importorskip("inference_sdk")
from inference_sdk import InferenceConfiguration, InferenceHTTPClient
from inference_sdk.http.errors import HTTPCallErrorError

IMAGES = Path(__file__).resolve().parent.parent / "sample_manifests" / "images"
KEY = "sdk-test-key-77"

pytestmark = pytest.mark.filterwarnings("ignore::Warning:inference_sdk")


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer(ServerConfig(api_key=KEY, files_dir=IMAGES)) as running:
        yield running


@pytest.fixture(params=["v1 (default)", "v0"])
def client(request: pytest.FixtureRequest, server: BackgroundServer) -> InferenceHTTPClient:
    """The client as a user builds it: its default mode, or after ``select_api_v0()``."""
    sdk = InferenceHTTPClient(api_url=server.url, api_key=KEY)
    if request.param == "v0":
        sdk.select_api_v0()
    return sdk


def _images() -> dict[str, Any]:
    """One red image as every kind of input the client takes."""
    from PIL import Image

    path = IMAGES / "red.jpg"
    return {
        "path": str(path),
        "base64": base64.b64encode(path.read_bytes()).decode(),
        "pil": Image.open(path).convert("RGB"),
    }


@pytest.mark.parametrize("kind", ["path", "base64", "pil", "url"])
def test_single_label_from_every_kind_of_image(
    client: InferenceHTTPClient, server: BackgroundServer, kind: str
) -> None:
    image = f"{server.url}/_files/red.jpg" if kind == "url" else _images()[kind]

    result = client.infer(image, model_id="colors/1")

    assert isinstance(result, dict)
    assert result["top"] == "red" and result["confidence"] > 0.9
    assert result["predictions"][0]["class"] == "red"
    assert result["image"] == {"width": 320, "height": 240}


def test_multi_label(client: InferenceHTTPClient, server: BackgroundServer) -> None:
    from_path = client.infer(str(IMAGES / "more" / "red-blue.png"), model_id="colors-multilabel/1")
    from_url = client.infer(
        f"{server.url}/_files/more/red-blue.png", model_id="colors-multilabel/1"
    )

    for result in (from_path, from_url):
        assert isinstance(result, dict)
        assert set(result["predicted_classes"]) == {"red", "blue"}
        assert result["predictions"]["red"]["confidence"] > 0.9


def test_a_list_of_images_in_batches_with_a_threshold(client: InferenceHTTPClient) -> None:
    client.configure(
        InferenceConfiguration(
            max_batch_size=2, confidence_threshold=0.2, api_key_transport="header"
        )
    )
    names = ["red.jpg", "more/green.JPEG", "more/blue.png"]

    results = client.infer([str(IMAGES / name) for name in names], model_id="colors/1")

    assert isinstance(results, list)
    assert [r["top"] for r in results] == ["red", "green", "blue"]
    assert all(p["confidence"] >= 0.2 for r in results for p in r["predictions"])


def test_errors_reach_the_client_with_the_real_servers_status(server: BackgroundServer) -> None:
    for sdk in (
        InferenceHTTPClient(api_url=server.url, api_key=KEY),
        InferenceHTTPClient(api_url=server.url, api_key=KEY).select_api_v0(),
    ):
        with pytest.raises(HTTPCallErrorError) as unknown:
            sdk.infer(str(IMAGES / "red.jpg"), model_id="no-such-model/1")
        assert unknown.value.status_code == 404
    wrong_key = InferenceHTTPClient(api_url=server.url, api_key="not-the-key")
    with pytest.raises(HTTPCallErrorError) as refused:
        wrong_key.infer(str(IMAGES / "red.jpg"), model_id="colors/1")
    assert refused.value.status_code == 403
    assert KEY not in str(refused.value)


def test_model_registry_load_unload_and_async_infer(server: BackgroundServer) -> None:
    sdk = InferenceHTTPClient(api_url=server.url, api_key=KEY)
    sdk.unload_all_models()
    assert sdk.list_loaded_models().models == []

    loaded = sdk.load_model("colors/3", set_as_default=True)
    [described] = loaded.models
    assert (described.model_id, described.task_type) == ("colors/3", "classification")
    assert sdk.selected_model == "colors/3"

    result = asyncio.run(sdk.infer_async(str(IMAGES / "more" / "blue.png")))
    assert isinstance(result, dict) and result["top"] == "blue"

    assert sdk.unload_model("colors/3").models == []
    assert sdk.unload_all_models().models == []


# -- the v1 routes over plain HTTP -----------------------------------------------------------


async def _post(url: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body, **kwargs) as r:
        return r.status, await r.json(content_type=None)


def _image(name: str) -> dict[str, str]:
    return {"type": "base64", "value": base64.b64encode((IMAGES / name).read_bytes()).decode()}


def test_v1_route_answers_like_the_legacy_route(server: BackgroundServer) -> None:
    url = f"{server.url}/infer/classification"

    status, one = asyncio.run(
        _post(url, {"model_id": "colors/1", "api_key": KEY, "image": _image("red.jpg")})
    )
    assert status == 200 and one["top"] == "red" and "inference_id" in one

    body = {
        "model_id": "colors/1",
        "confidence": 0.5,
        "image": [
            _image("more/green.JPEG"),
            {"type": "url", "value": f"{server.url}/_files/blue.JPG"},
        ],
    }
    status, many = asyncio.run(_post(url, body, headers={"Authorization": f"Bearer {KEY}"}))
    assert status == 200 and [r["top"] for r in many] == ["green", "blue"]
    assert all(p["confidence"] >= 0.5 for r in many for p in r["predictions"])


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"api_key": KEY, "image": _image("red.jpg")}, 422, "model_id"),
        ("not an object", 422, "JSON object"),
        ({"model_id": "colors/1", "api_key": KEY}, 422, "image"),
        ({"model_id": "colors/1", "image": _image("red.jpg")}, 400, "API key is missing"),
        ({"model_id": "colors/1", "api_key": "nope", "image": _image("red.jpg")}, 403, "Forbidden"),
        (
            {"model_id": "colors/0", "api_key": KEY, "image": _image("red.jpg")},
            400,
            "Invalid Model ID",
        ),
        ({"model_id": "paused/1", "api_key": KEY, "image": _image("red.jpg")}, 423, "paused"),
        (
            {"model_id": "colors/1", "api_key": KEY, "image": {"type": "numpy", "value": "x"}},
            400,
            "'numpy' is not accepted",
        ),
        (
            {"model_id": "colors/1", "api_key": KEY, "image": {"type": "base64", "value": "%%"}},
            400,
            "Could not load input image",
        ),
    ],
)
def test_v1_route_refuses_bad_requests_as_the_real_server(
    server: BackgroundServer, body: Any, status: int, says: str
) -> None:
    got, answer = asyncio.run(_post(f"{server.url}/infer/classification", body))
    assert got == status
    assert says in str(answer)


def test_v1_route_goes_through_the_fault_knobs(server: BackgroundServer) -> None:
    server.script(Fault(status=503, headers={"Retry-After": "1"}))
    body = {"model_id": "colors/1", "api_key": KEY, "image": _image("red.jpg")}

    first = asyncio.run(_post(f"{server.url}/infer/classification", body))
    second = asyncio.run(_post(f"{server.url}/infer/classification", body))

    assert first[0] == 503 and second[0] == 200
