"""The gate every /v1 route passes before FastAPI reads the body, and the typed dependency aliases.

The gate runs the checks that SPEC §5 ranks first, in that order: 401 (token), 403 (scope, inactive
agency), 429 (rate limit), 413 (body size), then the input screening of app/inputs.py (415, 422) —
except that an address over the failed-authentication limit gets 429 before its token is even looked
at (SPEC §12). Each route declares its audit action and required scope in `openapi_extra`, so both are
also visible in the published OpenAPI document.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Query, Request
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette import types as asgi
from starlette.responses import Response

from app.audit.rowcheck import is_undecodable_text
from app.auth.jwt import TokenRejected
from app.auth.principal import Principal, Scope, lookup_principal
from app.context import AuditDraft, RequestContext
from app.db import begin_write, is_lock_timeout
from app.errors import (
    AgencyInactive,
    AppError,
    InsufficientScope,
    InvalidToken,
    PayloadTooLarge,
    RateLimited,
    ValidationFailed,
    problem_response,
)
from app.inputs import InputRules, base_type, check_json_body, check_url
from app.middleware import WRITE_METHODS
from app.ratelimit import Quota, RateLimiter
from app.runtime import Runtime

T = TypeVar("T")
MAX_PURPOSE_CHARS = 200
BEARER_SCHEME = "bearerAuth"


def endpoint(action: str, scope: Scope | None) -> dict[str, Any]:
    """Route metadata: `openapi_extra=endpoint("violation.read", Scope.VIOLATIONS_READ)`."""
    return {
        "x-audit-action": action,
        "x-required-scope": str(scope) if scope else None,
        "security": [{BEARER_SCHEME: [str(scope)] if scope else []}],
    }


def context_of(request: Request) -> RequestContext:
    ctx: RequestContext = request.scope["state"]["ctx"]
    return ctx


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.scope["state"]["ctx"].runtime
    return runtime


@functools.lru_cache(maxsize=4096)
def _token_id(jti: str) -> uuid.UUID:
    """The token id of a verified token's `jti` (parsed once per token, not per request)."""
    return uuid.UUID(jti)


async def open_session(request: Request) -> Session:
    """The request's one session; write methods begin a write transaction (after the write lock)."""
    ctx = context_of(request)
    if ctx.session is None:
        runtime = runtime_of(request)
        write = request.method in WRITE_METHODS
        if write and not ctx.write_lock_held:
            # Queued writes hold no pooled read connection (the token check's), or enough of them
            # would leave none for the token checks of the requests behind them.
            ctx.release_read_connection()
            await runtime.write_lock.acquire()
            ctx.write_lock_held = True
        session = runtime.sessions()
        ctx.session = session
        if write:
            ctx.write_tx = True
            await anyio.to_thread.run_sync(begin_write, session)
    return ctx.session


async def run_read(request: Request, read: Callable[[Any], T]) -> T:
    """`read(dbapi_connection)` for a driver-level read (app/rawdb.py).

    SQLite: inline, on the event loop's own connection (cheaper than a thread hand-off; see
    Runtime.loop_reader). PostgreSQL: on a worker thread, with a connection from the autocommit pool that
    the request keeps until it ends. When the driver reports the connection lost, the pool's idle
    connections are closed too and the read is tried once more on a new one (a read changes nothing), so
    connections that died while the database restarted cost no request a 503; a second failure is the
    outage itself.
    """
    runtime = runtime_of(request)
    outages = runtime.driver.outage_errors
    if runtime.settings.is_sqlite:
        try:
            return read(runtime.loop_reader())
        except outages as exc:
            if is_lock_timeout(exc) or is_undecodable_text(exc):  # the connection is fine
                raise
            runtime.drop_loop_reader()
        return read(runtime.loop_reader())
    ctx = context_of(request)
    engine = runtime.read_engine or runtime.engine

    def on_thread() -> T:
        for attempt in (1, 2):
            if ctx.raw is None:
                ctx.raw = engine.raw_connection()
            try:
                return read(ctx.raw)
            except outages as exc:
                if is_lock_timeout(exc):  # the connection is fine; waiting again would only double the wait
                    raise
                broken, ctx.raw = ctx.raw, None
                broken.invalidate()
                if attempt == 2:
                    raise
                # The others idle in the pool most likely died with it (a restart, terminated backends):
                # close them all, as SQLAlchemy does on a disconnect, so the retry gets a fresh one.
                engine.dispose()
        raise AssertionError("unreachable")

    return await anyio.to_thread.run_sync(on_thread)


