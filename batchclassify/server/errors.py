"""Error answers the way the real servers send them: messages, ``{"message": ...}`` bodies."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

MESSAGES = {
    400: "Bad request.",
    401: "Unauthorized access to roboflow API - check API key.",
    402: "Not enough credits to perform this request.",
    403: "Forbidden",
    404: "Requested Roboflow resource not found. Make sure that workspace, project or model "
    "you referred in request exists.",
    413: "Request payload too large.",
    423: "Usage of this workspace is paused.",
    429: "Too many requests: rate limit exceeded.",
    500: "Internal error.",
    502: "Internal error. Request to Roboflow API failed.",
    503: "Model is temporarily not ready - retry request.",
    504: "Timeout when attempting to connect to Roboflow API.",
    507: "Model loading is restricted on this server.",
}
MISSING_KEY = (
    "Required Roboflow API key is missing. Visit "
    "https://docs.roboflow.com/api-reference/authentication#retrieve-an-api-key to learn how "
    "to retrieve one."
)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.headers, self.body = status, message, headers, body

    def response(self) -> web.Response:
        if self.body is None:
            return json_response(self.status, {"message": self.message}, self.headers)
        headers = dict(self.headers or {})
        if not any(name.lower() == "content-type" for name in headers):
            html = self.body.lstrip()[:1] == b"<"
            headers["Content-Type"] = "text/html; charset=utf-8" if html else "application/json"
        return web.Response(status=self.status, body=self.body, headers=headers)


def json_response(
    status: int, payload: object, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(payload),
        content_type="application/json",
        headers=headers,
    )


def credits_exceeded(code: str = "CreditsExceededError") -> ApiError:
    """The 402 of Roboflow's inference server (``error_handlers.py``: ``CreditsExceededError``),
    with ``error`` saying which limit: ``credit_cap_exceeded`` for a workspace's cap."""
    body = {"message": MESSAGES[402], "error_type": "CreditsExceededError"}
    if code != "CreditsExceededError":
        body["error"] = code
    return ApiError(402, MESSAGES[402], body=orjson.dumps(body))


def bad_image(cause: str) -> ApiError:
    return ApiError(400, f"Could not load input image. Cause: {cause}")
