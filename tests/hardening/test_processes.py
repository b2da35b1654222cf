"""Faults of the server process itself, against real `sbt serve` subprocesses: SIGKILL during concurrent
writes, SIGTERM with a request in flight, and what uvicorn's edge lets through (headers, chunked and
lying bodies)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.config import Settings
from app.violations.models import Violation
from tests.conftest import TokenFactory, bearer
from tests.hardening.servers import ServerProcess, wait_until
from tests.violations.conftest import VALID_BODY

WRITERS = 4
KILL_AFTER_ACKNOWLEDGED = 20


def created_in_database(db: Session) -> tuple[set[str], set[str]]:
    """(ids of stored records, ids named by successful violation.create events)."""
    db.rollback()
    stored = {str(v) for v in db.scalars(select(Violation.id))}
    events = db.scalars(select(AuditEvent).where(AuditEvent.action == "violation.create",
                                                 AuditEvent.outcome == "success"))
    return stored, {rid for event in events for rid in event.resource_ids}


def test_sigkill_during_concurrent_writes_keeps_every_acknowledged_write_with_its_event(
    settings: Settings, issue_token: TokenFactory, db: Session, tmp_path: Path
) -> None:
    token = issue_token("BKN", "violations:write", "violations:read", "audit:read")
    acknowledged: list[str] = []
    enough = threading.Event()
    server = ServerProcess(settings, tmp_path / "first.log").start()

    def write(url: str) -> None:
        with httpx.Client(base_url=url, headers=bearer(token), timeout=30) as http:
            while True:
                try:
                    response = http.post("/v1/violations", json=VALID_BODY)
                except httpx.TransportError:
                    return  # the server died under us; this write was never acknowledged
                assert response.status_code == 201, response.text
                acknowledged.append(response.json()["id"])
                if len(acknowledged) >= KILL_AFTER_ACKNOWLEDGED:
                    enough.set()

    try:
        writers = [threading.Thread(target=write, args=(server.url,)) for _ in range(WRITERS)]
        for thread in writers:
            thread.start()
        assert enough.wait(timeout=60), "the writers did not get going"
        server.signal(signal.SIGKILL)
        for thread in writers:
            thread.join(timeout=30)
        assert server.wait(timeout=10) == -signal.SIGKILL
    finally:
        server.stop()

    with ServerProcess(settings, tmp_path / "second.log") as restarted, \
            httpx.Client(base_url=restarted.url, headers=bearer(token), timeout=30) as http:
        for record_id in acknowledged:
            assert http.get(f"/v1/violations/{record_id}").status_code == 200, record_id
        verified = http.get("/v1/audit/verify").json()
    stored, audited = created_in_database(db)
    assert set(acknowledged) <= stored
    assert stored == audited  # nothing half-stored: every record has its event and every event its record
    assert verified["ok"] is True, verified


def _read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), json.loads(body)


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_lets_the_request_in_flight_finish_before_the_server_exits(
    settings: Settings, issue_token: TokenFactory, db: Session, tmp_path: Path
) -> None:
    token = issue_token("BKN", "violations:write")
    body = json.dumps(VALID_BODY).encode()
    server = ServerProcess(settings, tmp_path / "server.log").start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                f"POST /v1/violations HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Expect: 100-continue\r\n\r\n".encode())
            # uvicorn says "100 Continue" when the app first asks for the body: the request is in flight.
            assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
            server.signal(signal.SIGTERM)
            wait_until(lambda: _refuses_connections(server.port), timeout=10, what="shutdown to begin")
            sock.sendall(body)
            status, document = _read_response(sock)
        assert status == 201, document
        # uvicorn re-raises SIGTERM at the end of a graceful shutdown, so the exit reads as that signal.
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        server.stop()
    # Answered after the listener had closed, then a clean lifespan shutdown (the audit writer stopped).
    assert "Application shutdown complete" in (tmp_path / "server.log").read_text()
    stored, audited = created_in_database(db)
    assert document["id"] in stored and document["id"] in audited


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # Refused before the client finished sending? The answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_the_real_server_bounds_headers_and_bodies(
    make_settings: Callable[..., Settings], issue_token: TokenFactory, tmp_path: Path
) -> None:
    settings = make_settings(max_body_bytes=4096)
    token = issue_token("BKN", "admin").encode()
    auth = b"Authorization: Bearer " + token + b"\r\n"
    with ServerProcess(settings, tmp_path / "server.log", SBT_MAX_BODY_BYTES="4096") as server:
        port = server.port
        huge_header = b"GET /v1/agencies HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 1_000_000 + b"\r\n\r\n"
        assert _status(_exchange(port, huge_header)) == 431
        many_headers = b"GET /v1/agencies HTTP/1.1\r\nHost: x\r\n" + b"".join(
            b"X-H%d: v\r\n" % i for i in range(10_000)) + b"\r\n"
        assert _status(_exchange(port, many_headers)) == 431
        big_token = b"GET /v1/agencies HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " + \
            b"a" * 9000 + b"\r\n\r\n"
        answer = _exchange(port, big_token)
        assert _status(answer) == 401 and b'"invalid_token"' in answer
        chunk = b"x" * 1024
        chunked = (b"POST /v1/agencies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth +
                   b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
                   b"".join(b"400\r\n" + chunk + b"\r\n" for _ in range(64)) + b"0\r\n\r\n")
        answer = _exchange(port, chunked)
        assert _status(answer) == 413 and b'"payload_too_large"' in answer
        declared_huge = (b"POST /v1/agencies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth +
                         b"Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n{}")
        answer = _exchange(port, declared_huge)
        assert _status(answer) == 413 and b'"payload_too_large"' in answer
        # A Content-Length shorter than the body: the server reads only what was declared.
        declared_short = (b"POST /v1/agencies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth +
                          b"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n" +
                          b'{"code": "LIAR", "name": "' + b"x" * 5000 + b'"}')
        answer = _exchange(port, declared_short)
        assert _status(answer) == 422 and b'"validation_error"' in answer
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token.decode()}"}) as http:
            names = {a["code"] for a in http.get("/v1/agencies").json()["items"]}
    assert "LIAR" not in names