def rate_limiter_of(request: Request) -> RateLimiter | None:
    limiter = runtime_of(request).extras.get("rate_limiter")
    return limiter if isinstance(limiter, RateLimiter) else None


async def authenticate(request: Request, ctx: RequestContext) -> Principal:
    """401 unless the bearer token verifies and is live in the database.

    An address that failed authentication too often gets 429 first, before any signature check or
    database work (SPEC §12 "Floods"); each failure counts towards that limit.
    """
    limiter = rate_limiter_of(request)
    if limiter is None:
        return await _verify_bearer(request, ctx)
    address = request.client.host if request.client else "unknown"
    try:
        limiter.check_address(address)
    except RateLimited:
        ctx.audit.detail = {"reason": "too many failed authentications from this address"}
        raise
    try:
        return await _verify_bearer(request, ctx)
    except InvalidToken:
        await limiter.record_auth_failure(address)
        raise


async def _verify_bearer(request: Request, ctx: RequestContext) -> Principal:
    headers = request.headers.getlist("authorization")
    if not headers:
        ctx.auth_failed = True
        raise InvalidToken("no bearer token given", missing=True)
    if len(headers) > 1:  # which one counts would depend on who reads the request: a proxy, or this service
        ctx.auth_failed = True
        raise InvalidToken("send exactly one Authorization header")
    header = headers[0]
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        ctx.auth_failed = True
        raise InvalidToken("the Authorization header must be `Bearer <token>`")
    runtime = runtime_of(request)
    try:
        claims = runtime.codec.verify(token.strip())
        token_id = _token_id(claims["jti"])
    except (TokenRejected, ValueError) as exc:
        ctx.auth_failed = True
        ctx.audit.detail = {"reason": str(exc) if isinstance(exc, TokenRejected) else "malformed token id"}
        raise InvalidToken("the token is not valid") from None
    driver = runtime.driver
    principal = await run_read(request, lambda connection: lookup_principal(connection, driver, token_id))
    if principal is None:
        ctx.auth_failed = True
        ctx.audit.detail = {"reason": "token unknown, revoked or expired"}
        raise InvalidToken("the token is not valid")
    ctx.principal = principal
    return principal


async def gate(request: Request, scope: str | None, *, rules: InputRules | None = None) -> Quota | None:
    """Run the ranked checks; returns the token's rate-limit quota (for the RateLimit-* headers)."""
    ctx = context_of(request)
    principal = await authenticate(request, ctx)
    if scope is not None and scope not in principal.scopes:
        raise InsufficientScope(
            f"this operation needs the {scope} scope",
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        )
    if not principal.agency_active:
        raise AgencyInactive(f"agency {principal.agency} is inactive; its tokens can no longer act")
    limiter = rate_limiter_of(request)
    quota = await limiter.hit_token(principal.token_id) if limiter is not None else None
    try:
        await _check_request(request, ctx, rules)
    except AppError as refused:
        if quota is not None:
            refused.headers.update(quota.headers())
        raise
    return quota


async def _check_request(request: Request, ctx: RequestContext, rules: InputRules | None) -> None:
    """413, then the input screening of app/inputs.py, then X-Purpose."""
    if ctx.body_too_large:
        limit = runtime_of(request).settings.max_body_bytes
        raise PayloadTooLarge(f"request bodies are limited to {limit} bytes")
    if rules is not None and rules.takes_body:
        await check_json_body(request, rules.body)
    check_url(request, rules)
    purpose = request.headers.get("x-purpose")
    if purpose is not None:
        if len(purpose) > MAX_PURPOSE_CHARS:
            raise ValidationFailed(
                "X-Purpose is too long",
                errors=[{"loc": ["header", "X-Purpose"], "msg": f"at most {MAX_PURPOSE_CHARS} characters"}],
            )
        ctx.purpose = purpose


