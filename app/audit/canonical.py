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
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
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


# --- stored columns -----------------------------------------------------------------------------------
# Shortcuts for the two columns whose loading dominates verification. Each gives exactly
# `value_json(instant_text(load(raw)))` / `value_json(list(load(raw)))` for the `load` of the column type
# (app.db.UTCDateTime, JSON), and defers to it for anything it does not recognise.

# UTCDateTime on SQLite: naive UTC text, "YYYY-MM-DD HH:MM:SS.ffffff" (ASCII digits only: \d is wider).
_STORED_INSTANT = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}")
_ZERO = timedelta(0)


def stored_instant_json(raw: Any, load: Callable[[Any], Any]) -> str:
    """JSON of the API's `occurred_at` for a stored value: `"YYYY-MM-DDTHH:MM:SS.ffffffZ"`."""
    if raw.__class__ is str:
        if _STORED_INSTANT.fullmatch(raw) and raw[11:13] != "24":
            try:
                datetime.fromisoformat(raw)  # a real date and time, or loading it fails too
            except ValueError:
                pass
            else:
                return f'"{raw[:10]}T{raw[11:]}Z"'
    elif raw.__class__ is datetime and raw.tzinfo is not None and raw.year >= 1000 \
            and raw.utcoffset() == _ZERO:
        # Loading converts to UTC, which changes nothing here; isoformat then ends in "+00:00".
        return f'"{raw.isoformat(timespec="microseconds")[:-6]}Z"'
    return value_json(instant_text(load(raw)))


# JSON text of a list of strings that need no escaping, as json.dumps writes it (", " or ",").
_STORED_PLAIN_LIST = re.compile(r'\[(?:"[^"\\\x00-\x1f]*"(?:, ?"[^"\\\x00-\x1f]*")*)?\]')


def stored_list_json(raw: Any, load: Callable[[Any], Any]) -> str:
    """JSON of the API's `resource_ids` for a stored value (the document holds `list(loaded)`)."""
    if raw.__class__ is str and _STORED_PLAIN_LIST.fullmatch(raw):
        # Such strings decode to themselves and encode back unchanged; only the separators differ. No
        # string holds a quote, so the odd pieces between quotes are exactly the strings.
        strings = raw.split('"')[1::2]
        return '["' + '","'.join(strings) + '"]' if strings else "[]"
    value = load(raw)
    return value_json(value if value.__class__ is list else list(value))
