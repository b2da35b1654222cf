"""Property-based API testing: every operation the app serves, generated from its own OpenAPI document,
with a token holding every scope, under all of Schemathesis' default checks.

The operations come from the served document, so routes added later are covered without editing this
file. A few rules cannot be written in JSON Schema because they depend on data or secrets (a cursor
must come from an earlier page, a checkpoint must carry the service's signature, a token's agency must
exist, an Idempotency-Key names one body, a NIP embeds real dates, no date may lie in the future).
For *positive* cases only, `fit_runtime_rules` fills such values the way a real client would; negative
parts are left exactly as generated.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.python import asgi

from app.clock import today_jakarta
from app.config import Settings
from app.main import create_app
from app.routing import BEARER_SCHEME
from tests.conftest import ALL_SCOPES, TokenFactory

EXAMPLES_PER_OPERATION = 5
# Values only the service can mint: a positive case leaves them out, as a client on its first call would.
MINTED_QUERY_PARAMETERS = ("cursor", "checkpoint")
KNOWN_REGION = "32"  # Jawa Barat: region codes must name a real province (app/reference/provinces.csv)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
KNOWN_NIP = "198609262015051001"  # a NIP embeds real dates (birth 1986-09-26, appointed 2015-05)
TOKEN_MAX_DAYS = Settings.model_fields["token_max_days"].default


def _fit_body(document: Any) -> None:
    """NIPs to a real one; dates and election years no later than the calendar allows (SPEC §5: no
    date in the future, in Asia/Jakarta)."""
    today = today_jakarta()
    if isinstance(document, MutableMapping):
        for key, value in document.items():
            if key == "nip" and isinstance(value, str):
                document[key] = KNOWN_NIP
            elif key == "year" and isinstance(value, int | float) and value > today.year:
                document[key] = today.year
            elif isinstance(value, str) and _DATE.fullmatch(value) and value > today.isoformat():
                document[key] = today.isoformat()
            else:
                _fit_body(value)
    elif isinstance(document, list):
        for item in document:
            _fit_body(item)


def fit_runtime_rules(case: Any) -> None:
    """Fit the positive parts of a case to the rules named in the module docstring. (Applied in the test
    rather than as a `map_case` hook, which Schemathesis skips in its coverage phase.)"""
    meta = case.meta
    if meta is None:
        return
    if isinstance(case.query, MutableMapping) and not meta.is_negative_at(ParameterLocation.QUERY):
        for name in MINTED_QUERY_PARAMETERS:
            case.query.pop(name, None)
        if "region_code" in case.query:
            case.query["region_code"] = KNOWN_REGION
        if "nip" in case.query:
            case.query["nip"] = KNOWN_NIP
        bounds = [case.query.get(name) for name in ("from_seq", "to_seq")]
        if all(str(bound).isdigit() for bound in bounds) and int(str(bounds[1])) < int(str(bounds[0])):
            case.query["from_seq"], case.query["to_seq"] = bounds[1], bounds[0]
    if isinstance(case.headers, MutableMapping) and not meta.is_negative_at(ParameterLocation.HEADER):
        for name in list(case.headers):
            if name.lower() == "idempotency-key":
                case.headers[name] = str(uuid.uuid4())
    if isinstance(case.body, MutableMapping) and not meta.is_negative_at(ParameterLocation.BODY):
        _fit_body(case.body)
    if (case.operation.method.upper(), case.operation.path) == ("POST", "/v1/tokens") and \
            isinstance(case.body, MutableMapping) and not meta.is_negative_at(ParameterLocation.BODY):
        case.body["agency"] = "BKN"
        if isinstance(case.body.get("expires_in_days"), int | float):
            case.body["expires_in_days"] = min(case.body["expires_in_days"], TOKEN_MAX_DAYS)


@pytest.fixture
def api_schema(make_settings: Callable[..., Settings], issue_token: TokenFactory) -> Iterator[Any]:
    # Generated traffic is heavy; the limits themselves are tested in test_rate_limits.py.
    # (NORMAL: durability is not what this test is about, and an fsync per generated request is slow.)
    app = create_app(make_settings(rate_limit="1000000/minute", auth_failure_limit="1000000/minute",
                                   sqlite_synchronous="NORMAL"))
    # The token goes in through the security scheme, so Schemathesis knows which requests it sends
    # without one on purpose (and expects 401 for them).
    config = SchemathesisConfig.from_dict({
        "auth": {"openapi": {BEARER_SCHEME: {"bearer": issue_token("BKN", *ALL_SCOPES)}}},
        # NUL is refused in every string (app/inputs.py), which JSON Schema has no word for.
        # Deterministic, so a run that passes passes again on the same code (CI must not flicker);
        # FUZZ_EXPLORE=1 in the environment draws new data each run, to look for more.
        "generation": {"max-examples": EXAMPLES_PER_OPERATION, "allow-x00": False,
                       "deterministic": not os.environ.get("FUZZ_EXPLORE")},
    })
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    yield schema
    asgi.shutdown_lifespans()


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # Schemathesis' lazy loader renames the test node through `_nodeid`, which pytest 9 no longer sets.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_every_operation_honours_its_openapi_document(case: Any) -> None:
    fit_runtime_rules(case)
    case.call_and_validate()
