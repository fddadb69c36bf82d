"""The dataset routes Roboflow's ``roboflow`` package uploads images and saves annotations by.

As ``roboflow/adapters/rfapi.py`` (``upload_image``, ``save_annotation``) sends them:

- ``POST /dataset/{project}/upload?api_key=&batch=&tag=&tag=`` with a multipart body of
  ``name``, ``split``, ``file`` and an optional ``metadata`` (a JSON object as text); or, for
  a hosted image, ``&name=&split=&image=<URL>`` (``metadata`` in the query too) and no body.
  200 ``{"success": true, "id": ...}``, or ``{"duplicate": true, "id": ...}`` when the
  project already holds the same bytes (the id it has them under).
- ``POST /dataset/{project}/annotate/{image_id}?api_key=&name=&jobName=[&prediction=true]
  [&overwrite=true]`` with the JSON body ``{"annotationFile": ..., "labelmap": ...}``: a class,
  or a multi-label image's classes as a JSON list in a string. 200 ``{"success": true}``;
  409 whose ``error.message`` says "already annotated" when the image has an annotation and
  ``overwrite`` is not set; 404 for an image the project does not hold.

The key is checked as on the classification routes, and the fault knobs apply (scripted
answers, random failures, the rate limit, latency). What was received is kept in
``ServerStats.dataset`` (``stats.DatasetLog``) for tests to read.
"""

from __future__ import annotations

import hashlib
import io
import os
import string
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from .app import ServerState
from .errors import ApiError, json_response
from .stats import AnnotationRecord, DatasetLog, UploadRecord

SPLITS = frozenset({"train", "valid", "test"})
_ID_ALPHABET = string.ascii_letters + string.digits
#: Roboflow's image ids are 20 letters and digits.
_ID_LENGTH = 20


def _dataset_error(status: int, message: str) -> ApiError:
    """An error as Roboflow's dataset API sends it: ``{"error": {"message": ...}}``."""
    return ApiError(status, message, body=orjson.dumps({"error": {"message": message}}))


class DatasetRoutes:
    """Upload and annotate, over one ``ServerState``; what they hold is ``stats.dataset``."""

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self.log: DatasetLog = state.stats.dataset

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post("/dataset/{project}/upload", self.upload, name="dataset-upload")
        router.add_post(
            "/dataset/{project}/annotate/{image_id}", self.annotate, name="dataset-annotate"
        )

    async def upload(self, request: web.Request) -> web.StreamResponse:
        return await self._counted(request, self._upload)

    async def annotate(self, request: web.Request) -> web.StreamResponse:
        return await self._counted(request, self._annotate)

    async def _counted(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> web.StreamResponse:
        """Run a handler; its answer (a fault's too) counted in ``log.statuses``."""
        record = self._state.record(request)
        try:
            response = await handler(request)
        except ApiError as error:
            response = error.response()
        record.status = response.status
        self.log.statuses[response.status] += 1
        return response

    # -- upload ----------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        state = self._state
        await state.before_inference(request)
        state.check_key(request, None)
        project = request.match_info["project"]
        query = request.query
        url = query.get("image")
        source: Literal["file", "url"]
        if url is not None:
            data = await state.image_from_url(request, url)
            fields: dict[str, str] = {
                "name": query.get("name") or os.path.basename(urlsplit(url).path),
                "split": query.get("split", "train"),
            }
            if "metadata" in query:
                fields["metadata"] = query["metadata"]
            source = "url"
        else:
            data, fields = await self._multipart(request)
            source = "file"
        split = fields.get("split", "train")
        if split not in SPLITS:
            raise _dataset_error(400, f"split must be train, valid or test, not {split[:40]!r}")
        metadata = _metadata(fields.get("metadata"))
        _check_image(data)
        digest = hashlib.sha256(data).hexdigest()
        held = self.log.images.get((project, digest))
        image_id = held.image_id if held is not None else self._new_id()
        record = UploadRecord(
            project=project,
            image_id=image_id,
            name=fields.get("name") or "",
            split=split,
            batch=query.get("batch"),
            tags=tuple(query.getall("tag", ())),
            metadata=metadata,
            source=source,
            url=url,
            sha256=digest,
            size=len(data),
            duplicate=held is not None,
        )
        self.log.uploads.append(record)
        if held is not None:
            return json_response(200, {"duplicate": True, "id": image_id})
        self.log.images[project, digest] = record
        self.log.by_id[project, image_id] = record
        return json_response(200, {"success": True, "id": image_id})

    async def _multipart(self, request: web.Request) -> tuple[bytes, dict[str, str]]:
        """The ``file`` part's bytes and the text fields of a multipart upload."""
        if request.content_type != "multipart/form-data":
            raise _dataset_error(
                400, "send the image as multipart/form-data with a 'file' part, or as image=URL"
            )
        limit = self._state.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _dataset_error(413, f"Request payload too large: over {limit} bytes.")
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            raise _dataset_error(413, f"Request payload too large: over {limit} bytes.") from None
        self._state.stats.bytes_received += request.content_length or 0
        part = form.get("file")
        if not isinstance(part, web.FileField):
            raise _dataset_error(400, "the multipart body has no part named 'file'")
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        return part.file.read(), fields

    def _new_id(self) -> str:
        rng = self._state.rng
        return "".join(rng.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))

    # -- annotate --------------------------------------------------------------------------

    async def _annotate(self, request: web.Request) -> web.Response:
        state = self._state
        await state.before_inference(request)
        state.check_key(request, None)
        project = request.match_info["project"]
        image_id = request.match_info["image_id"]
        query = request.query
        if (project, image_id) not in self.log.by_id:
            raise _dataset_error(404, f"image {image_id[:40]} not found in project {project}")
        name = query.get("name")
        if not name:
            raise _dataset_error(400, "name is required (the annotation's name)")
        body = await _json_object(request, state)
        annotation = body.get("annotationFile")
        if not isinstance(annotation, str) or not annotation:
            raise _dataset_error(400, "annotationFile must be a non-empty string")
        overwrite = query.get("overwrite") == "true"
        if (project, image_id) in self.log.annotated and not overwrite:
            raise _dataset_error(
                409, f"Image {image_id} is already annotated; pass overwrite=true to replace it"
            )
        record = AnnotationRecord(
            project=project,
            image_id=image_id,
            name=name,
            annotation=annotation,
            labelmap=body.get("labelmap"),
            job_name=query.get("jobName"),
            prediction=query.get("prediction") == "true",
            overwrite=overwrite,
        )
        self.log.annotations.append(record)
        self.log.annotated[project, image_id] = record
        return json_response(200, {"success": True})


async def _json_object(request: web.Request, state: ServerState) -> dict[str, Any]:
    raw = await state.read_body(request)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _dataset_error(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _dataset_error(400, "the body must be a JSON object")
    return body


def _metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _dataset_error(400, "metadata must be a JSON object") from None
    if not isinstance(value, dict):
        raise _dataset_error(400, "metadata must be a JSON object")
    return value


def _check_image(data: bytes) -> None:
    """400 unless ``data`` opens as an image (its header: nothing is decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)):
            pass
    except (UnidentifiedImageError, OSError, ValueError):
        raise _dataset_error(400, "Invalid image: the file is not an image") from None
