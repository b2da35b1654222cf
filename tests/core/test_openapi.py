"""The committed OpenAPI document is exactly what the app serves."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def test_committed_spec_matches_the_served_one(client: TestClient) -> None:
    served = client.get("/openapi.json").json()
    committed = json.loads(COMMITTED.read_text())
    assert served == committed, "openapi/openapi.json is stale: run `make openapi` and commit the result"


def test_every_v1_operation_has_a_stable_id_scope_and_audit_action(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    seen_ids = set()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation["operationId"] not in seen_ids
            seen_ids.add(operation["operationId"])
            if path.startswith("/v1/"):
                assert operation["x-audit-action"], (method, path)
                assert operation["security"][0].keys() == {"bearerAuth"}, (method, path)
                assert "401" in operation["responses"], (method, path)
