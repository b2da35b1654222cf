"""The `sbt` command: database, keys, tokens and audit tools that work with no server running."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from app import migrate
from app.agencies.models import Agency
from app.audit import checkpoints
from app.audit import service as audit_service
from app.audit.chain import EventDraft, append_events, lock_head
from app.audit.rowcheck import UNDECODABLE_TEXT, is_undecodable_text
from app.auth.jwt import TokenCodec
from app.auth.keys import KeyError_, generate_key_file, load_signing_key
from app.auth.principal import Scope
from app.clock import utcnow
from app.config import Settings, SettingsError, get_settings
from app.context import generated_request_id
from app.db import begin_write, is_lock_timeout, make_engine, make_session_factory
from app.errors import AppError
from app.tokens import service as token_service
from app.tokens.models import ApiToken
from app.tokens.schemas import TokenCreate

EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _sessions(settings: Settings) -> Callable[[], Session]:
    return make_session_factory(make_engine(settings.database_url, pool_size=2,
                                            lock_timeout=settings.db_lock_timeout_seconds))


def require_head(settings: Settings) -> None:
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        if not migrate.at_head(engine, settings.database_url):
            raise SystemExit("error: the database schema is not at head; run `sbt db upgrade` first")
    finally:
        engine.dispose()


def cli_event(
    action: str,
    *,
    resource_type: str | None = None,
    resource_ids: Sequence[str] = (),
    detail: dict[str, Any] | None = None,
) -> EventDraft:
    """CLI events: actor kind `cli`, outcome success, and no HTTP fields."""
    return EventDraft(
        request_id=f"cli-{generated_request_id()}",
        actor_kind="cli",
        action=action,
        outcome="success",
        resource_type=resource_type,
        resource_ids=list(resource_ids),
        detail=detail or {},
    )


def codec_for(settings: Settings) -> TokenCodec:
    return TokenCodec(
        load_signing_key(settings.key_file), issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )


# --- commands -------------------------------------------------------------------------------------


def cmd_db_upgrade(settings: Settings, _args: argparse.Namespace) -> int:
    migrate.upgrade(settings.database_url, lock_timeout=settings.db_lock_timeout_seconds)
    _err(f"database at head ({migrate.head_revision(settings.database_url)})")
    return EXIT_OK


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    require_head(settings)
    load_signing_key(settings.key_file)  # fail here, clearly, rather than in every worker
    uvicorn.run(
        "app.main:create_served_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=30,
        # Longer than the idle time of common HTTP clients (httpx, requests: 5 s), so the server is not
        # the side that closes an idle connection just as a client reuses it (the request then dies
        # in transit, before the app, and the client sees a ReadError).
        timeout_keep_alive=30,
        proxy_headers=False,
        http="app.http_protocol:BoundedHttpToolsProtocol",
    )
    return EXIT_OK


def cmd_keys_generate(settings: Settings, args: argparse.Namespace) -> int:
    path = settings.key_file
    if generate_key_file(path, args.algorithm):
        _err(f"wrote a new {args.algorithm} signing key to {path}")
    else:
        _err(f"{path} exists; left unchanged")
    key = load_signing_key(path)
    _err(f"kid {key.kid} ({key.algorithm})")
    return EXIT_OK


def issue_token_offline(settings: Settings, session: Session, data: TokenCreate) -> tuple[ApiToken, str]:
    """Issue a token straight in the database (the bootstrap path), audited as a CLI action."""
    begin_write(session)
    row, value = token_service.create_token(
        session=session,
        codec=codec_for(settings),
        data=data,
        created_by="cli",
        max_days=settings.token_max_days,
    )
    append_events(
        session,
        [
            cli_event(
                "token.create",
                resource_type="token",
                resource_ids=[str(row.id)],
                detail={
                    "agency": row.agency_code,
                    "scopes": row.scopes,
                    "expires_at": row.expires_at.isoformat(),
                },
            )
        ],
    )
    session.commit()
    return row, value


# The option each field of a token request comes from, to name it in an error.
_OPTIONS = {"agency": "--agency", "name": "--name", "scopes": "--scope",
            "expires_in_days": "--expires-in-days"}


def _option_errors(exc: ValidationError) -> str:
    """A token request's validation errors, each under the option it came from."""
    named = ((_OPTIONS.get(str(e["loc"][0]), str(e["loc"][0])) if e["loc"] else "input",
              e["msg"].removeprefix("Value error, ")) for e in exc.errors())
    return "; ".join(f"{option}: {message}" for option, message in named)


