"""create_app(): the FastAPI application with its edge middleware, routers and error handlers."""

from __future__ import annotations

import gc
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app import __version__
from app.agencies.router import router as agencies_router
from app.audit.checkpoints import start_periodic_checkpoints, stop_periodic_checkpoints
from app.audit.router import router as audit_router
from app.config import Settings, get_settings
from app.errors import AppError, MethodNotAllowed, NotFound, ValidationFailed, problem_response
from app.logs import configure_logging
from app.metrics import Metrics
from app.middleware import EdgeMiddleware
from app.ops import router as ops_router
from app.routing import BEARER_SCHEME, DirectRoutes, context_of, gate
from app.runtime import Runtime
from app.tokens.router import router as tokens_router
from app.violations.router import router as violations_router

DESCRIPTION = """The API through which BKN, Bawaslu, KemenPAN-RB, KASN and Kemendagri share records of
civil servants' political-neutrality violations. Every request under `/v1` is written to an append-only,
hash-chained audit log before its response is sent (`x-audit-action` names the event's action)."""


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        loc = [str(part) if not isinstance(part, int) else part for part in error.get("loc", ())]
        errors.append({"loc": loc, "msg": str(error.get("msg", "invalid value"))})
    return errors


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return problem_response(exc, context_of(request).request_id)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    error = ValidationFailed("the request is not valid; see `errors`", errors=_field_errors(exc))
    return problem_response(error, context_of(request).request_id)


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _allowed_methods(request: Request) -> str:
    """Every documented method on this path (Starlette's 405 names only the first matching route's)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, request.scope["path"]):
            methods |= {method.upper() for method in operations if method in _HTTP_METHODS}
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> Response:
    """Router-level 404/405. Under /v1 the token is checked first, so paths are not revealed to strangers."""
    assert isinstance(exc, StarletteHTTPException)
    ctx = context_of(request)
    if ctx.audited:
        try:
            await gate(request, None)
        except AppError as denied:
            return problem_response(denied, ctx.request_id)
    error: AppError
    if exc.status_code == 404:
        error = NotFound(f"no such path: {request.url.path}")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        error.headers = {"Allow": _allowed_methods(request)}
    else:
        error = AppError(str(exc.detail), status=exc.status_code, code="http_error", title="HTTP error")
    return problem_response(error, ctx.request_id)


def create_served_app() -> FastAPI:
    """The app as `sbt serve` runs it (uvicorn's factory, in each worker): `create_app` plus a garbage
    collector tuned for a long-running server (`settle_garbage_collector`)."""
    return create_app(freeze_gc=True)


# Young-generation threshold 10x the interpreter's default (700): a request allocates a few thousand
# short-lived containers, nearly all freed by reference counting, so most young collections found nothing.
GC_THRESHOLDS = (7000, 10, 10)


def settle_garbage_collector() -> None:
    """Keep the objects of start-up out of every later full collection, and collect less often.

    After start-up the process holds a few hundred thousand long-lived objects (modules, routes, models,
    pools); a full collection walks all of them, which on this service's machine took 40-50 ms every few
    seconds under load and found nothing, so it set the p99 latency (docs/benchmarks.md). Frozen, they are
    never walked again (a full collection then took about 3.5 ms); what requests allocate is still
    collected, by reference counting and by the collector as before."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None, *,
               freeze_gc: bool = False) -> FastAPI:
    configure_logging()
    settings = settings or get_settings()
    runtime = runtime or Runtime.build(settings)
    runtime.extras.setdefault("metrics", Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        checkpoint_task = start_periodic_checkpoints(runtime)
        if freeze_gc:
            settle_garbage_collector()
        yield
        await stop_periodic_checkpoints(checkpoint_task)
        await runtime.close()

    app = FastAPI(
        title="SBT — Sistem Berbagi Terintegrasi",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        # FastAPI's built-in OpenTelemetry hooks look up the global providers on every request; the
        # service has its own metrics (/metrics) and logs, and no OpenTelemetry set up.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        # A path with a trailing slash is not a path of the API: it gets the problem+json every unknown
        # path gets, not an empty 307 to a Location built from the request's own Host header.
        redirect_slashes=False,
    )
    app.state.runtime = runtime
    routers = (agencies_router, tokens_router, violations_router, audit_router, ops_router)
    for router in routers:
        app.include_router(router)
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    if settings.cors_origins:
        # Inside the edge, so preflights get a request id and security headers and are audited too.
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-Match", "If-None-Match", "Idempotency-Key",
                           "X-Request-ID", "X-Purpose"],
            expose_headers=["ETag", "Location", "Retry-After", "X-Request-ID", "RateLimit-Limit",
                            "RateLimit-Remaining", "RateLimit-Reset"],
            max_age=600,
        )
    # Direct dispatch skips the middleware inside the edge, so not while CORS is on.
    direct = None if settings.cors_origins else DirectRoutes([r for router in routers for r in router.routes])
    app.add_middleware(EdgeMiddleware, runtime=runtime, direct_routes=direct)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER_SCHEME] = {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "Access token from POST /v1/tokens or `sbt tokens create`.",
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app

