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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

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


def stored_text(row: Sequence[Any], occurred_at_json: str, resource_ids_json: str, detail_json: str) -> str:
    """The canonical text of a stored event row whose columns hold what the API returns: str or None
    (`actor_kind`, `id`, `request_id`, `action`, `outcome`, `prev_hash`: str), int `seq` and int or None
    `status_code`; `occurred_at`, `resource_ids` and `detail` given as their JSON. Any other value raises
    (TypeError), so the text, when there is one, is `document_text(event_document(loaded row))`."""
    (seq, id_, _, request_id, kind, token_id, agency, action, outcome, status_code, method, path, query,
     resource_type, _, client_ip, user_agent, purpose, _, prev_hash, *_) = row
    s, n = _encode_str, _int_repr
    if status_code.__class__ is not int and status_code is not None:
        _unusual(status_code)  # a bool is an int to int.__repr__, and a float's repr is not always JSON
    return (
        f'{{"action":{s(action)},"actor":{{"agency":{"null" if agency is None else s(agency)},'
        f'"kind":{s(kind)},"token_id":{"null" if token_id is None else s(token_id)}}},'
        f'"client_ip":{"null" if client_ip is None else s(client_ip)},"detail":{detail_json},"id":{s(id_)},'
        f'"method":{"null" if method is None else s(method)},"occurred_at":{occurred_at_json},'
        f'"outcome":{s(outcome)},"path":{"null" if path is None else s(path)},"prev_hash":{s(prev_hash)},'
        f'"purpose":{"null" if purpose is None else s(purpose)},'
        f'"query":{"null" if query is None else s(query)},"request_id":{s(request_id)},'
        f'"resource_ids":{resource_ids_json},'
        f'"resource_type":{"null" if resource_type is None else s(resource_type)},'
        f'"seq":{n(seq) if seq.__class__ is int else _unusual(seq)},'
        f'"status_code":{"null" if status_code is None else n(status_code)},'
        f'"user_agent":{"null" if user_agent is None else s(user_agent)}}}'
    )


def _unusual(value: Any) -> str:
    raise TypeError(f"not a plain int: {type(value).__name__}")


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


_LIST_SEPARATORS = frozenset([",", ", "])


def plain_list_json(raw: Any) -> str:
    """JSON of the API's `resource_ids` for stored JSON text that is a list of strings needing no escaping,
    as json.dumps writes it (", " or "," between items): the same text with "," only. Raises otherwise."""
    text: str = raw  # anything but a str fails below
    if text == "[]":
        return text
    quotes = text.count('"')
    # Escaping the text adds one character per quote and two around it, and more for anything else that
    # needs it (backslashes, control characters): then the strings are exactly what lies between quotes.
    if text[:2] == '["' and text[-2:] == '"]' and quotes % 2 == 0 \
            and len(_encode_str(text)) == len(text) + 2 + quotes:
        if quotes == 2:
            return text
        pieces = text.split('"')  # "[", string, separator, string, ..., string, "]"
        if _LIST_SEPARATORS.issuperset(pieces[2:-1:2]):
            return '["' + '","'.join(pieces[1::2]) + '"]'
    raise ValueError("not a plain list of strings")


def _check_stored_text() -> None:
    """stored_text's keys and places against the reference, with a different value in every field."""
    row = (7, "i", None, "r", "k", "t", "a", "ac", "o", 200, "m", "p", "q", "rt", None, "c", "u", "pu", None,
           "ph", "h")
    document = {**dict(zip(ROW_FIELDS[:-1], row, strict=False)), "occurred_at": "w", "resource_ids": ["x"],
                "detail": {"d": 1}, "actor": {"kind": "k", "token_id": "t", "agency": "a"}}
    for field in _ACTOR_FIELDS:
        del document[field]
    if stored_text(row, '"w"', '["x"]', '{"d":1}') != canonical_json(document).decode():
        raise RuntimeError("stored_text no longer follows the canonical key order")


_check_stored_text()
