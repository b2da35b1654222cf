"""The fast canonical JSON of an event is byte-identical to the reference rule for every event (SPEC §9).

Reference: `json.dumps(event_without_hash, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
of the document `event_document` builds from the stored columns. Where the reference raises, the fast
path must raise too (or, when verifying stored rows, report the row as invalid).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import psycopg

from app.audit import canonical
from app.audit.canonical import ROW_FIELDS, document_text
from app.audit.chain import event_document, event_hash, row_hash
from app.audit.models import AuditEvent
from app.clock import format_instant

# Every character, including quotes, backslashes, control characters, non-BMP and lone surrogates.
TEXT = st.text(st.characters(exclude_categories=()) | st.characters(categories=["Cs"])
               | st.sampled_from('"\\/\x00\x08\x0c\n\r\t\x1f\x7f\u2028\ufeff%'), max_size=40)
PLAIN = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
OPTIONAL_TEXT = st.none() | TEXT
# Mostly the types the columns hold, sometimes anything JSON can hold.
ANYTHING = JSON_VALUES


def reference_text(document: dict[str, Any]) -> str:
    body = {k: v for k, v in document.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def same_outcome(fast: Any, reference: Any) -> None:
    """Both give the same value, or both raise the same kind of error."""
    try:
        expected = reference()
    except Exception as exc:
        with pytest.raises(type(exc)):
            fast()
        return
    assert fast() == expected


offsets = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
instants = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30),
                        timezones=st.just(UTC) | st.timezones() | st.builds(timezone, offsets))

rows = st.tuples(
    st.integers(min_value=-(2**63), max_value=2**63) | ANYTHING,  # seq
    TEXT,  # id
    instants,  # occurred_at, loaded
    TEXT,  # request_id
    st.sampled_from(["token", "anonymous", "cli"]) | TEXT,  # actor_kind
    OPTIONAL_TEXT, OPTIONAL_TEXT,  # actor_token_id, actor_agency
    TEXT, TEXT,  # action, outcome
    st.none() | st.integers() | ANYTHING,  # status_code
    OPTIONAL_TEXT, OPTIONAL_TEXT, OPTIONAL_TEXT, OPTIONAL_TEXT,  # method, path, query, resource_type
    st.lists(TEXT, max_size=5) | ANYTHING,  # resource_ids, loaded
    OPTIONAL_TEXT, OPTIONAL_TEXT, OPTIONAL_TEXT,  # client_ip, user_agent, purpose
    st.dictionaries(TEXT, JSON_VALUES, max_size=5) | ANYTHING,  # detail, loaded
    TEXT,  # prev_hash
    TEXT,  # hash
)


def test_the_template_follows_the_sorted_keys() -> None:
    document: dict[str, Any] = {key: key for key in canonical.DOCUMENT_KEYS}
    document["actor"] = {key: key for key in canonical.ACTOR_KEYS}
    assert document_text(document) == reference_text(document)


@settings(max_examples=600)
@given(rows)
@example((1, "id", datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "r", "token", None, None, "a", "o", 200,
          None, None, None, None, [], None, None, None, {}, "0" * 64, "h"))
@example((1, "\"\\\n\x00\x1f\x7f\u2028é😀", datetime(999, 1, 2, tzinfo=UTC), "r", "cli", None, None, "a", "o",
          True, "GET", "/v1/x?a=%s%d", "q=%(x)s", None, ["\ud800"], None, None, None,
          {"b": {"z": 1, "a": [1.5, float("nan"), None, True]}}, "p", "h"))
def test_document_text_equals_json_dumps_for_any_event(row: tuple[Any, ...]) -> None:
    document = event_document(dict(zip(ROW_FIELDS, row, strict=True))) if _loadable(row) else None
    assume(document is not None)
    assert document is not None
    same_outcome(lambda: document_text(document), lambda: reference_text(document))
    same_outcome(lambda: event_hash(document),
                 lambda: hashlib.sha256(reference_text(document).encode()).hexdigest())


@settings(max_examples=600)
@given(rows)
def test_row_hash_equals_the_reference_from_loaded_columns(row: tuple[Any, ...]) -> None:
    def reference() -> str:
        document = event_document(dict(zip(ROW_FIELDS, row, strict=True)))
        return hashlib.sha256(reference_text(document).encode()).hexdigest()

    same_outcome(lambda: row_hash(row), reference)


@given(st.dictionaries(st.sampled_from(sorted(canonical.DOCUMENT_KEYS)) | TEXT, JSON_VALUES, max_size=22),
       st.dictionaries(st.sampled_from(sorted(canonical.ACTOR_KEYS)) | TEXT, JSON_VALUES, max_size=4))
def test_documents_of_another_shape_go_to_the_reference(
    document: dict[str, Any], actor: dict[str, Any]
) -> None:
    document = {**document, "actor": actor}
    same_outcome(lambda: document_text(document), lambda: reference_text(document))


def _loadable(row: tuple[Any, ...]) -> bool:
    try:
        event_document(dict(zip(ROW_FIELDS, row, strict=True)))
    except Exception:
        return False
    return True


# --- stored columns: the shortcuts give what loading the row and building the document gives ----------
# Verification builds each canonical text straight from the raw row; a shortcut either gives exactly what
# the reference gives or raises (the row then goes to the reference), and for what the service itself
# stores it must give an answer (else verification would be slow, not wrong).

SQLITE = sqlite.dialect()
PSYCOPG = psycopg.dialect()  # type: ignore[no-untyped-call]
TABLE = AuditEvent.__table__


def loader(column: str, dialect: Any) -> Any:
    return TABLE.c[column].type.dialect_impl(dialect).result_processor(dialect, None)


def binder(column: str, dialect: Any) -> Any:
    return TABLE.c[column].type.dialect_impl(dialect).bind_processor(dialect)


def exact_or_raises(fast: Any, reference: Any) -> bool:
    """The shortcut's answer is the reference's, or it raised. Returns whether it answered."""
    try:
        answer = fast()
    except (TypeError, ValueError, AttributeError, IndexError):
        return False
    assert answer == reference()
    return True


def stored_instant_texts() -> st.SearchStrategy[str]:
    """What SQLite holds for occurred_at: the ORM's own text, near misses, and anything at all."""
    stored = st.datetimes(timezones=st.just(UTC)).map(binder("occurred_at", SQLITE))
    mangled = st.tuples(stored, st.integers(0, 25), st.characters(codec="utf-8")).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1:])
    near = st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}[.,][0-9]{6}",
                         fullmatch=True)
    return stored | mangled | near | PLAIN


