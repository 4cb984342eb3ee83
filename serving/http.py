"""The HTTP side that is not a route: the body cap and request metrics (ASGI middleware), the API key,
and the API docs served offline.

/docs (Swagger UI) and /redoc (ReDoc) load their JavaScript and CSS from this app, out of the
`fastapi-offline` package's static folder: FastAPI's defaults fetch them from a CDN, so a server with no
internet (and a browser behind a firewall) would render a blank page.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from pathlib import Path
from types import SimpleNamespace

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse

from serving import errors
from serving.errors import APIError

MAX_BODY_BYTES = 65_536  # until the app's settings say otherwise (Limits.max_body_bytes)

# An ingress replica's settings (the service, the API key's hash, the body cap). Serve serves a frozen
# copy of the FastAPI app made when the ingress class is decorated, not this module's object, so what the
# replica sets at start lives here, in the module, for whichever copy serves; apps made in process (the
# route tests) keep theirs in their own app.state.
REPLICA = SimpleNamespace()


def settings(app) -> SimpleNamespace:
    """Where the app serving a request keeps its service, key_hash and max_body_bytes."""
    state = getattr(app, "state", None)
    return state if state is not None and hasattr(state, "service") else REPLICA


def put(app, **values) -> None:
    """Sets an app's settings, on the app and as the replica's."""
    for k, v in values.items():
        setattr(app.state, k, v)
        setattr(REPLICA, k, v)


class _HttpMetrics:
    """Requests by route and status, and latency, for every request (4xx before a route ran included)."""

    def __init__(self):
        from ray.util import metrics

        self.requests = metrics.Counter("qlora_serve_requests", "HTTP requests by route and status",
                                        tag_keys=("route", "status"))
        self.latency = metrics.Histogram("qlora_serve_latency_seconds", "Time to the response's start",
                                         tag_keys=("route",), boundaries=[0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60])


class CapBodyAndCount:
    """ASGI middleware: 413 for a body over the cap (`app.state.max_body_bytes`), by Content-Length or by
    what arrives (chunked), and every request counted by route and status, with its latency. Plain ASGI
    rather than `@app.middleware("http")`: Starlette runs that kind in an extra task with memory streams,
    which cost 1.1-1.4 ms a request on 2 cores (a bare Serve app's round trip, 150 requests, 7.96 -> 9.40 ms)."""

    def __init__(self, app):
        self.app = app
        self.metrics: _HttpMetrics | None = None  # made at the first request, inside the replica

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status, took = [500], [None]  # 500: what the client gets if the app raises before answering

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status[0], took[0] = message["status"], time.perf_counter() - start
            await send(message)

        try:
            if await self._capped(scope, receive, send_counted) == "gone":
                status[0] = 499  # the client closed the connection before its body arrived
        finally:
            self.metrics = self.metrics or _HttpMetrics()
            path = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.inc(tags={"route": path, "status": str(status[0])})
            self.metrics.latency.observe(took[0] if took[0] is not None else time.perf_counter() - start,
                                         tags={"route": path})

    async def _capped(self, scope, receive, send):
        cap = getattr(settings(scope.get("app")), "max_body_bytes", MAX_BODY_BYTES)

        def too_large():
            return errors.response(413, f"body is larger than {cap} bytes", code="body_too_large")(scope, receive, send)

        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            if not length.isdigit() or int(length) > cap:
                return await too_large()
            return await self.app(scope, receive, send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        body, more = b"", True  # chunked: read it all first, refusing it as soon as it passes the cap
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return "gone"
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > cap:
                return await too_large()
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def api_key_hash(env_name: str) -> str | None:
    key = os.environ.get(env_name)
    return hashlib.sha256(key.encode()).hexdigest() if key else None


async def _authorized(request: Request) -> None:
    """An API key, when the server has one (from the environment, never the config): `Authorization:
    Bearer <key>` (what OpenAI clients send) or `X-API-Key`."""
    want = getattr(settings(request.app), "key_hash", None)
    if want is None:
        return
    got = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        got = auth[7:].strip()
    if not got or not hmac.compare_digest(hashlib.sha256(got.encode()).hexdigest(), want):
        raise APIError(401, "missing or wrong API key (Authorization: Bearer <key>)", code="invalid_api_key")


AUTH = [Depends(_authorized)]

DOCS_ASSETS = "/docs-assets"  # where the docs pages' JavaScript, CSS and icon are served from


def _assets() -> dict[str, Path]:
    import fastapi_offline

    folder = Path(fastapi_offline.__file__).parent / "static"
    return {p.name: p for p in folder.iterdir() if p.suffix in (".js", ".css", ".png")}


def install_docs(app: FastAPI) -> None:
    """/docs and /redoc from this app's own assets (the app must be made with docs_url=redoc_url=None)."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    assets = _assets()

    @app.get(DOCS_ASSETS + "/{name}", include_in_schema=False)
    async def docs_asset(name: str):
        if name not in assets:
            raise APIError(404, f"no docs asset {name!r}", code="not_found")
        return FileResponse(assets[name], headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            # validatorUrl: Swagger UI would otherwise send the spec to validator.swagger.io for a badge
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False)
