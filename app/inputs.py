"""Hostile-input screening the gate runs before FastAPI parses anything: JSON bodies and query strings.

The published OpenAPI document is the contract, so a request is held to it as written: a body must be
JSON that matches its schema without lax coercion (`0` is not `false`, `"3"` is not `3`), a query may
only name declared parameters, and no text may carry a NUL character (PostgreSQL text cannot hold one,
SQLite can; refusing it everywhere keeps the two backends alike and every such request audited).
"""

from __future__ import annotations

import json
import re
import types
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Union, get_args, get_origin

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request

from app.errors import UnsupportedMediaType, ValidationFailed

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?")
_BOOLEAN = ("true", "false")


def is_json_media_type(content_type: str | None) -> bool:
    media_type = (content_type or "").partition(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and
                                                 media_type.endswith("+json"))


def base_type(annotation: Any) -> Any:
    """`T` for `T`, `T | None` and `Optional[T]`."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


@dataclass(frozen=True)
class InputRules:
    """What one route accepts, worked out once when the route is built."""

    takes_body: bool
    # The route's body model, when FastAPI parses the body (routes reading it raw get the other checks).
    body: TypeAdapter[Any] | None
    # None: the route takes a query model, whose own validation decides what is allowed.
    query_names: frozenset[str] | None
    temporal: dict[str, type]
    boolean: frozenset[str]

    @classmethod
    def for_route(cls, route: APIRoute) -> InputRules:
        annotation = route.body_field.field_info.annotation if route.body_field is not None else None
        names: set[str] | None = set()
        temporal: dict[str, type] = {}
        boolean: set[str] = set()
        pending: list[Dependant] = [route.dependant]
        while pending:
            dependant = pending.pop()
            pending.extend(dependant.dependencies)
            for field in dependant.query_params:
                kind = base_type(field.field_info.annotation)
                if isinstance(kind, type) and issubclass(kind, BaseModel):
                    names = None
                    continue
                if names is not None:
                    names.add(field.alias)
                if kind is datetime or kind is date:
                    temporal[field.alias] = kind
                elif kind is bool:
                    boolean.add(field.alias)
        takes_body = annotation is not None or bool((route.methods or set()) & {"POST", "PUT", "PATCH"})
        return cls(takes_body=takes_body, body=TypeAdapter(annotation) if annotation is not None else None,
                   query_names=frozenset(names) if names is not None else None,
                   temporal=temporal, boolean=frozenset(boolean))


def _refused(loc: list[str | int], msg: str, detail: str) -> ValidationFailed:
    return ValidationFailed(detail, errors=[{"loc": loc, "msg": msg}])


def check_url(request: Request, rules: InputRules | None) -> None:
    """422 for a NUL in the path or query, an undeclared query parameter, or a date, timestamp or
    boolean parameter written other than as the document says (`0.5` is not a timestamp, `yes` is
    not `true`)."""
    if "\x00" in request.scope["path"]:
        raise _refused(["path"], "NUL characters are not allowed", "the path contains a NUL character")
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise _refused(["query", name], "NUL characters are not allowed",
                           "a query parameter contains a NUL character")
        if rules is None:
            continue
        if rules.query_names is not None and name not in rules.query_names:
            raise _refused(["query", name], "unknown query parameter", f"unknown query parameter {name!r}")
        kind = rules.temporal.get(name)
        if kind is date and not _ISO_DATE.fullmatch(value):
            raise _refused(["query", name], "must be a date, YYYY-MM-DD", f"{name} is not a date")
        if kind is datetime and not _ISO_INSTANT.fullmatch(value):
            raise _refused(["query", name], "must be an RFC 3339 timestamp, e.g. 2024-02-14T08:00:00Z",
                           f"{name} is not a timestamp")
        if name in rules.boolean and value not in _BOOLEAN:
            raise _refused(["query", name], "must be true or false", f"{name} is not a boolean")


def _nul_location(value: Any, loc: list[str | int]) -> list[str | int] | None:
    if isinstance(value, str):
        return loc if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return [*loc, key]
        found = _nul_location(item, [*loc, key])
        if found is not None:
            return found
    return None


def _integral_floats_as_ints(value: Any) -> Any:
    """JSON Schema counts `30.0` as an integer; strict validation would not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral_floats_as_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(item) for item in value]
    return value


async def check_json_body(request: Request, schema: TypeAdapter[Any] | None) -> None:
    """415 for a body sent as something other than JSON; 422 for one that does not parse (FastAPI would
    answer a bare 400 for nesting too deep or digits too many), carries a NUL, or fits its schema only
    by lax coercion. Starlette keeps the parsed body on the request, so FastAPI does not parse it again."""
    raw = await request.body()
    if not raw:
        return
    content_type = request.headers.get("content-type")
    if content_type is not None and not is_json_media_type(content_type):
        raise UnsupportedMediaType("the request body must be JSON, sent with Content-Type: application/json")
    try:
        document = await request.json()
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else "not valid JSON"
        loc: list[str | int] = ["body", exc.pos] if isinstance(exc, json.JSONDecodeError) else ["body"]
        raise _refused(loc, f"the body is {reason}", f"the request body is {reason}") from None
    if content_type is None:
        raise UnsupportedMediaType("the request body must be sent with Content-Type: application/json")
    where = _nul_location(document, ["body"])
    if where is not None:
        raise _refused(where, "NUL characters are not allowed", "the request body contains a NUL character")
    if schema is None:
        return
    try:
        schema.validate_json(json.dumps(_integral_floats_as_ints(document)), strict=True)
    except PydanticValidationError as exc:
        raise ValidationFailed("the request is not valid; see `errors`", errors=[
            {"loc": ["body", *error["loc"]], "msg": error["msg"]} for error in exc.errors()]) from None
    except RecursionError:
        raise _refused(["body"], "the body is nested too deeply", "the request body is nested too deeply") \
            from None