@settings(max_examples=1500)
@given(stored_instant_texts())
@example("0999-01-02 03:04:05.000006")
@example("2026-W47-1 10:00:00.123456")
@example("2026-11-22 24:00:00.000000")
@example("2026-02-30 10:00:00.000000")
@example("2026-11-22 10:00:00,123456")
@example("2026-11-22T10:00:00.123456")
@example("2026-11-22 10:00:00.123+07")
@example("٢٠٢٦-11-22 10:00:00.123456")
def test_stored_instant_on_sqlite(raw: str) -> None:
    load = loader("occurred_at", SQLITE)
    exact_or_raises(lambda: canonical.sqlite_instant_json(raw),
                    lambda: json.dumps(format_instant(load(raw)), ensure_ascii=False))


@given(st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.just(UTC)))
def test_instants_the_service_stores_take_the_shortcut(value: datetime) -> None:
    raw = binder("occurred_at", SQLITE)(value)
    assert canonical.sqlite_instant_json(raw) == json.dumps(format_instant(value))


def stored_lists() -> st.SearchStrategy[str]:
    """resource_ids as stored: json.dumps of a list in its usual and unusual spellings, and junk."""
    encodable = TEXT.filter(lambda s: not any("\ud800" <= c <= "\udfff" for c in s))
    values = st.lists(encodable, max_size=5)
    separators = st.sampled_from([None, (",", ":"), (", ", ": ")])
    spelled = st.tuples(values | JSON_VALUES, st.booleans(), separators).map(
        lambda t: json.dumps(t[0], ensure_ascii=t[1], separators=t[2]))
    # Written by hand, so that strings hold raw control characters, quotes, backslashes, separators.
    pieces = st.sampled_from(['"', ", ", ",", " ", "[", "]", "a", "\\", "\x01", "é"])
    by_hand = st.tuples(st.lists(encodable | st.lists(pieces, max_size=4).map("".join), max_size=4),
                        st.sampled_from([",", ", ", " ,", ",\t"])).map(
        lambda t: "[" + t[1].join(f'"{s}"' for s in t[0]) + "]")
    return spelled | by_hand | PLAIN | st.just('["a" , "b"]') | st.just('[ "a"]') | st.just('["a",\t"b"]')


@settings(max_examples=2000)
@given(stored_lists())
@example('[", "]')  # a string that looks like a separator between two quotes
@example('[", ","b"]')
@example('["a", "b","c"]')
@example('["a","b","]')
@example('["]')
@example("[]")
@example('["a\x01b", "c"]')
@example('["a\\\\b"]')
def test_stored_resource_ids(raw: str) -> None:
    for load in (loader("resource_ids", SQLITE), json.loads):  # PostgreSQL: the text, parsed as psycopg does
        exact_or_raises(lambda: canonical.stored_list_json(raw),
                        lambda load=load: json.dumps(list(load(raw)), sort_keys=True, separators=(",", ":"),
                                                     ensure_ascii=False).encode())


@given(st.lists(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'),
                        max_size=40), max_size=20))
