"""The canonical JSON of an audit event (SPEC §9), built fast and byte-identical to the reference rule.

The rule is `json.dumps(event_without_hash, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.
Every event has the same keys, so their sorted order never changes: the fast path fills a fixed template
with the JSON of each value, made by the functions json.dumps itself uses for it (the C string encoder,
`int.__repr__`, and a C encoder with the same options for nested lists and dicts; json's own encoder for a
value of any other type). Any error sends the whole event to the reference rule, so the result, or the
exception, is always the reference's. tests/audit_perf checks this against json.dumps with hypothesis.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import orjson

from app.clock import format_instant

# Fields of a stored event row, in the order the fast paths take them (the hash last).
ROW_FIELDS = (
    "seq", "id", "occurred_at", "request_id", "actor_kind", "actor_token_id", "actor_agency", "action",
    "outcome", "status_code", "method", "path", "query", "resource_type", "resource_ids", "client_ip",
    "user_agent", "purpose", "detail", "prev_hash", "hash",
)
_ACTOR_FIELDS = {"actor_kind": "kind", "actor_token_id": "token_id", "actor_agency": "agency"}
DOCUMENT_KEYS = frozenset([*(f for f in ROW_FIELDS if f not in _ACTOR_FIELDS), "actor"])
ACTOR_KEYS = frozenset(_ACTOR_FIELDS.values())
_UNHASHED_KEYS = DOCUMENT_KEYS - {"hash"}

_REFERENCE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_encode_value = _REFERENCE.encode
_encode_str = json.encoder.encode_basestring  # what the encoder above uses for every str
_int_repr = int.__repr__  # what it uses for every int
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)


def canonical_json(document: dict[str, Any]) -> bytes:
    """The reference rule, for any object."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _nested_encoder() -> Callable[[Any], str]:
    if _make_c_encoder is None:
        return _encode_value
    # The C encoder json.dumps builds per call, built once. Without its circular-reference check (a JSON
    # document cannot contain a cycle); a cycle still ends in an error, and errors go to the reference.
    encode = _make_c_encoder(None, _REFERENCE.default, _encode_str, None, ":", ",", True, False, True)
    return lambda value: "".join(encode(value, 0))


_encode_nested = _nested_encoder()


def _template() -> tuple[str, tuple[str, ...]]:
    """The event's canonical text with a %s per value, and the row fields in the order they fill it."""
    keys = sorted(_UNHASHED_KEYS)
    parts, order = [], []
    for key in keys:
        if key == "actor":
            actor = sorted(_ACTOR_FIELDS.items(), key=lambda item: item[1])
            parts.append('"actor":{' + ",".join(f"{json.dumps(k)}:%s" for _, k in actor) + "}")
            order += [field for field, _ in actor]
        else:
            parts.append(f"{json.dumps(key)}:%s")
            order.append(key)
    return "{" + ",".join(parts) + "}", tuple(order)


_TEMPLATE, _FILL_ORDER = _template()
# The order `fill` below is written in; checked here so that the template and the code cannot drift.
_WRITTEN_ORDER = (
    "action", "actor_agency", "actor_kind", "actor_token_id", "client_ip", "detail", "id", "method",
    "occurred_at", "outcome", "path", "prev_hash", "purpose", "query", "request_id", "resource_ids",
    "resource_type", "seq", "status_code", "user_agent",
)
if _FILL_ORDER != _WRITTEN_ORDER:
    raise RuntimeError(f"canonical template order changed: {_FILL_ORDER}")


