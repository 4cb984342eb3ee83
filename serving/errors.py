"""One error shape for every failure a client can see, as OpenAI clients expect:

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": "..."}}

Bad input is 4xx and names what is wrong; overload is 503 with Retry-After; a generation that runs past
the request timeout is 504. No traceback reaches a client: anything unexpected is logged on the replica
and answered 500 with a request id to find it by.
"""

from __future__ import annotations

import json
import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

log = logging.getLogger("ray.serve")

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
         422: "invalid_request_error", 429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error"}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "server_error"), "param": param, "code": code}}


def response(status: int, message: str, param: str | None = None, code: str | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body(status, message, param, code), status_code=status, headers=headers)


_SCALARS = {"str", "int", "float", "bool", "none", "list", "dict"}


def _field_path(loc) -> str | None:
    """A pydantic error location as the field the client sent: `messages.0.content`, without the body
    prefix or the union members pydantic names (`str`, `list[constrained-str]`, `TextPart`)."""
    parts = [str(p) for p in loc if p != "body"]
    keep = [p for p in parts if not ("[" in p or "-" in p or p in _SCALARS or p[:1].isupper())]
    return ".".join(keep) or None


def _validation(exc: RequestValidationError) -> APIError:
    """FastAPI's validation errors -> 400 naming the first field: `messages.0.role: Input should be ...`.
    Of a union's errors, one about the value the client sent rather than one saying it is of another
    kind (`content` is a list whose part has no valid type, not "should be a valid string")."""
    errors = exc.errors()
    if not errors:
        return APIError(400, "invalid request body", code="invalid_body")
    e = errors[0]
    if e.get("type") == "json_invalid":
        return APIError(400, f"body is not valid JSON: {e.get('ctx', {}).get('error', e.get('msg'))}", code="invalid_json")
    e = next((x for x in errors if not str(x.get("type", "")).endswith("_type")), e)
    param = _field_path(e.get("loc", ()))
    message = e.get("msg", "invalid value")
    if e.get("type") == "missing":
        message = "field required"
    elif e.get("type") == "extra_forbidden":
        message = "not supported by this server (unknown field)"
    elif e.get("type") == "value_error" and param is None:  # a model's own check: "<field>: what is wrong"
        message = message.removeprefix("Value error, ")
        head = message.split(":", 1)[0]
        param, message = (head, message.split(":", 1)[1].strip()) if head.isidentifier() else (None, message)
    others = len({_field_path(x.get("loc", ())) for x in errors} - {param})
    more = f" (and {others} more)" if others else ""
    return APIError(400, f"{param}: {message}{more}" if param else f"{message}{more}", param=param,
                    code=e.get("type"))


def install(app: FastAPI) -> None:
    """Handlers that turn every failure into the one shape."""

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError):
        return response(exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        e = _validation(exc)
        return response(e.status, e.message, e.param, e.code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        rid = uuid.uuid4().hex[:12]
        log.exception("request %s %s failed (request id %s)", request.method, request.url.path, rid)
        return response(500, f"internal error (request id {rid}); the server log has the details", code="internal")
