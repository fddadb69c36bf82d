"""HTTP to Roboflow's dataset API: upload an image, save its classification as a prediction.

The routes, parameters, bodies and answers are those of Roboflow's own ``roboflow`` package
(``roboflow/adapters/rfapi.py``: ``upload_image``, ``save_annotation``):

- upload: ``POST {api}/dataset/{project}/upload?api_key=&batch=&tag=...`` with a multipart
  body of ``name``, ``split``, ``file`` and an optional ``metadata`` (JSON text); a URL item
  by ``&name=&split=&image=<url>`` (and ``metadata``) with no body. A 200 with ``success`` or
  ``duplicate`` and the image's ``id`` is an upload (a duplicate is the image the project
  already holds: a success); anything else a failure, its ``error.message`` or ``message``.
- annotate: ``POST {api}/dataset/{project}/annotate/{id}?api_key=&name=&jobName=
  &prediction=true[&overwrite=true]`` with ``{"annotationFile": ..., "labelmap": null}``; the
  class, or a multi-label image's classes as a JSON list in a string (as Roboflow's uploader
  sends a ``_classes.csv`` row), in both ``name`` and ``annotationFile``. 200 ``success``; a
  409 saying "already annotated" means the image has one.

Requests go through the classification client's ``Transport`` (``transport.py``): its own
exceptions become ``RetryableError`` there, once, with no URL or key in their text. Answers
become the same errors as a classification's: retryable (429, 5xx), fatal for the job
(401/402/403/404/423), or the item's own (400, 413, another 4xx), the key cut out of them.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson
from yarl import URL

from ..config import HttpConfig
from ..error_types import ErrorType
from ..errors import ItemError
from .client import TransportHolder, _server_message, answer_error
from .redaction import redact
from .transport import Transport

#: Roboflow's REST API (the ``roboflow`` package's ``API_URL``).
DEFAULT_DATASET_API = "https://api.roboflow.com"

_FATAL_HINTS = {
    401: "the API key was rejected: check --api-key or ROBOFLOW_API_KEY",
    402: "the workspace is out of credits: add credits in Roboflow, then rerun to resume",
    403: "the API key was refused (403): check --api-key or ROBOFLOW_API_KEY and that the "
    "key belongs to the project's workspace",
    404: "not found: check --project (the project's URL slug, without the workspace) and --api-url",
    423: "usage of this workspace is paused: resume it in Roboflow, then rerun to resume",
}


class Uploaded(NamedTuple):
    """An upload's answer: the image's id in the project, and whether it was there already."""

    image_id: str
    duplicate: bool


def dataset_message(body: bytes) -> str:
    """The message of a dataset API error: ``error.message``, ``error``, or ``message``."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:500]
        if isinstance(error, str):
            return error[:500]
    return _server_message(body)


def annotation_text(classes: Sequence[str], *, multilabel: bool) -> str:
    """What ``annotationFile`` (and ``name``) carry: the class, or the classes as JSON."""
    if multilabel:
        return orjson.dumps(list(classes)).decode()
    if len(classes) != 1:
        raise ValueError(f"a single-label annotation holds one class, not {list(classes)}")
    return classes[0]


