"""The URL table: one aiohttp application with the legacy route (``app.py``'s handlers), the
v1 routes (``v1.py``) and the dataset routes (``dataset.py``), and aiohttp's own errors (404,
405) as ``{"message"}`` bodies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .app import ServerState
from .config import ServerConfig
from .dataset import DatasetRoutes
from .errors import MESSAGES, ApiError, json_response
from .v1 import V1Routes

STATE_KEY = web.AppKey("batchclassify_server_state", ServerState)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count routes, and give aiohttp's own errors (404, 405) ``{"message"}`` bodies."""
    state = request.app[STATE_KEY]
    route = request.match_info.route.name or "unmatched"
    state.stats.routes[route] += 1
    try:
        return await handler(request)
    except ApiError as error:
        return error.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response(
            exc.status,
            {"message": MESSAGES[404] if exc.status == 404 else exc.reason},
            {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")},
        )


def create_app(config: ServerConfig) -> web.Application:
    """The aiohttp application, for embedding or for ``aiohttp.test_utils``."""
    state = ServerState(config)
    app = web.Application(middlewares=[_json_errors], client_max_size=config.max_body_bytes)
    app[STATE_KEY] = state
    app.router.add_get("/", state.info, name="info")
    app.router.add_get("/info", state.info, name="info-alias")
    app.router.add_get("/_stats", state.stats_route, name="stats")
    app.router.add_get("/_files/{name:.+}", state.files, name="files")
    V1Routes(state).add_to(app.router)  # before the legacy route, which would match them too
    app.router.add_post("/{slug}/{version}", state.infer, name="infer")
    DatasetRoutes(state).add_to(app.router)
    app.on_cleanup.append(state.close)
    return app
