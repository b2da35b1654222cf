"""GET /v1/violations/{id} writes the stored document with orjson: byte for byte what encode_json writes,
which every other route uses (app/violations/documents.py, `stored_record_json`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.violations.documents import encode_json, stored_record_json
from app.violations.schemas import ViolationOut
from tests.violations.conftest import Api, body_with

# What a record document can hold: no floats (see the schema test below). Every character but lone
# surrogates, which the stored text may still carry as an escape: they take the fallback.
TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from('"\\/\x00\x1f\x7f\u2028é😀'), max_size=30)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(TEXT, VALUES, max_size=6))  # a document is an object
@example({"a": "\ud800"})  # stored as an escape by json.dumps; orjson refuses it
@example({"n": 2**70})  # beyond 64 bits
@example({"b": 1, "a": [True, None, "x"]})  # key order kept, as json keeps it
def test_stored_record_json_is_encode_json(document: Any) -> None:
    stored = json.dumps(document)  # how the JSON column stores it (SQLAlchemy's default serialiser)
    try:
        expected = encode_json(document)
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8: both refuse it
        for given_ in (stored, json.loads(stored)):
            with pytest.raises(UnicodeEncodeError):
                stored_record_json(given_)
        return
    assert stored_record_json(stored) == expected  # SQLite: the text
    assert stored_record_json(json.loads(stored)) == expected  # PostgreSQL: parsed by psycopg


def _types(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        found = {schema["type"]} if isinstance(schema.get("type"), str) else set()
        return found.union(*(_types(value) for value in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_types(value) for value in schema))
    return set()


def test_a_record_holds_no_number_that_is_not_an_integer() -> None:
    """The premise of the fast path: orjson and json write floats differently (1e16: `1e16`, `1e+16`)."""
    types = _types(ViolationOut.model_json_schema())
    assert "integer" in types and "string" in types
    assert "number" not in types


def test_get_is_byte_for_byte_the_latest_version(api: Api) -> None:
    unusual = body_with({"subject": {"name": "Siti \"Aisyah\" Rahmawati — Ñ 😀"}},
                        description="Line one\nline two\ttabbed \\ backslash </script> \u2028")
    for record in (api.created(body=unusual), api.drive("recommended")):
        current = api.get(record["id"])
        assert current.status_code == 200
        latest = api.version(record["id"], record["version"])
        assert current.content == latest.content == encode_json(current.json())
