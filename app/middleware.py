"""The request edge (pure ASGI): request id, body limit, the request's one commit, audit, access log.

For every request under /v1 this is where the audit event is written: when the app starts its response,
the event (and, for a successful write, the change it records) is committed *before* the status line is
passed on. If that commit fails the client gets 503 and none of the data.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.audit.chain import EventDraft, append_events, outcome_for
from app.audit.rowcheck import UNDECODABLE_TEXT, is_undecodable_text
from app.audit.writer import last_use_is_stale, touch_tokens
from app.context import RequestContext, generated_request_id
from app.db import is_lock_timeout
from app.errors import AppError, InternalError, LockTimeout, ServiceUnavailable, problem_response
from app.runtime import Runtime

if TYPE_CHECKING:
    from app.routing import DirectRoutes

log = logging.getLogger("sbt.request")
access_log = logging.getLogger("sbt.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
WRITE_METHODS = _BODY_METHODS
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
]


def is_audited_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def is_database_outage(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _storable(text: str) -> str:
    """Client-chosen text as the audit log can keep it: PostgreSQL text holds no NUL character, and an
    event that cannot be stored would turn a hostile request into an unaudited 503."""
    return text.replace("\x00", "\ufffd")


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime, direct_routes: DirectRoutes | None = None) -> None:
        self.app = app
        self.runtime = runtime
        # Routes served without FastAPI's routing and dependency solving (app.routing.DirectRoutes).
        self.direct_routes = direct_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given_id = _header(scope, b"x-request-id")
        request_id = given_id if given_id and _REQUEST_ID.match(given_id) else generated_request_id()
        ctx = RequestContext(request_id=request_id, audited=is_audited_path(scope["path"]),
                             runtime=self.runtime)
        scope.setdefault("state", {})["ctx"] = ctx
        if scope["method"] in _BODY_METHODS:
            receive = await self._buffer_body(scope, receive, ctx)

        state: dict[str, Any] = {"started": False, "replaced": False, "status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                status = message["status"]
                if ctx.audited:
                    try:
                        await self._commit(ctx, scope, status)
                    except Exception as exc:
                        log.error("audit commit failed, answering 503 (request_id=%s): %s", request_id,
                                  type(exc).__name__)
                        state["replaced"] = True
                        state["status"] = 503
                        await self._send_plain_problem(ServiceUnavailable(
                            "the access could not be recorded in the audit log; nothing was returned or kept"
                        ), ctx, send)
                        return
                state["status"] = status
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                for key, value in SECURITY_HEADERS:
                    if key.decode() not in headers:
                        headers.raw.append((key, value))
            elif state["replaced"]:
                return
            await send(message)

        try:
            direct = self.direct_routes.match(scope) if self.direct_routes else None
            if direct is not None:
                await self.direct_routes.serve(direct, scope, receive, send_wrapper)  # type: ignore[union-attr]
            else:
                await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if state["started"]:
                # A streamed body failed part-way; the event was committed already. Nothing to repair.
                log.error("response stream failed (request_id=%s): %s", request_id, type(exc).__name__)
            else:
                error: AppError
                if is_lock_timeout(exc):
                    error = LockTimeout(self.runtime.settings.db_lock_timeout_seconds)
                    log.warning("lock wait timed out (request_id=%s): %s", request_id, type(exc).__name__)
                elif is_undecodable_text(exc):
                    error = InternalError(f"{UNDECODABLE_TEXT}; nothing was returned")
                    log.error("stored text is not UTF-8 (request_id=%s)", request_id)
                elif is_database_outage(exc) or isinstance(exc, self.runtime.driver.outage_errors):
                    error = ServiceUnavailable("the database is unavailable; try again shortly")
                    log.warning("database unavailable (request_id=%s): %s", request_id, type(exc).__name__)
                else:
                    error = InternalError(
                        "an unexpected error occurred; quote the request id when reporting it")
                    log.exception("unhandled error (request_id=%s)", request_id)
                await problem_response(error, request_id)(scope, receive, send_wrapper)
        finally:
            self._release(ctx)
            duration_ms = (time.perf_counter() - started) * 1000
            route = scope.get("route")
            access_log.info({
                "request_id": request_id,
                "method": scope["method"],
                "route": getattr(route, "path", None),
                "status": state["status"],
                "duration_ms": round(duration_ms, 2),
                "agency": ctx.principal.agency if ctx.principal else None,
            })
            metrics = self.runtime.extras.get("metrics")
            if metrics is not None:
                metrics.observe(scope["method"], getattr(route, "path", "<unmatched>"), state["status"],  # type: ignore[attr-defined]
                                duration_ms / 1000)

    async def _buffer_body(self, scope: Scope, receive: Receive, ctx: RequestContext) -> Receive:
        """Read the whole body up front, stopping past the limit (also for chunked bodies), so that no
        lock is ever held while a slow client trickles bytes. An oversized body is replayed as empty and
        flagged; the route gate answers 413 after the checks that rank before it."""
        limit = self.runtime.settings.max_body_bytes
        declared = _header(scope, b"content-length")
        chunks: list[bytes] = []
        size = 0
        too_large = declared is not None and declared.isdigit() and int(declared) > limit
        more = not too_large
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                too_large = True
                break
            chunks.append(chunk)
            more = message.get("more_body", False)
        ctx.body_too_large = too_large
        body = b"" if too_large else b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _commit(self, ctx: RequestContext, scope: Scope, status: int) -> None:
        draft = self._draft(ctx, scope, status)
        principal = ctx.principal
        # last_used_at is kept to the minute; skip the UPDATE when the token row is already that fresh.
        touch = principal.token_id if principal is not None and last_use_is_stale(principal) else None
        session = ctx.session
        if session is not None and ctx.write_tx and status < 400:
            # A successful write: its change, its feed entries and its event commit together.
            def commit_write() -> None:
                for hook in ctx.on_commit:
                    hook(session)
                feed = ctx.audit.feed_entries
                documents, first_feed_seq = append_events(session, [draft], feed_entries=len(feed))
                for offset, write_feed_row in enumerate(feed):
                    write_feed_row(session, first_feed_seq + offset)
                if touch is not None:
                    touch_tokens(session, {touch})
                session.commit()
                self.runtime.audit_writer.record_written(documents)

            try:
                await anyio.to_thread.run_sync(commit_write)
            finally:
                # Never keep the write lock while the response travels to a possibly slow client.
                self._release(ctx)
            return
        if session is not None:
            if self.runtime.settings.is_sqlite:
                # Ending an in-process SQLite transaction never waits on a lock or the network; a thread
                # hand-off would cost more than the call.
                session.rollback()
            else:
                await anyio.to_thread.run_sync(session.rollback)
        # The request's reads are done: its connections go back to the pool before it waits for the
        # audit batch, so connections in use track reads in progress, not requests in flight (on
        # PostgreSQL, 32 requests waiting on a batch held 32 connections of a pool of 20, and the overflow
        # was opened and closed again on every peak).
        self._release(ctx)
        await self.runtime.audit_writer.append(draft, touch_token=touch)

    def _release(self, ctx: RequestContext) -> None:
        ctx.release_read_connection()
        if ctx.session is not None:
            ctx.session.close()
            ctx.session = None
        if ctx.write_lock_held:
            ctx.write_lock_held = False
            self.runtime.write_lock.release()

    def _draft(self, ctx: RequestContext, scope: Scope, status: int) -> EventDraft:
        principal = ctx.principal
        query = scope.get("query_string", b"").decode("utf-8", "replace") or None
        client = scope.get("client")
        user_agent = _header(scope, b"user-agent")
        return EventDraft(
            request_id=ctx.request_id,
            actor_kind="token" if principal else "anonymous",
            actor_token_id=str(principal.token_id) if principal else None,
            actor_agency=principal.agency if principal else None,
            action="auth.failed" if ctx.auth_failed else ctx.audit.action,
            outcome=outcome_for(status),
            status_code=status,
            method=_storable(scope["method"])[:16],
            path=_storable(scope["path"]),
            query=_storable(query) if query else None,
            resource_type=ctx.audit.resource_type,
            resource_ids=ctx.audit.resource_ids,
            client_ip=client[0] if client else None,
            user_agent=_storable(user_agent[:512]) if user_agent else None,
            purpose=_storable(ctx.purpose) if ctx.purpose else None,
            detail=ctx.audit.detail,
        )

    async def _send_plain_problem(self, error: AppError, ctx: RequestContext, send: Send) -> None:
        response = problem_response(error, ctx.request_id)
        headers = [*response.raw_headers, (b"x-request-id", ctx.request_id.encode()), *SECURITY_HEADERS]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