class AuditedRoute(APIRoute):
    """An /v1 route: gated before the body is parsed, and named in the audit log by its action."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self._gated(super().get_route_handler())

    def _gated(self, handler: Handler) -> Handler:
        extra = self.openapi_extra or {}
        action: str = extra.get("x-audit-action", "request")
        scope: str | None = extra.get("x-required-scope")
        rules = InputRules.for_route(self)

        async def gated(request: Request) -> Response:
            context_of(request).audit.action = action
            quota = await gate(request, scope, rules=rules)
            if quota is None:
                return await handler(request)
            try:
                response = await handler(request)
            except AppError as refused:  # the route's own 404, 409, 412, … carry the quota as well
                refused.headers.update(quota.headers())
                raise
            response.headers.update(quota.headers())
            return response

        return gated

    @functools.cached_property
    def direct(self) -> Handler | None:
        """The gated endpoint called straight from the request, when there is nothing to validate.

        An `async def` endpoint whose parameters are the Request, plain-string path parameters and
        optional plain-string headers (no constraints) needs none of FastAPI's dependency solving; for
        the hottest read that solving, with route matching, was a third of its CPU. DirectRoutes
        dispatches such routes from the edge; every other route returns None here and goes through
        FastAPI.
        """
        call = _plain_string_call(self)
        return None if call is None else self._gated(call)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _plain_string_call(route: APIRoute) -> Handler | None:
    dependant = route.dependant
    if (not inspect.iscoroutinefunction(route.endpoint) or dependant.request_param_name is None
            or dependant.dependencies or dependant.query_params or dependant.cookie_params
            or dependant.body_params or route.body_field is not None):
        return None
    path_names: list[str] = []
    for field in dependant.path_params:
        if field.field_info.annotation is not str or field.field_info.metadata:
            return None
        path_names.append(field.name)
    headers: list[tuple[str, str]] = []
    for field in dependant.header_params:
        info = field.field_info
        if base_type(info.annotation) is not str or info.metadata or info.default is not None:
            return None
        headers.append((field.name, field.alias.replace("_", "-").lower()))
    endpoint, request_name = route.endpoint, dependant.request_param_name

    async def call(request: Request) -> Response:
        kwargs: dict[str, Any] = {request_name: request}
        path_params = request.path_params
        for name in path_names:
            kwargs[name] = path_params[name]
        for name, header in headers:
            kwargs[name] = request.headers.get(header)
        response: Response = await endpoint(**kwargs)
        return response

    return call


class DirectRoutes:
    """Dispatch from the edge for the routes whose `direct` handler exists (see AuditedRoute.direct).

    They must not overlap another route's path for the same method (the edge takes them first); the
    responses, problems and audit events are those of the FastAPI path, which tests compare.
    """

    def __init__(self, routes: list[Any]) -> None:
        self._routes = [route for route in routes if isinstance(route, AuditedRoute) and route.direct]

    def __bool__(self) -> bool:
        return bool(self._routes)

    def match(self, scope: asgi.Scope) -> AuditedRoute | None:
        method, path = scope["method"], scope["path"]
        for route in self._routes:
            if route.methods and method in route.methods and method != "HEAD":
                found = route.path_regex.match(path)
                if found is not None:
                    convertors = route.param_convertors
                    scope["path_params"] = {name: convertors[name].convert(value)
                                            for name, value in found.groupdict().items()}
                    scope["route"] = route
                    scope["endpoint"] = route.endpoint
                    return route
        return None

    @staticmethod
    async def serve(route: AuditedRoute, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        request = Request(scope, receive)
        direct = route.direct
        assert direct is not None
        try:
            response = await direct(request)
        except AppError as refused:
            response = problem_response(refused, context_of(request).request_id)
        await response(scope, receive, send)


async def _session_dep(request: Request) -> Session:
    return await open_session(request)


# The dependencies below are `async def` on purpose: FastAPI runs a plain `def` dependency in the
# threadpool, and a thread hand-off per trivial lookup was a measurable share of a cheap request.
async def _runtime_dep(request: Request) -> Runtime:
    return runtime_of(request)


async def _principal_dep(request: Request) -> Principal:
    principal = context_of(request).principal
    if principal is None:  # only reachable for a route mounted without the gate
        raise InvalidToken("no bearer token given", missing=True)
    return principal


async def _audit_dep(request: Request) -> AuditDraft:
    return context_of(request).audit


SessionDep = Annotated[Session, Depends(_session_dep)]
PrincipalDep = Annotated[Principal, Depends(_principal_dep)]
AuditDep = Annotated[AuditDraft, Depends(_audit_dep)]
RuntimeDep = Annotated[Runtime, Depends(_runtime_dep)]
# Paging query parameters of the list routes (here, so that app/pagination.py, which the CLI imports,
# needs no FastAPI).
Limit = Annotated[int, Query(ge=1, le=200, description="Page size (1-200).")]
Cursor = Annotated[str | None, Query(max_length=512, description="Opaque cursor from `next_cursor`.")]