def fill(seq: Any, id_: Any, occurred_at_json: str, request_id: Any, kind: Any, token_id: Any, agency: Any,
         action: Any, outcome: Any, status_code: Any, method: Any, path: Any, query: Any, resource_type: Any,
         resource_ids_json: str, client_ip: Any, user_agent: Any, purpose: Any, detail_json: str,
         prev_hash: Any) -> str:
    """The canonical text from an event's values, with `occurred_at`, `resource_ids` and `detail` given as
    JSON already (callers cache those). Values are what the API returns (the actor's three flattened)."""
    s, v = _encode_str, _encode_value
    return _TEMPLATE % (
        s(action) if action.__class__ is str else v(action),
        s(agency) if agency.__class__ is str else "null" if agency is None else v(agency),
        s(kind) if kind.__class__ is str else v(kind),
        s(token_id) if token_id.__class__ is str else "null" if token_id is None else v(token_id),
        s(client_ip) if client_ip.__class__ is str else "null" if client_ip is None else v(client_ip),
        detail_json,
        s(id_) if id_.__class__ is str else v(id_),
        s(method) if method.__class__ is str else "null" if method is None else v(method),
        occurred_at_json,
        s(outcome) if outcome.__class__ is str else v(outcome),
        s(path) if path.__class__ is str else "null" if path is None else v(path),
        s(prev_hash) if prev_hash.__class__ is str else v(prev_hash),
        s(purpose) if purpose.__class__ is str else "null" if purpose is None else v(purpose),
        s(query) if query.__class__ is str else "null" if query is None else v(query),
        s(request_id) if request_id.__class__ is str else v(request_id),
        resource_ids_json,
        s(resource_type) if resource_type.__class__ is str else "null" if resource_type is None
        else v(resource_type),
        _int_repr(seq) if seq.__class__ is int else v(seq),
        _int_repr(status_code) if status_code.__class__ is int else "null" if status_code is None
        else v(status_code),
        s(user_agent) if user_agent.__class__ is str else "null" if user_agent is None else v(user_agent),
    )


def value_json(value: Any) -> str:
    """JSON of one value exactly as inside the canonical text (str and int without the encoder's detour)."""
    if value.__class__ is str:
        return _encode_str(value)
    if value.__class__ is dict and not value:
        return "{}"
    return _encode_nested(value)


def values_text(v: tuple[Any, ...] | list[Any]) -> str:
    """Canonical text from the document's values in ROW_FIELDS order (without the hash): occurred_at and
    resource_ids as in the document (text, list)."""
    return fill(v[0], v[1], value_json(v[2]), v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12],
                v[13], value_json(v[14]), v[15], v[16], v[17], value_json(v[18]), v[19])


def document_text(document: dict[str, Any]) -> str:
    """Canonical text of an event document without its `hash` (present or not); any object works."""
    keys = document.keys()
    actor = document.get("actor")
    if keys in (DOCUMENT_KEYS, _UNHASHED_KEYS) and actor.__class__ is dict and actor.keys() == ACTOR_KEYS:
        values = (
            document["seq"], document["id"], document["occurred_at"], document["request_id"], actor["kind"],
            actor["token_id"], actor["agency"], document["action"], document["outcome"],
            document["status_code"], document["method"], document["path"], document["query"],
            document["resource_type"], document["resource_ids"], document["client_ip"],
            document["user_agent"], document["purpose"], document["detail"], document["prev_hash"],
        )
        try:
            return values_text(values)
        except Exception:  # noqa: S110 - the reference below gives the answer, or the error, it would give
            pass
    return _encode_value({k: v for k, v in document.items() if k != "hash"})


def instant_text(value: Any) -> str:
    """`format_instant` of a loaded `occurred_at`, without strftime in the common case."""
    if value.__class__ is datetime and value.tzinfo is UTC and value.year >= 1000:
        # For a UTC instant this is exactly strftime("%Y-%m-%dT%H:%M:%S.%fZ"), whose %Y has no padding
        # before year 1000, hence the guard.
        return value.isoformat(timespec="microseconds")[:-6] + "Z"
    return format_instant(value)


# --- stored columns, for verification ---------------------------------------------------------------
# Verification reads raw driver rows (ROW_FIELDS order) and builds the canonical text from them directly.
# Each function below either returns exactly what building the document from the loaded row would give,
# or raises; the caller then asks the reference (app/audit/stream.py), so an unusual row is only slower.


# The stored-row shortcut encodes with orjson (compiled), which writes str, int, bool and None exactly as
# json.dumps(..., ensure_ascii=False) does (every code point was compared; tests/audit_perf checks it with
# hypothesis) and raises for a lone surrogate or an int beyond 64 bits. A float, a nested value or any
# other type would not be written as the reference writes it, so a row holding one raises instead.
_Fragment = orjson.Fragment  # JSON text put in as it is
_dumps, _loads = orjson.dumps, orjson.loads
_PLAIN_TYPES = frozenset([str, int, bool, type(None)])
_STR = frozenset([str])


