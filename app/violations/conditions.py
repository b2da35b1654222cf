"""HTTP preconditions (ETag, If-Match, If-None-Match) and the request bodies this package parses itself.

PATCH and workflow actions read their body only after the record is loaded and If-Match is present,
because SPEC §5 ranks 404 and 428 before 422.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from app.errors import PreconditionFailed, PreconditionRequired, UnsupportedMediaType, ValidationFailed

JSON_MEDIA_TYPE = "application/json"
MERGE_PATCH_MEDIA_TYPE = "application/merge-patch+json"
_ENTITY_TAG = re.compile(r'\s*(W/)?"([^"]*)"\s*')


@dataclass(frozen=True)
class RawBody:
    content_type: str | None
    data: bytes


def etag(version: int) -> str:
    return f'"{version}"'


def _entity_tags(header: str) -> list[tuple[bool, str]] | None:
    """[(weak, opaque tag)] of a comma-separated list, or None when the header is not one."""
    tags = []
    for part in header.split(","):
        match = _ENTITY_TAG.fullmatch(part)
        if match is None:
            return None
        tags.append((match.group(1) is not None, match.group(2)))
    return tags


def none_match(header: str | None, version: int) -> bool:
    """True when If-None-Match names the current version (weak comparison, RFC 9110 §13.1.2)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    tags = _entity_tags(header)
    return tags is not None and any(tag == str(version) for _, tag in tags)


def required_if_match(header: str | None) -> str:
    """428 unless If-Match is present and names a version (`*` would defeat the point: lost updates)."""
    if header is None or not header.strip():
        raise PreconditionRequired('this request needs If-Match: "<version>" (the ETag you last read)')
    if header.strip() == "*":
        raise PreconditionRequired('If-Match must name the version you last read, e.g. "3"; `*` is refused')
    return header


def check_if_match(header: str, version: int) -> None:
    """412 unless If-Match names the current version (strong comparison: weak tags never match)."""
    tags = _entity_tags(header)
    if tags is None:
        raise PreconditionFailed(f'If-Match must be an entity tag such as "{version}"; got {header!r}')
    if not any(not weak and tag == str(version) for weak, tag in tags):
        raise PreconditionFailed(f'the record has changed; its current ETag is "{version}"')


def parse_json_object(body: RawBody, media_types: Sequence[str]) -> dict[str, Any]:
    """415 for another media type; 422 for a body that is not a JSON object."""
    media_type = (body.content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in media_types:
        raise UnsupportedMediaType(f"send the body as {' or '.join(media_types)}")
    try:
        value = json.loads(body.data)
    except (ValueError, UnicodeDecodeError):
        raise body_error([], "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise body_error([], "the body must be a JSON object")
    return value


def body_error(loc: Iterable[str | int], message: str) -> ValidationFailed:
    return ValidationFailed("the request is not valid; see `errors`",
                            errors=[{"loc": ["body", *loc], "msg": message}])


def body_errors(exc: ValidationError, *, drop_tag: bool = False) -> ValidationFailed:
    """Pydantic errors as field problems under `body`; for a tagged union the tag is dropped from loc."""
    problems: list[Mapping[str, Any]] = []
    for error in exc.errors():
        loc = list(error["loc"])
        if drop_tag and loc:
            loc = loc[1:]
        if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
            loc = ["action"]
        problems.append({"loc": ["body", *loc], "msg": str(error["msg"])})
    return ValidationFailed("the request is not valid; see `errors`", errors=problems)
