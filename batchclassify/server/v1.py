"""The "v1" routes Roboflow's ``inference_sdk`` uses against a self-hosted server.

``InferenceHTTPClient(api_url=...)`` picks its v1 API for any URL that is not Roboflow's
hosted one. Before inferring it asks ``GET /model/registry`` for the model's description and,
if the model is not there, loads it with ``POST /model/add``; then it sends
``POST /infer/classification`` with a JSON body::

    {"model_id": "colors/1", "api_key": "...", "confidence": 0.5,
     "image": {"type": "base64", "value": "..."}}   # or a list of such images

and gets the legacy route's answer back: one object, or a list for a list of images. The
real server (roboflow/inference, ``http_api.py``) shapes these as ``ModelsDescriptions``
(``{"models": [{"model_id", "task_type", "batch_size", "input_height", "input_width"}]}``)
and ``AddModelRequest`` / ``ClearModelRequest``; a body that does not validate is FastAPI's
422 with a ``detail`` list. Image types other than ``base64`` and ``url`` (pickled numpy, PIL)
are refused, as the real server does unless told otherwise.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson
from aiohttp import web

from .app import ServerState, decode_base64
from .errors import ApiError, bad_image, json_response

#: What the registry says of every model here. Both kinds say "classification": that is
#: what the real server's classification models report, and the only task inference_sdk
#: 1.8 routes to /infer/classification.
_TASK_TYPE = "classification"


def _invalid(location: str, message: str, kind: str) -> ApiError:
    """FastAPI's answer to a body that does not validate: 422 and a ``detail`` list."""
    where = ["body", *location.split(".")] if location else ["body"]
    detail = [{"loc": where, "msg": message, "type": kind}]
    return ApiError(422, message, body=orjson.dumps({"detail": detail}))


async def _json_body(request: web.Request, state: ServerState) -> dict[str, Any]:
    raw = await state.read_body(request)
    try:
        body = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError:
        raise _invalid("", "the body is not valid JSON", "json_invalid") from None
    if not isinstance(body, dict):
        raise _invalid("", "the body must be a JSON object", "model_attributes_type")
    return body


def _model_id(body: dict[str, Any]) -> str:
    model_id = body.get("model_id")
    if model_id is None:
        raise _invalid("model_id", "Field required", "missing")
    if not isinstance(model_id, str):
        raise _invalid("model_id", "Input should be a valid string", "string_type")
    return model_id


class V1Routes:
    """The registry of loaded models and the v1 classification route, over one ``ServerState``."""

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._loaded: dict[str, None] = {}  # model ids in the order they were loaded

    def add_to(self, router: web.UrlDispatcher) -> None:
        """Register the routes; before the legacy ``/{slug}/{version}``, which they match."""
        router.add_get("/model/registry", self.registry, name="model-registry")
        router.add_post("/model/add", self.add, name="model-add")
        router.add_post("/model/remove", self.remove, name="model-remove")
        router.add_post("/model/clear", self.clear, name="model-clear")
        router.add_post("/infer/classification", self.infer, name="infer-classification")

    def _descriptions(self) -> web.Response:
        models = [
            {
                "model_id": model_id,
                "task_type": _TASK_TYPE,
                "batch_size": "batch",  # any number of images per request
                "input_height": None,  # any size: the colour model makes its own thumbnail
                "input_width": None,
            }
            for model_id in self._loaded
        ]
        return json_response(200, {"models": models})

    def _load(self, request: web.Request, model_id: str, key: object) -> Literal["single", "multi"]:
        """What loading a model checks on the real server: its id, the key, the model."""
        state = self._state
        state.check_model_id(model_id)
        state.check_key(request, key)
        kind = state.model_kind(model_id)
        self._loaded[model_id] = None
        return kind

    async def registry(self, request: web.Request) -> web.Response:
        return self._descriptions()

    async def add(self, request: web.Request) -> web.Response:
        body = await _json_body(request, self._state)
        self._load(request, _model_id(body), body.get("api_key"))
        return self._descriptions()

    async def remove(self, request: web.Request) -> web.Response:
        body = await _json_body(request, self._state)
        self._loaded.pop(_model_id(body), None)
        return self._descriptions()

    async def clear(self, request: web.Request) -> web.Response:
        self._loaded.clear()
        return self._descriptions()

    async def infer(self, request: web.Request) -> web.StreamResponse:
        return await self._state.counted(request, self._infer)

    async def _infer(self, request: web.Request) -> web.Response:
        """``POST /infer/classification``: like the legacy route, parameters in the body.
        Loads the model if needed, as the real server does."""
        state = self._state
        await state.before_inference(request)
        started = time.perf_counter()
        body = await _json_body(request, state)
        kind = self._load(request, _model_id(body), body.get("api_key"))
        confidence = body.get("confidence")
        threshold = state.threshold(0.4 if confidence is None else confidence)
        orient = body.get("disable_preproc_auto_orient") is not True
        images = body.get("image")
        if images is None:
            raise _invalid("image", "Field required", "missing")
        answers = []
        for n, image in enumerate(images if isinstance(images, list) else [images]):
            data = await self._image_bytes(request, image, f"image.{n}")
            answers.append(await state.answer(request, data, kind, threshold, orient, started))
        return json_response(200, answers if isinstance(images, list) else answers[0])

    async def _image_bytes(self, request: web.Request, image: object, location: str) -> bytes:
        """One ``{"type": ..., "value": ...}`` image of the body, decoded or fetched."""
        if not isinstance(image, dict) or "type" not in image or "value" not in image:
            raise _invalid(
                location, "an image is {'type': 'base64'|'url', 'value': ...}", "missing"
            )
        kind, value = image["type"], image["value"]
        if kind == "base64" and isinstance(value, str):
            return decode_base64(value.encode("ascii", "replace"))
        if kind == "url" and isinstance(value, str):
            return await self._state.image_from_url(request, value)
        if kind in ("base64", "url"):
            raise bad_image(f"the {kind} image's value must be a string")
        raise bad_image(
            f"image type {str(kind)[:40]!r} is not accepted by this server: send 'base64' or 'url'"
        )
