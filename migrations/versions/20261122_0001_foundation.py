"""foundation: agencies (seeded), access tokens, the audit log and its chain head

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None

# SPEC §6: the five SKB agencies, all active, with their default workflow roles.
SEED_AGENCIES = [
    ("BAWASLU", "Badan Pengawas Pemilihan Umum", ["reporter"]),
    ("BKN", "Badan Kepegawaian Negara", ["enforcer", "follow_up", "reporter", "verifier"]),
    ("KASN", "Komisi Aparatur Sipil Negara", ["reporter", "verifier"]),
    ("KEMENDAGRI", "Kementerian Dalam Negeri", ["follow_up", "monitor", "reporter"]),
    ("KEMENPANRB", "Kementerian Pendayagunaan Aparatur Negara dan Reformasi Birokrasi", ["monitor", "reporter"]),
]

APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION sbt_refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$
"""


def upgrade() -> None:
    op.create_table('agencies',
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('roles', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_agencies'))
    )
    op.create_table('audit_events',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('actor_kind', sa.String(length=16), nullable=False),
    sa.Column('actor_token_id', sa.String(length=36), nullable=True),
    sa.Column('actor_agency', sa.String(length=32), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('method', sa.String(length=16), nullable=True),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('query', sa.Text(), nullable=True),
    sa.Column('resource_type', sa.String(length=32), nullable=True),
    sa.Column('resource_ids', sa.JSON(), nullable=False),
    sa.Column('client_ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.Text(), nullable=True),
    sa.Column('purpose', sa.String(length=200), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.CheckConstraint("outcome IN ('success', 'denied', 'rejected', 'error')", name=op.f('ck_audit_events_outcome')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_events')),
    sa.UniqueConstraint('id', name=op.f('uq_audit_events_id'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_action', ['action', 'seq'], unique=False)
        batch_op.create_index('ix_audit_events_agency_time', ['actor_agency', 'occurred_at', 'seq'], unique=False)
        batch_op.create_index('ix_audit_events_occurred_at', ['occurred_at', 'seq'], unique=False)
        batch_op.create_index('ix_audit_events_token', ['actor_token_id', 'seq'], unique=False)

    op.create_table('audit_checkpoints',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('jws', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_checkpoints'))
    )
    with op.batch_alter_table('audit_checkpoints', schema=None) as batch_op:
        batch_op.create_index('ix_audit_checkpoints_seq', ['seq'], unique=False)

    op.create_table('chain_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('feed_seq', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_chain_head_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chain_head'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('agency_code', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=36), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['agency_code'], ['agencies.code'], name=op.f('fk_api_tokens_agency_code_agencies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index('ix_api_tokens_agency_created', ['agency_code', 'created_at', 'id'], unique=False)

    op.create_table('audit_event_resources',
    sa.Column('resource_id', sa.String(length=36), nullable=False),
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['seq'], ['audit_events.seq'], name=op.f('fk_audit_event_resources_seq_audit_events')),
    sa.PrimaryKeyConstraint('resource_id', 'seq', name=op.f('pk_audit_event_resources'))
    )

    now = datetime.now(UTC)
    agencies = sa.table(
        "agencies", sa.column("code", sa.String), sa.column("name", sa.String), sa.column("active", sa.Boolean),
        sa.column("roles", sa.JSON), sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(agencies, [
        {"code": code, "name": name, "active": True, "roles": roles, "created_at": now, "updated_at": now}
        for code, name, roles in SEED_AGENCIES
    ])
    op.execute(f"INSERT INTO chain_head (id, seq, hash, feed_seq) VALUES (1, 0, '{'0' * 64}', 0)")

    if op.get_bind().dialect.name == "postgresql":
        # The log is append-only even for code that bypasses the API; see docs/operations.md for what a
        # superuser can still do and how checkpoints kept elsewhere catch it.
        op.execute(APPEND_ONLY_FUNCTION)
        for table in ("audit_events", "audit_event_resources"):
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION sbt_refuse_audit_change()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION sbt_refuse_audit_change()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("audit_events", "audit_event_resources"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS sbt_refuse_audit_change()")
    op.drop_table('audit_event_resources')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_api_tokens_agency_created')

    op.drop_table('api_tokens')
    op.drop_table('chain_head')
    op.drop_table('audit_checkpoints')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_token')
        batch_op.drop_index('ix_audit_events_occurred_at')
        batch_op.drop_index('ix_audit_events_agency_time')
        batch_op.drop_index('ix_audit_events_action')

    op.drop_table('audit_events')
    op.drop_table('agencies')
