"""Operational endpoints outside /v1 (not audited): health, readiness, metrics and the JWKS."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from app import migrate
from app.routing import runtime_of

router = APIRouter(tags=["operations"])


@router.get("/healthz", operation_id="health")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers (no database involved)."""
    return {"status": "ok"}


@router.get("/readyz", operation_id="ready", responses={503: {"description": "Database down or not at head"}})
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database answers and its schema is at the migration head."""
    runtime = runtime_of(request)

    def check() -> bool:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return migrate.at_head(runtime.engine, runtime.settings.database_url)

    try:
        ready = await anyio.to_thread.run_sync(check)
    except Exception:
        ready = False
    if ready:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "unavailable"}, status_code=503)


@router.get("/metrics", operation_id="metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process."""
    runtime = runtime_of(request)
    registry = runtime.extras["metrics"]
    registry.audit_events.set(runtime.audit_writer.written)  # type: ignore[attr-defined]
    if runtime.audit_writer.head_seq is not None:
        registry.chain_head.set(runtime.audit_writer.head_seq)  # type: ignore[attr-defined]
    return Response(registry.render(), media_type="text/plain; version=0.0.4")  # type: ignore[attr-defined]


@router.get("/.well-known/jwks.json", operation_id="jwks")
async def jwks(request: Request) -> dict[str, list[dict[str, str]]]:
    """The public key that signs tokens and audit checkpoints."""
    return {"keys": [runtime_of(request).codec.key.public_jwk]}
