"""Serve a baseline app with exactly the uvicorn settings `sbt serve` uses (same loop, HTTP protocol, log
level, no access log, one worker): `sbt serve` itself runs, with only the app it hands to uvicorn swapped.

    python scripts/bench/serve.py raw|fastapi PORT     (SBT_* settings as for `sbt serve`)

A0 `raw`: a bare ASGI callable answering a constant JSON body. A1 `fastapi`: a FastAPI app whose one
`async def` endpoint returns a constant dict (the cheapest FastAPI endpoint there is).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from fastapi import FastAPI

CONSTANT = {"status": "ok", "service": "sbt-bench"}
_BODY = json.dumps(CONSTANT).encode()
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


fastapi_app = FastAPI()


@fastapi_app.get("/")
async def constant() -> dict[str, str]:
    return CONSTANT


APPS: dict[str, Any] = {"raw": raw_app, "fastapi": fastapi_app}


def main() -> int:
    name, port = sys.argv[1], sys.argv[2]
    import uvicorn

    from app.cli import main as sbt

    real_run = uvicorn.run

    def run_baseline(_app: Any, **settings: Any) -> None:
        settings.pop("factory", None)
        shown = {k: v for k, v in settings.items() if k not in ("host", "port")}
        print(f"baseline {name} with the uvicorn settings of `sbt serve`: {shown}", file=sys.stderr,
              flush=True)
        real_run(APPS[name], **settings)

    uvicorn.run = run_baseline  # type: ignore[assignment]
    return sbt(["serve", "--host", "127.0.0.1", "--port", port])


if __name__ == "__main__":
    sys.exit(main())
