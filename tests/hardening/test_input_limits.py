"""Hostile input: oversized, chunked and lying bodies, long tokens, strings, lists, pages and queries,
and bodies that are not the JSON the document describes. Every one is a clear 4xx problem, never a 500."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.agencies.models import Agency
from app.config import Settings
from tests.conftest import TokenFactory, audit_rows, bearer
from tests.hardening.conftest import problem, serve

LIMIT = 4096


@pytest.fixture
def small_body_client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with serve(make_settings(max_body_bytes=LIMIT)) as client:
        yield client


def send_raw(client: TestClient, method: str, path: str, headers: dict[str, str],
             chunks: list[bytes]) -> tuple[int, dict[str, Any], int]:
    """Drive the ASGI app with exactly these body messages (as a server would for a chunked upload);
    returns (status, problem body, how many body messages the app pulled)."""
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
        "server": ("testserver", 80), "client": ("testclient", 50000), "state": {},
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    assert client.portal is not None

    async def run() -> None:
        await client.app(scope, receive, send)

    client.portal.call(run)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled


def test_a_body_over_the_limit_is_413_and_nothing_is_kept(
    small_body_client: TestClient, issue_token: TokenFactory, db: Session
) -> None:
    admin = issue_token("BKN", "admin")
    response = small_body_client.post("/v1/agencies", json={"code": "HUGE", "name": "x" * LIMIT},
                                      headers=bearer(admin))
    problem(response, 413, "payload_too_large")
    db.rollback()
    assert db.get(Agency, "HUGE") is None
    assert (audit_rows(db)[-1].status_code, audit_rows(db)[-1].outcome) == (413, "rejected")


def test_a_chunked_body_is_refused_at_the_limit_without_reading_the_rest(
    small_body_client: TestClient, issue_token: TokenFactory
) -> None:
    admin = issue_token("BKN", "admin")
    chunks = [b"x" * 1024] * 64  # 64 KiB, no Content-Length
    headers = {"authorization": f"Bearer {admin}", "content-type": "application/json",
               "transfer-encoding": "chunked"}
    status, body, pulled = send_raw(small_body_client, "POST", "/v1/agencies", headers, chunks)
    assert (status, body["code"]) == (413, "payload_too_large")
    assert pulled <= LIMIT // 1024 + 1  # stopped right past the limit


def test_a_content_length_that_lies_low_is_caught_by_counting_the_bytes(
    small_body_client: TestClient, issue_token: TokenFactory
) -> None:
    admin = issue_token("BKN", "admin")
    headers = {"authorization": f"Bearer {admin}", "content-type": "application/json", "content-length": "10"}
    status, body, _ = send_raw(small_body_client, "POST", "/v1/agencies", headers, [b"y" * 1024] * 8)
    assert (status, body["code"]) == (413, "payload_too_large")


def test_a_content_length_over_the_limit_is_413_without_reading_the_body(
    small_body_client: TestClient, issue_token: TokenFactory
) -> None:
    admin = issue_token("BKN", "admin")
    headers = {"authorization": f"Bearer {admin}", "content-type": "application/json",
               "content-length": str(10 * LIMIT)}
    status, body, pulled = send_raw(small_body_client, "POST", "/v1/agencies", headers, [b"{}"])
    assert (status, body["code"], pulled) == (413, "payload_too_large", 0)


def test_a_token_over_8_kib_is_401(client: TestClient, issue_token: TokenFactory) -> None:
    real = issue_token("BKN", "violations:read")
    padded = real + "A" * (8 * 1024)
    response = client.get("/v1/agencies", headers=bearer(padded))
    problem(response, 401, "invalid_token")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize("path, body, field", [
    ("/v1/agencies", {"code": "LONG", "name": "x" * 201}, "name"),
    ("/v1/agencies", {"code": "L" * 33, "name": "x"}, "code"),
    ("/v1/agencies", {"code": "LIST", "name": "x", "roles": ["reporter"] * 6}, "roles"),
    ("/v1/tokens", {"agency": "BKN", "name": "x" * 201, "scopes": ["admin"]}, "name"),
    ("/v1/tokens", {"agency": "BKN", "name": "x", "scopes": ["admin"] * 5}, "scopes"),
    ("/v1/tokens", {"agency": "B" * 33, "name": "x", "scopes": ["admin"]}, "agency"),
])
def test_strings_and_lists_over_their_length_are_422_naming_the_field(
    client: TestClient, issue_token: TokenFactory, path: str, body: dict[str, Any], field: str
) -> None:
    response = client.post(path, json=body, headers=bearer(issue_token("BKN", "admin")))
    errors = problem(response, 422, "validation_error")["errors"]
    assert any(field in e["loc"] for e in errors), errors


def _plain_get_operations(client: TestClient) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every GET under /v1 without path parameters, with its query parameters (from the served spec)."""
    spec = client.get("/openapi.json").json()
    return [(path, ops["get"].get("parameters", [])) for path, ops in spec["paths"].items()
            if path.startswith("/v1") and "get" in ops and "{" not in path]