def cmd_tokens_create(settings: Settings, args: argparse.Namespace) -> int:
    require_head(settings)
    try:
        data = TokenCreate(
            agency=args.agency, name=args.name, scopes=args.scope, expires_in_days=args.expires_in_days
        )
    except ValidationError as exc:
        _err(f"error: {_option_errors(exc)}")
        return EXIT_UNUSABLE
    with _sessions(settings)() as session:
        try:
            row, value = issue_token_offline(settings, session, data)
        except AppError as exc:
            _err(f"error: {'; '.join(e['msg'] for e in exc.errors or []) or exc.detail}")
            return EXIT_UNUSABLE
    _err(
        f"token {row.id} for {row.agency_code} scopes={' '.join(row.scopes)} "
        f"expires {row.expires_at:%Y-%m-%d}"
    )
    print(value)
    return EXIT_OK


def cmd_bootstrap(settings: Settings, _args: argparse.Namespace) -> int:
    """First run only: when no token exists yet, issue a BKN admin token and print it."""
    require_head(settings)
    with _sessions(settings)() as session:
        begin_write(session)  # count and issue in one write transaction: two first runs issue one token
        if session.scalar(select(func.count()).select_from(ApiToken)):
            _err("tokens exist already; no bootstrap token issued (use `sbt tokens create`)")
            return EXIT_OK
        data = TokenCreate(agency="BKN", name="bootstrap admin", scopes=[Scope.ADMIN], expires_in_days=30)
        row, value = issue_token_offline(settings, session, data)
    _err(f"bootstrap admin token {row.id} (BKN, scope admin, expires {row.expires_at:%Y-%m-%d}):")
    print(value)
    return EXIT_OK


def cmd_tokens_list(settings: Settings, args: argparse.Namespace) -> int:
    require_head(settings)
    with _sessions(settings)() as session:
        stmt = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
        if args.agency:
            if session.get(Agency, args.agency) is None:  # a typo would otherwise list nothing, silently
                _err(f"error: unknown agency {args.agency!r}")
                return EXIT_UNUSABLE
            stmt = stmt.where(ApiToken.agency_code == args.agency)
        for row in session.scalars(stmt):
            state = "revoked" if row.revoked_at else "expired" if row.expires_at <= utcnow() else "active"
            print(
                f"{row.id}  {row.agency_code:<10}  {state:<7}  expires {row.expires_at:%Y-%m-%d}  "
                f"{' '.join(row.scopes):<40}  {row.name}"
            )
    return EXIT_OK


def cmd_tokens_revoke(settings: Settings, args: argparse.Namespace) -> int:
    require_head(settings)
    try:
        token_id = uuid.UUID(args.token_id)
    except ValueError:
        _err(f"error: {args.token_id!r} is not a token id (a UUID)")
        return EXIT_UNUSABLE
    with _sessions(settings)() as session:
        begin_write(session)
        try:
            _, changed = token_service.revoke_token(session=session, token_id=token_id)
        except AppError as exc:
            _err(f"error: {exc.detail}")
            return EXIT_UNUSABLE
        append_events(
            session,
            [
                cli_event(
                    "token.revoke",
                    resource_type="token",
                    resource_ids=[str(token_id)],
                    detail={"already_revoked": not changed},
                )
            ],
        )
        session.commit()
    _err(f"token {token_id} revoked" if changed else f"token {token_id} was already revoked")
    return EXIT_OK


def cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 intact; 1 and `first bad seq: N` on stdout when not; 2 when verification cannot run."""
    checkpoint: checkpoints.Checkpoint | None = None
    if args.checkpoint:
        try:
            compact = Path(args.checkpoint).read_text(encoding="utf-8")
            checkpoint = checkpoints.read_checkpoint(codec_for(settings), compact)
        except (OSError, UnicodeDecodeError, checkpoints.CheckpointInvalid) as exc:
            _err(f"error: checkpoint {args.checkpoint} is unreadable or not signed by this service: {exc}")
            return EXIT_UNUSABLE
    try:
        require_head(settings)
        with _sessions(settings)() as session:
            result = audit_service.verify(session, checkpoint=checkpoint)
    except SystemExit as exc:  # require_head's message; exit 1 is reserved for a broken chain
        _err(str(exc))
        return EXIT_UNUSABLE
    except SQLAlchemyError as exc:
        _err(f"error: cannot read the audit log: {type(exc).__name__}")
        return EXIT_UNUSABLE
    if result.ok:
        against = f"; checkpoint seq {checkpoint.seq} holds" if checkpoint else ""
        _err(
            f"ok: {result.checked} events verified, head seq {result.head_seq} "
            f"hash {result.head_hash}{against}"
        )
        return EXIT_OK
    print(f"first bad seq: {result.first_invalid_seq}")
    return EXIT_FAILED


def cmd_audit_checkpoint(settings: Settings, _args: argparse.Namespace) -> int:
    """Print a signed checkpoint of the chain head on stdout (so `> FILE` keeps it) and record it."""
    require_head(settings)
    with _sessions(settings)() as session:
        begin_write(session)
        head = lock_head(session)
        try:
            row = checkpoints.issue_checkpoint(session, codec_for(settings), seq=head.seq, hash_=head.hash)
        except checkpoints.ChainHeadMismatch as exc:
            _err(f"error: {exc.detail}")
            return EXIT_UNUSABLE
        append_events(
            session,
            [
                cli_event(
                    "audit.checkpoint",
                    resource_type="audit_checkpoint",
                    detail={"checkpoint_id": row.id, "seq": row.seq, "hash": row.hash},
                )
            ],
        )
        session.commit()
    _err(f"checkpoint {row.id}: seq {row.seq} hash {row.hash} issued {row.issued_at:%Y-%m-%dT%H:%M:%SZ}")
    print(row.jws)
    return EXIT_OK


def cmd_audit_export(settings: Settings, args: argparse.Namespace) -> int:
    require_head(settings)
    since, until = args.since, args.until
    if since is not None and until is not None and until < since:
        _err("error: --until is before --since")
        return EXIT_UNUSABLE
    with _sessions(settings)() as session:
        to_seq, _ = audit_service.head(session)
        begin_write(session)
        # Reading the whole log is itself recorded, before anything is printed.
        append_events(
            session,
            [
                cli_event(
                    "audit.export",
                    detail={
                        "since": since.isoformat() if since else None,
                        "until": until.isoformat() if until else None,
                        "to_seq": to_seq,
                    },
                )
            ],
        )
        session.commit()
        out = sys.stdout.buffer
        for document in audit_service.iter_documents(session, to_seq=to_seq, since=since, until=until):
            out.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
    return EXIT_OK


# --- demo data (sbt demo seed) --------------------------------------------------------------------


# Each case runs the real workflow in its own transaction (200 took 2.6 s on a slow 2-core host): 100,000
# take some twenty minutes; more is a load test, which scripts/bench/scale.py does in bulk.
DEMO_MAX_CASES = 100_000


def cmd_demo_seed(settings: Settings, args: argparse.Namespace) -> int:
    """Realistic cases made by running the real workflow; each step is audited as a CLI action."""
    from app.violations import demo

    if settings.env == "production":
        _err("error: refusing to seed demo cases into a production database (SBT_ENV=production)")
        return EXIT_UNUSABLE
    if not 1 <= args.cases <= DEMO_MAX_CASES:
        _err(f"error: --cases must be from 1 to {DEMO_MAX_CASES:,} (a demo, not a load test: see "
             "scripts/bench/scale.py)")
        return EXIT_UNUSABLE
    require_head(settings)
    reached = demo.seed(
        _sessions(settings),
        cases=args.cases,
        follow_up_days=settings.follow_up_days,
        event=cli_event,
        seed=args.seed,
    )
    _err(f"seeded {args.cases} demo cases: " + ", ".join(f"{s} {n}" for s, n in sorted(reached.items())))
    return EXIT_OK


# --- parsing --------------------------------------------------------------------------------------


def _timestamp(value: str) -> Any:
    from datetime import UTC, datetime

    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an RFC 3339 timestamp") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sbt", description=__doc__)
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    db = groups.add_parser("db", help="database schema").add_subparsers(dest="command", required=True)
    db.add_parser("upgrade", help="migrate the database to the latest schema (idempotent)").set_defaults(
        handler=cmd_db_upgrade
    )

    serve = groups.add_parser("serve", help="serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(handler=cmd_serve)

    keys = groups.add_parser("keys", help="the signing key").add_subparsers(dest="command", required=True)
    generate = keys.add_parser("generate", help="write the signing key if none exists (never overwrites)")
    generate.add_argument("--algorithm", choices=["ES256", "RS256"], default="ES256")
    generate.set_defaults(handler=cmd_keys_generate)

    groups.add_parser("bootstrap", help="print a first admin token if no token exists yet").set_defaults(
        handler=cmd_bootstrap
    )

    tokens = groups.add_parser("tokens", help="access tokens").add_subparsers(dest="command", required=True)
    create = tokens.add_parser("create", help="issue a token; prints only the token on stdout")
    create.add_argument("--agency", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", required=True, choices=[str(s) for s in Scope])
    create.add_argument("--expires-in-days", type=int, default=90)
    create.set_defaults(handler=cmd_tokens_create)
    listing = tokens.add_parser("list", help="list tokens")
    listing.add_argument("--agency")
    listing.set_defaults(handler=cmd_tokens_list)
    revoke = tokens.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id")
    revoke.set_defaults(handler=cmd_tokens_revoke)

    demo = groups.add_parser("demo", help="demo data").add_subparsers(dest="command", required=True)
    demo_seed = demo.add_parser("seed", help="create realistic cases by running the real workflow")
    demo_seed.add_argument("--cases", type=int, default=100)
    demo_seed.add_argument("--seed", type=int, default=2024, help="random seed (same seed, same cases)")
    demo_seed.set_defaults(handler=cmd_demo_seed)

    audit = groups.add_parser("audit", help="the audit log").add_subparsers(dest="command", required=True)
    verify = audit.add_parser(
        "verify", help="verify the hash chain (exit 1 and `first bad seq: N` if broken, 2 if unusable)"
    )
    verify.add_argument("--checkpoint", help="file holding a signed checkpoint (compact JWS)")
    verify.set_defaults(handler=cmd_audit_verify)
    checkpoint = audit.add_parser(
        "checkpoint", help="print a signed checkpoint of the chain head (compact JWS) and record it"
    )
    checkpoint.set_defaults(handler=cmd_audit_checkpoint)
    export = audit.add_parser("export", help="write events as NDJSON to stdout")
    export.add_argument("--since", type=_timestamp)
    export.add_argument("--until", type=_timestamp)
    export.set_defaults(handler=cmd_audit_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as exc:
        _err(f"error: {exc}")
        return EXIT_UNUSABLE
    try:
        return int(args.handler(settings, args))
    except (SettingsError, KeyError_) as exc:  # settings checked on use (rate limits' storage, the key)
        _err(f"error: {exc}")
        return EXIT_UNUSABLE
    except Exception as exc:  # no traceback for a database that is down or a lock held too long
        problem = database_problem(exc, settings.db_lock_timeout_seconds)
        if problem is None:
            raise
        _err(f"error: {problem}")
        return EXIT_UNUSABLE


def database_problem(exc: BaseException, lock_timeout: float) -> str | None:
    """One line for the operator when the database failed the command (its driver's words), else None.
    Driver-level statements (app/rawdb.py) raise the driver's own errors, SQLAlchemy's wrap them."""
    if is_lock_timeout(exc):
        return (f"a lock this command needs was held by another transaction for more than {lock_timeout:g} s "
                "(SBT_DB_LOCK_TIMEOUT_SECONDS); nothing was changed")
    if is_undecodable_text(exc):
        return UNDECODABLE_TEXT
    if not isinstance(exc, OperationalError):
        return None
    words = str(exc.orig).strip().splitlines()
    return "the database is unavailable" + (f": {words[0]}" if words else "")


if __name__ == "__main__":
    sys.exit(main())