def plain_values(rows: Iterable[Sequence[Any]]) -> bool:
    """Whether every value in these rows is a str, int, bool or None: one pass in C over a whole page of
    rows costs less than a check per row (0.25 against 0.4 us a row)."""
    return _PLAIN_TYPES.issuperset(map(type, chain.from_iterable(rows)))


def stored_json(row: Sequence[Any], occurred_at_json: str, resource_ids_json: str | bytes,
                detail_json: str) -> bytes:
    """The canonical text, UTF-8, of a stored event row whose columns all hold str, int, bool or None;
    `occurred_at`, `resource_ids` and `detail` given as their JSON. Any other value raises (TypeError),
    so the bytes, when there are any, are `document_text(event_document(loaded row)).encode()`."""
    if not plain_values((row,)):
        raise TypeError("a column holds a value of another type")
    return plain_row_json(row, occurred_at_json, resource_ids_json, detail_json)


def plain_row_json(row: Sequence[Any], occurred_at_json: str, resource_ids_json: str | bytes,
                   detail_json: str) -> bytes:
    """`stored_json` of a row already known to pass `plain_values` (else the bytes may not be the
    reference's)."""
    (seq, id_, _, request_id, kind, token_id, agency, action, outcome, status_code, method, path, query,
     resource_type, _, client_ip, user_agent, purpose, _, prev_hash, *_) = row
    # Keys in the canonical (sorted) order: orjson keeps a dict's order.
    return _dumps({
        "action": action, "actor": {"agency": agency, "kind": kind, "token_id": token_id},
        "client_ip": client_ip, "detail": _Fragment(detail_json), "id": id_, "method": method,
        "occurred_at": _Fragment(occurred_at_json), "outcome": outcome, "path": path,
        "prev_hash": prev_hash, "purpose": purpose, "query": query, "request_id": request_id,
        "resource_ids": _Fragment(resource_ids_json), "resource_type": resource_type, "seq": seq,
        "status_code": status_code, "user_agent": user_agent,
    })


_from_iso = datetime.fromisoformat


def sqlite_instant_json(raw: Any) -> str:
    """JSON of the API's `occurred_at` for the text SQLite holds ("YYYY-MM-DD HH:MM:SS.ffffff", naive UTC,
    as app.db.UTCDateTime writes it): `"YYYY-MM-DDTHH:MM:SS.ffffffZ"`. Raises for any other value.

    The column loads with `datetime.fromisoformat` (SQLAlchemy's SQLite DATETIME). A naive value from 26
    ASCII characters with "-" at 7 (not a week date), " " at 10 and "." at 19 can only have been written
    "YYYY-MM-DD HH:MM:SS.ffffff", all fields zero-padded; the API prints the same digits with `T` and `Z`
    (strftime, which does not pad years before 1000: hence the first digit)."""
    if _from_iso(raw).tzinfo is None and len(raw) == 26 and raw[10] == " " and raw[19] == "." \
            and raw[7] == "-" and raw[0] != "0" and raw.isascii():
        return f'"{raw[:10]}T{raw[11:]}Z"'
    raise ValueError("not an instant as the service stores it")


def stored_list_json(raw: Any) -> bytes:
    """JSON of the API's `resource_ids` for stored JSON text that is a list of strings (in any spelling
    json.loads reads the same). Raises otherwise: for anything but a list of str, and for text orjson will
    not read (NaN, a lone surrogate), which json.loads might."""
    ids = _loads(raw)
    if ids.__class__ is list and _STR.issuperset(map(type, ids)):
        return _dumps(ids)
    raise ValueError("not a list of strings")


def _check_stored_json() -> None:
    """stored_json's keys and places against the reference, with a different value in every field."""
    row = (7, "i", None, "r", "k", "t", "a", "ac", "o", 200, "m", "p", "q", "rt", None, "c", "u", "pu", None,
           "ph", "h")
    document = {**dict(zip(ROW_FIELDS[:-1], row, strict=False)), "occurred_at": "w", "resource_ids": ["x"],
                "detail": {"d": 1}, "actor": {"kind": "k", "token_id": "t", "agency": "a"}}
    for field in _ACTOR_FIELDS:
        del document[field]
    if stored_json(row, '"w"', '["x"]', '{"d":1}') != canonical_json(document):
        raise RuntimeError("stored_json no longer follows the canonical key order")


_check_stored_json()
