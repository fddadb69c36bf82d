"""A local Roboflow-compatible classification server: a real colour model plus fault knobs.

It speaks the legacy route ``POST /{slug}/{version}`` as Roboflow's hosted API does (base64,
multipart and ``image=`` URL inputs; ``api_key`` query or Bearer header; the real servers'
status codes and ``{"message": ...}`` bodies), and the v1 routes ``inference_sdk`` uses by
default for a self-hosted URL (``v1.py``: model registry, ``POST /infer/classification``);
docs/local-server.md lists what it serves.
The tests start it in-process on port 0, ``--api-url local`` embeds it, ``batchclassify
serve`` and ``python -m batchclassify.server`` run it standalone (the latter for benchmarks,
with every knob as a flag).

Models: ``colors/N`` (single-label: softmax over the mean colour's distance to each class) and
``colors-multilabel/N`` (per class, the share of thumbnail pixels nearest to it). Slugs
``paused`` and ``no-credits`` always answer 423 and 402; any other slug is a 404.

Faults, all off by default (``ServerConfig``): fixed or long-tailed latency, a rate limit
answering 429 with ``Retry-After``, random 500s, dropped and hung connections (seeded), an
uplink of ``upload_mbps`` shared by all uploads (loopback has none, so client-side downscaling
would show no gain). At runtime, on a ``RunningServer`` or ``BackgroundServer``:

- ``script(503, "drop", 200, Fault(status=429, headers={"Retry-After": "2"}))``: the next
  inference requests answer these, in order (``200`` = answer normally, ``"drop"`` = close the
  connection unanswered, ``"hang"`` = never answer); ``fail_next(n, status, headers)`` is the
  short form. Scripted answers come before the rate limit and random faults.
  ``Fault(status=200, body=b"<html>...")`` answers that body as is: malformed answers.
- ``fail_image(image_bytes_or_url, status, times=None)``: every request for that image (its
  decoded bytes, or its ``image=`` URL) gets that answer.
- ``set_down(True)`` stops listening and closes every open connection (clients see
  "connection refused"); the port stays bound to the server, so no other program takes it
  meanwhile; ``set_down(False)`` listens again on the same port.

``stats`` counts inference requests per status, routes, peak concurrency and keeps the last
requests' query keys and header names, never the API key itself; ``GET /_stats`` serves it.
"""

from __future__ import annotations

from .config import ServerConfig, flag_message
from .faults import (
    Fault,
    FaultSpec,
    SlidingWindowLimiter,
    Uplink,
    image_key,
    longtail_latency,
)
from .model import CLASSES, MODELS
from .routes import create_app
from .running import (
    BackgroundServer,
    ListenError,
    RunningServer,
    check_port,
    serve_forever,
    start_server,
)
from .stats import RequestRecord, ServerStats

__all__ = [
    "CLASSES",
    "MODELS",
    "BackgroundServer",
    "Fault",
    "FaultSpec",
    "ListenError",
    "RequestRecord",
    "RunningServer",
    "ServerConfig",
    "ServerStats",
    "SlidingWindowLimiter",
    "Uplink",
    "check_port",
    "create_app",
    "flag_message",
    "image_key",
    "longtail_latency",
    "serve_forever",
    "start_server",
]
