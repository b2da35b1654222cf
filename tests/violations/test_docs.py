"""The docs and the OpenAPI document say what workflow.py declares, and nothing dangles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app.violations.workflow import (
    EDITABLE_FIELDS,
    TRANSITIONS,
    Category,
    ElectionStage,
    PositionType,
    Sanction,
    Status,
    transition_table_markdown,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_walkthrough_embeds_the_transition_table_and_the_whole_vocabulary() -> None:
    text = (DOCS / "violations.md").read_text(encoding="utf-8")
    assert transition_table_markdown() in text
    for vocabulary in (Status, Category, Sanction, PositionType, ElectionStage):
        missing = [v.value for v in vocabulary if f"`{v.value}`" not in text]
        assert not missing, f"docs/violations.md does not mention {missing}"


def test_the_feed_design_is_documented() -> None:
    text = (DOCS / "changes-feed.md").read_text(encoding="utf-8")
    assert "next_after" in text and "chain" in text


def _spec(client: TestClient) -> dict[str, Any]:
    return dict(client.get("/openapi.json").json())


def test_openapi_enums_come_from_the_vocabulary(client: TestClient) -> None:
    schemas = _spec(client)["components"]["schemas"]
    create = schemas["ViolationCreate"]["properties"]
    assert set(create) == {*EDITABLE_FIELDS, "source"}
    enums = {name: schema.get("enum") for name, schema in schemas.items()}
    assert enums["Category"] == [c.value for c in Category]
    assert enums["Status"] == [s.value for s in Status]
    assert enums["Sanction"] == [s.value for s in Sanction]


def test_self_parsed_bodies_are_declared_with_every_ref_resolved(client: TestClient) -> None:
    spec = _spec(client)
    assert "#/$defs/" not in json.dumps(spec)
    patch = spec["paths"]["/v1/violations/{violation_id}"]["patch"]["requestBody"]["content"]
    assert set(patch) == {"application/merge-patch+json", "application/json"}
    patch_schema = patch["application/json"]["schema"]
    assert set(patch_schema["properties"]) == set(EDITABLE_FIELDS) and "required" not in patch_schema
    assert patch_schema["additionalProperties"] is False
    actions = spec["paths"]["/v1/violations/{violation_id}/actions"]["post"]["requestBody"]["content"]
    variants = actions["application/json"]["schema"]["oneOf"]
    by_action = {v["properties"]["action"]["const"]: v for v in variants}
    assert sorted(by_action) == sorted(a.value for a in TRANSITIONS)
    letter = by_action["recommend"]["properties"]["recommendation"]
    assert letter["properties"]["sanction"]["enum"] == [s.value for s in Sanction]


def test_every_route_names_its_audit_action_and_scope(client: TestClient) -> None:
    expected = {
        ("post", "/v1/violations"): ("violation.create", "violations:write"),
        ("get", "/v1/violations"): ("violation.list", "violations:read"),
        ("get", "/v1/violations/{violation_id}"): ("violation.read", "violations:read"),
        ("patch", "/v1/violations/{violation_id}"): ("violation.update", "violations:write"),
        ("post", "/v1/violations/{violation_id}/actions"): ("violation.action", "violations:write"),
        ("get", "/v1/violations/{violation_id}/history"): ("violation.history", "violations:read"),
        ("get", "/v1/violations/{violation_id}/versions/{version}"): ("violation.version", "violations:read"),
        ("get", "/v1/changes"): ("changes.read", "violations:read"),
    }
    paths = _spec(client)["paths"]
    for (method, path), (action, scope) in expected.items():
        operation = paths[path][method]
        assert (operation["x-audit-action"], operation["x-required-scope"]) == (action, scope), path