def _schema_of(parameter: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = parameter["schema"]
    return next((s for s in schema.get("anyOf", []) if s.get("type") not in (None, "null")), schema)


def test_every_page_size_out_of_range_is_422(client: TestClient, issue_token: TokenFactory) -> None:
    token = issue_token("BKN", "violations:read", "audit:read", "admin")
    paged = [path for path, params in _plain_get_operations(client)
             if any(p["name"] == "limit" for p in params)]
    assert "/v1/tokens" in paged and "/v1/audit/events" in paged
    for path in paged:
        for limit in ("0", "201", "-1", "many"):
            errors = problem(client.get(path, params={"limit": limit}, headers=bearer(token)),
                             422, "validation_error")["errors"]
            assert ["query", "limit"] in [e["loc"] for e in errors], (path, limit)
        assert client.get(path, params={"limit": "200"}, headers=bearer(token)).status_code == 200, path


def test_every_bounded_query_string_over_its_length_is_422(
    client: TestClient, issue_token: TokenFactory
) -> None:
    token = issue_token("BKN", "violations:read", "audit:read", "admin")
    checked = []
    for path, params in _plain_get_operations(client):
        for parameter in params:
            schema = _schema_of(parameter)
            if parameter["in"] != "query" or "maxLength" not in schema:
                continue
            value = "9" * (schema["maxLength"] + 1)
            response = client.get(path, params={parameter["name"]: value}, headers=bearer(token))
            errors = problem(response, 422, "validation_error")["errors"]
            assert ["query", parameter["name"]] in [e["loc"] for e in errors], (path, parameter["name"])
            checked.append((path, parameter["name"]))
    assert {("/v1/tokens", "agency"), ("/v1/tokens", "cursor"), ("/v1/violations", "q")} <= set(checked)


def test_an_undeclared_query_parameter_is_422(client: TestClient, issue_token: TokenFactory) -> None:
    token = issue_token("BKN", "violations:read", "audit:read", "admin")
    for path, _ in _plain_get_operations(client):
        errors = problem(client.get(path, params={"agncy": "BKN"}, headers=bearer(token)),
                         422, "validation_error")["errors"]
        assert errors == [{"loc": ["query", "agncy"], "msg": "unknown query parameter"}], path


# An unanchored quantifier lets a pattern match text of any length.
_UNBOUNDED_PATTERN = re.compile(r"(?<!\\)[*+]|\{\d+,\}")


def _unbounded(schema: dict[str, Any], where: str, components: dict[str, Any], seen: set[str]) -> list[str]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return []
        return _unbounded(components[name], where, components, seen | {name})
    found = []
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            found += _unbounded(option, where, components, seen)
    bounded_by = ("maxLength", "enum", "const", "format")
    if schema.get("type") == "string" and not any(key in schema for key in bounded_by):
        pattern = schema.get("pattern")
        if pattern is None or _UNBOUNDED_PATTERN.search(pattern):
            found.append(f"{where}: string without maxLength")
    if schema.get("type") == "array":
        if "maxItems" not in schema:
            found.append(f"{where}: array without maxItems")
        found += _unbounded(schema.get("items", {}), f"{where}[]", components, seen)
    for name, sub in schema.get("properties", {}).items():
        found += _unbounded(sub, f"{where}.{name}", components, seen)
    return found


def test_every_string_and_list_a_client_sends_is_bounded_in_the_published_schema(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                if parameter["in"] in ("query", "path"):
                    found += _unbounded(parameter["schema"], f"{where} {parameter['name']}", components,
                                        set())
            for media in operation.get("requestBody", {}).get("content", {}).values():
                found += _unbounded(media["schema"], f"{where} body", components, set())
    assert found == []


BAD_BODIES = [
    (b'{"code": "AB", ', "application/json", 422, "validation_error"),
    (b"[1, 2]", "application/json", 422, "validation_error"),
    (b"\xff\xfe{}", "application/json", 422, "validation_error"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", 422, "validation_error"),
    (b'{"code": "NUM", "name": "x", "active": ' + b"1" * 5000 + b"}", "application/json", 422,
     "validation_error"),
    (b'{"code": "NUL", "name": "a\\u0000b"}', "application/json", 422, "validation_error"),
    (b'{"code": "LAX", "name": "x", "active": 0}', "application/json", 422, "validation_error"),
    (b'{"code": "LAX", "name": "x", "active": "true"}', "application/json", 422, "validation_error"),
    (b'{"code": "TXT", "name": "x"}', "text/plain", 415, "unsupported_media_type"),
    (b"code=FORM&name=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    (b'{"code": "NOCT", "name": "x"}', None, 415, "unsupported_media_type"),
]


@pytest.mark.parametrize("body, content_type, status, code", BAD_BODIES,
                         ids=["truncated", "array", "not-utf8", "nested-deep", "digits-many", "nul",
                              "lax-int-bool", "lax-str-bool", "text-plain", "form", "no-content-type"])
def test_a_body_that_is_not_the_documented_json_is_a_clear_4xx(
    client: TestClient, issue_token: TokenFactory, db: Session, body: bytes, content_type: str | None,
    status: int, code: str,
) -> None:
    headers = bearer(issue_token("BKN", "admin"))
    if content_type is not None:
        headers["Content-Type"] = content_type
    problem(client.post("/v1/agencies", content=body, headers=headers), status, code)
    event = audit_rows(db)[-1]
    assert (event.action, event.status_code, event.outcome) == ("agency.create", status, "rejected")


def test_json_integers_written_with_a_zero_fraction_are_integers(
    client: TestClient, issue_token: TokenFactory
) -> None:
    body = {"agency": "BKN", "name": "x", "scopes": ["admin"], "expires_in_days": 30.0}
    response = client.post("/v1/tokens", json=body, headers=bearer(issue_token("BKN", "admin")))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("path", ["/v1/agencies/A%00B", "/v1/tokens?agency=A%00B", "/v1/nowhere%00"])
def test_a_nul_in_the_path_or_query_is_422_and_still_audited(
    client: TestClient, issue_token: TokenFactory, db: Session, path: str
) -> None:
    token = issue_token("BKN", "admin")
    method = "PATCH" if path.startswith("/v1/agencies") else "GET"
    body = {"name": "x"} if method == "PATCH" else None
    response = client.request(method, path, headers=bearer(token), json=body)
    problem(response, 422, "validation_error")
    event = audit_rows(db)[-1]
    assert (event.status_code, event.outcome) == (422, "rejected")
    assert "\x00" not in (event.path or "")
