"""OpenAPI request bodies for the routes that parse their own body (PATCH and workflow actions).

They read the body only after the record is loaded (SPEC §5 ranks 404 and 428 before 422), so FastAPI
cannot derive the schema from a parameter; these are derived from the same pydantic models instead,
with every `$ref` inlined because a route's `openapi_extra` cannot add components.
"""

from __future__ import annotations

from typing import Any

from app.violations.conditions import JSON_MEDIA_TYPE, MERGE_PATCH_MEDIA_TYPE
from app.violations.schemas import ActionRequest, ViolationContent

_REF_PREFIX = "#/$defs/"


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace every `{"$ref": "#/$defs/X"}` with X itself (the models here are not recursive). A
    discriminator keeps only its `propertyName`: its mapping would point at $defs that are gone."""
    definitions = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
                return resolve(definitions[ref.removeprefix(_REF_PREFIX)])
            resolved = {k: resolve(v) for k, v in node.items() if k != "$defs"}
            if isinstance(resolved.get("discriminator"), dict):
                resolved["discriminator"] = {"propertyName": resolved["discriminator"]["propertyName"]}
            return resolved
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def merge_patch_schema() -> dict[str, Any]:
    """ViolationContent with nothing required at the top or inside `subject`/`election`: a merge patch
    names only what changes (`null` removes a member, which for a required one gives 422)."""
    schema = inline_refs(ViolationContent.model_json_schema())
    schema.pop("required", None)
    for name in ("subject", "election"):
        schema["properties"][name].pop("required", None)
    schema["title"] = "ViolationPatch"
    schema["description"] = ("JSON merge patch (RFC 7396) of the record's content. Any other field, "
                             "including those the server owns, is rejected with 422.")
    return schema


def action_schema() -> dict[str, Any]:
    schema = inline_refs(ActionRequest.json_schema())
    schema["title"] = "ViolationAction"
    return schema


def request_body(schema: dict[str, Any], *media_types: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {m: {"schema": schema} for m in media_types}}}


PATCH_BODY = request_body(merge_patch_schema(), MERGE_PATCH_MEDIA_TYPE, JSON_MEDIA_TYPE)
ACTION_BODY = request_body(action_schema(), JSON_MEDIA_TYPE)