def test_lists_the_service_stores_take_the_shortcut(ids: list[str]) -> None:
    """Record, token and agency ids: ASCII, which the service's JSON writes as itself."""
    raw = binder("resource_ids", SQLITE)(ids)
    expected = json.dumps(ids, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical.stored_list_json(raw) == expected


raw_rows = st.tuples(
    st.integers(min_value=-(2**63), max_value=2**63) | ANYTHING,  # seq
    TEXT | ANYTHING,  # id
    st.none(),  # occurred_at: given as JSON
    TEXT | ANYTHING, TEXT | ANYTHING,  # request_id, actor_kind
    OPTIONAL_TEXT | ANYTHING, OPTIONAL_TEXT | ANYTHING,  # actor_token_id, actor_agency
    TEXT, TEXT | ANYTHING,  # action, outcome
    st.none() | st.integers() | ANYTHING,  # status_code
    OPTIONAL_TEXT, OPTIONAL_TEXT | ANYTHING, OPTIONAL_TEXT, OPTIONAL_TEXT,  # method, path, query, res. type
    st.none(),  # resource_ids: given as JSON
    OPTIONAL_TEXT, OPTIONAL_TEXT | ANYTHING, OPTIONAL_TEXT | st.binary(),  # client_ip, user_agent, purpose
    st.none(),  # detail: given as JSON
    TEXT | ANYTHING,  # prev_hash
    TEXT,  # hash
)


@settings(max_examples=1000)
@given(raw_rows, instants, st.lists(TEXT, max_size=3), st.dictionaries(TEXT, JSON_VALUES, max_size=3))
@example((1, "id", None, "r", "token", None, None, "a", "o", 200, None, None, None, None, None, None, None,
          None, None, "0" * 64, "h"), datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), [], {})
@example((True, "id", None, "r", "cli", None, None, "a", "o", True, None, None, None, None, None, None, None,
          None, None, "p", "h"), datetime(2026, 1, 2, tzinfo=UTC), [], {})
@example((1, "\ud800", None, "r", "token", None, None, "a", "o", 200, None, None, None, None, None, None,
          None, None, None, "p", "h"), datetime(2026, 1, 2, tzinfo=UTC), [], {})  # no UTF-8, so no hash
@example((1, "id", None, "r", "token", None, None, "a", "o", 2**70, None, None, None, None, None, None, None,
          None, None, "p", "h"), datetime(2026, 1, 2, tzinfo=UTC), [], {})  # beyond what orjson writes
def test_stored_json_is_the_reference_or_raises(
    row: tuple[Any, ...], when: datetime, ids: list[str], detail: dict[str, Any]
) -> None:
    loaded = dict(zip(ROW_FIELDS, row, strict=True)) | {"occurred_at": when, "resource_ids": ids,
                                                          "detail": detail}
    try:
        document = event_document(loaded)
        reference = reference_text(document)
    except Exception:
        assume(False)
    as_json = {key: json.dumps(document[key], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
               for key in ("occurred_at", "resource_ids", "detail")}
    answered = exact_or_raises(
        lambda: canonical.stored_json(row, *(as_json[k] for k in ("occurred_at", "resource_ids", "detail"))),
        lambda: reference.encode())
    # What drivers return for the service's own rows always gets an answer: text they decoded from UTF-8
    # (no lone surrogates: an event holding one has no hash under the reference either) and integers.
    try:
        reference.encode()
    except UnicodeEncodeError:
        return
    plain = all(isinstance(row[i], str) for i in (1, 3, 4, 7, 8, 19)) and type(row[0]) is int and all(
        row[i] is None or isinstance(row[i], str) for i in (5, 6, 10, 11, 12, 13, 15, 16, 17)) and (
        row[9] is None or type(row[9]) is int) and all(  # no database column holds more than 64 bits
        -(2**63) <= value < 2**64 for value in (row[0], row[9]) if type(value) is int)
    assert answered or not plain


def test_orjson_writes_every_code_point_as_json_dumps() -> None:
    """The shortcut's premise (app/audit/canonical.py): for any str without a lone surrogate, orjson's text
    is json.dumps's with ensure_ascii=False; checked on every code point, each also beside an escape."""
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    assert canonical.stored_list_json(json.dumps([every, every[::-1]])) == json.dumps(
        [every, every[::-1]], separators=(",", ":"), ensure_ascii=False).encode()
    for value in (every, '"\\\x00\x1f\x7f\u2028', "", "é😀"):
        row = (1, value, None, value, value, value, None, value, value, 200, value, value, value, value, None,
               value, value, value, None, value, "h")
        document = event_document(dict(zip(ROW_FIELDS, row, strict=True)) | {
            "occurred_at": datetime(2026, 1, 2, tzinfo=UTC), "resource_ids": [], "detail": {}})
        assert canonical.stored_json(row, '"2026-01-02T00:00:00.000000Z"', "[]", "{}") == \
            reference_text(document).encode()


@pytest.mark.parametrize("odd", [1.5, 200.0, b"x", ["a"], {"a": 1}, (1,), datetime(2026, 1, 1)])
def test_a_page_with_any_other_type_is_not_plain(odd: Any) -> None:
    """Verification writes a page's rows without a check per row only when the whole page is plain."""
    row = (1, "id", "2026-01-01 00:00:00.000000", "r", "token", None, "BKN", "a", "success", 200, "GET",
           "/", None, None, "[]", None, None, None, "{}", "p", "h")
    assert canonical.plain_values([row, row])
    for column in range(len(row)):
        changed = (*row[:column], odd, *row[column + 1:])
        assert not canonical.plain_values([row, changed])
        with pytest.raises(TypeError):
            canonical.stored_json(changed, '"w"', "[]", "{}")