def multipart(fields: Sequence[tuple[str, str]], file: tuple[str, bytes, str]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body: text ``fields``, then ``file`` (name, bytes, type).
    Returns the body and its Content-Type. Quotes and line breaks in a file name are
    percent-escaped, as browsers do (the HTML standard's rule)."""
    boundary = secrets.token_hex(16)
    dash = f"--{boundary}".encode()
    parts: list[bytes] = []
    for key, value in fields:
        parts += [
            dash,
            b"\r\n",
            f'Content-Disposition: form-data; name="{key}"\r\n\r\n'.encode(),
            value.encode("utf-8"),
            b"\r\n",
        ]
    filename, data, content_type = file
    quoted = filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    parts += [
        dash,
        b"\r\n",
        f'Content-Disposition: form-data; name="file"; filename="{quoted}"\r\n'.encode(),
        f"Content-Type: {content_type}\r\n\r\n".encode(),
        data,
        b"\r\n",
        dash,
        b"--\r\n",
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class DatasetClient(TransportHolder):
    """Uploads images to one project and saves their annotations; an async context manager
    holding one transport (by default ``http1.Http1Transport``'s pool) for the push."""

    def __init__(
        self, config: HttpConfig, *, project: str, transport: Transport | None = None
    ) -> None:
        [api_url] = config.servers  # push talks to one API
        super().__init__(config, api_url, transport)
        base = api_url.rstrip("/")
        self._upload = URL(f"{base}/dataset/{project}/upload")
        self._annotate = f"{base}/dataset/{project}/annotate/"
        # The key travels in the query, as Roboflow's client sends it to this API.
        self._key: dict[str, str] = {"api_key": config.api_key} if config.api_key else {}

    async def upload_file(
        self,
        data: bytes,
        *,
        name: str,
        split: str,
        content_type: str,
        batch: str | None,
        tags: Sequence[str],
        metadata: Mapping[str, Any] | None,
    ) -> Uploaded:
        """Upload an image's bytes as ``name`` into ``split``."""
        fields = [("name", name), ("split", split)]
        if metadata is not None:
            fields.append(("metadata", orjson.dumps(dict(metadata)).decode()))
        body, form_type = multipart(fields, (name, data, content_type))
        url = self._upload.with_query(self._query(batch=batch, tags=tags))
        return self._uploaded(*await self._send(url, body, {"Content-Type": form_type}))

    async def upload_url(
        self,
        image_url: str,
        *,
        name: str,
        split: str,
        batch: str | None,
        tags: Sequence[str],
        metadata: Mapping[str, Any] | None,
    ) -> Uploaded:
        """Have the API fetch the image at ``image_url`` itself (``image=``, no body)."""
        extra = {"name": name, "split": split, "image": image_url}
        if metadata is not None:
            extra["metadata"] = orjson.dumps(dict(metadata)).decode()
        url = self._upload.with_query(self._query(batch=batch, tags=tags, **extra))
        return self._uploaded(*await self._send(url, b"", {}))

    async def annotate(
        self,
        image_id: str,
        classes: Sequence[str],
        *,
        multilabel: bool,
        job_name: str | None,
        prediction: bool = True,
        overwrite: bool = False,
    ) -> bool:
        """Save the image's classes; ``True`` if saved, ``False`` if it was annotated
        already (a 409 "already annotated": it has one, so nothing is lost)."""
        text = annotation_text(classes, multilabel=multilabel)
        extra = {"name": text}
        if job_name:
            extra["jobName"] = job_name
        if prediction:
            extra["prediction"] = "true"
        if overwrite:
            extra["overwrite"] = "true"
        url = URL(self._annotate + image_id).with_query(self._query(**extra))
        body = orjson.dumps({"annotationFile": text, "labelmap": None})
        status, payload, retry_after = await self._send(
            url, body, {"Content-Type": "application/json"}
        )
        if status == 409 and "already annotated" in dataset_message(payload):
            return False
        parsed = self._json(status, payload, retry_after)
        if parsed.get("error") or not parsed.get("success"):
            raise ItemError(
                "the API answered 200 without saving the annotation: "
                + redact(dataset_message(payload), self._config.api_key),
                kind=ErrorType.BAD_RESPONSE,
                http_status=200,
            )
        return True

    def _query(
        self, *, batch: str | None = None, tags: Sequence[str] = (), **extra: str
    ) -> list[tuple[str, str]]:
        query = list(self._key.items()) + list(extra.items())
        if batch:
            query.append(("batch", batch))
        query += [("tag", tag) for tag in tags]
        return query

    async def _send(
        self, url: URL, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, bytes, str | None]:
        transport = self._transport
        assert transport is not None, "use DatasetClient as an async context manager"
        status, answer_headers, payload, _ = await transport.send(url, body, headers)
        return status, payload, answer_headers.get("Retry-After")

    def _uploaded(self, status: int, payload: bytes, retry_after: str | None) -> Uploaded:
        parsed = self._json(status, payload, retry_after)
        image_id = parsed.get("id")
        if (parsed.get("success") or parsed.get("duplicate")) and isinstance(image_id, str):
            return Uploaded(image_id, duplicate=not parsed.get("success"))
        raise ItemError(
            "the API answered 200 without an uploaded image's id: "
            + redact(dataset_message(payload), self._config.api_key),
            kind=ErrorType.BAD_RESPONSE,
            http_status=200,
        )

    def _json(self, status: int, payload: bytes, retry_after: str | None) -> dict[str, Any]:
        """A 200's JSON object; any other status raises its error."""
        if status != 200:
            raise self.error_for(status, payload, retry_after)
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ItemError(
                "the API answered 200 with something other than a JSON object: "
                + redact(_server_message(payload), self._config.api_key),
                kind=ErrorType.BAD_RESPONSE,
                http_status=200,
            )
        return parsed

    def error_for(self, status: int, payload: bytes, retry_after: str | None) -> Exception:
        """The error a non-200 answer stands for (the key cut out of its message)."""
        message = redact(dataset_message(payload), self._config.api_key)
        return answer_error(status, message, retry_after, fatal=_FATAL_HINTS)
