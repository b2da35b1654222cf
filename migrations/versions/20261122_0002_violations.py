"""violations: records, their append-only versions, the change feed, idempotency keys, case counters

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# History is never rewritten and the feed never loses a position, even for code that bypasses the API.
APPEND_ONLY_TABLES = ("violation_versions", "changes")
APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION sbt_refuse_history_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'violation history and the change feed are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$
"""


def upgrade() -> None:
    op.create_table('case_counters',
    sa.Column('year', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('last_number', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('year', name=op.f('pk_case_counters'))
    )
    op.create_table('idempotency_keys',
    sa.Column('agency', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_body', sa.Text(), nullable=True),
    sa.Column('response_headers', sa.JSON(), nullable=True),
    sa.Column('violation_id', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('agency', 'key', name=op.f('pk_idempotency_keys'))
    )
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.create_index('ix_idempotency_keys_created_at', ['created_at'], unique=False)

    op.create_table('violations',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_number', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('reporting_agency', sa.String(length=32), nullable=False),
    sa.Column('subject_nip', sa.String(length=18), nullable=False),
    sa.Column('subject_name', sa.String(length=200), nullable=False),
    sa.Column('subject_employment_type', sa.String(length=8), nullable=False),
    sa.Column('subject_position', sa.String(length=200), nullable=False),
    sa.Column('subject_position_type', sa.String(length=32), nullable=False),
    sa.Column('subject_institution', sa.String(length=200), nullable=False),
    sa.Column('subject_region_code', sa.String(length=16), nullable=False),
    sa.Column('election_type', sa.String(length=16), nullable=False),
    sa.Column('election_year', sa.Integer(), nullable=False),
    sa.Column('election_stage', sa.String(length=32), nullable=False),
    sa.Column('category', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('occurred_on', sa.Date(), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('recommendation', sa.JSON(), nullable=True),
    sa.Column('follow_up', sa.JSON(), nullable=True),
    sa.Column('follow_up_due_on', sa.Date(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('reported', 'under_verification', 'recommended', 'data_blocked', 'not_proven', 'rejected', 'cancelled', 'sanctioned', 'subject_departed')", name=op.f('ck_violations_status')),
    sa.ForeignKeyConstraint(['reporting_agency'], ['agencies.code'], name=op.f('fk_violations_reporting_agency_agencies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_violations')),
    sa.UniqueConstraint('case_number', name=op.f('uq_violations_case_number'))
    )
    with op.batch_alter_table('violations', schema=None) as batch_op:
        batch_op.create_index('ix_violations_agency_updated', ['reporting_agency', 'updated_at', 'id'], unique=False)
        batch_op.create_index('ix_violations_category_updated', ['category', 'updated_at', 'id'], unique=False)
        batch_op.create_index('ix_violations_created', ['created_at', 'id'], unique=False)
        batch_op.create_index('ix_violations_election', ['election_type', 'election_year'], unique=False)
        batch_op.create_index('ix_violations_status_due', ['status', 'follow_up_due_on'], unique=False)
        batch_op.create_index('ix_violations_status_updated', ['status', 'updated_at', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_violations_subject_nip'), ['subject_nip'], unique=False)
        batch_op.create_index(batch_op.f('ix_violations_subject_region_code'), ['subject_region_code'], unique=False)
        batch_op.create_index('ix_violations_updated', ['updated_at', 'id'], unique=False)

    op.create_table('changes',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('violation_id', sa.Uuid(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('agency', sa.String(length=32), nullable=False),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['violation_id'], ['violations.id'], name=op.f('fk_changes_violation_id_violations')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_changes')),
    sa.UniqueConstraint('violation_id', 'version', name=op.f('uq_changes_violation_id'))
    )
    op.create_table('violation_versions',
    sa.Column('violation_id', sa.Uuid(), nullable=False),
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('agency', sa.String(length=32), nullable=False),
    sa.Column('token_id', sa.Uuid(), nullable=True),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('changes', sa.JSON(), nullable=False),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.Column('subject_nip', sa.String(length=18), nullable=False),
    sa.ForeignKeyConstraint(['violation_id'], ['violations.id'], name=op.f('fk_violation_versions_violation_id_violations')),
    sa.PrimaryKeyConstraint('violation_id', 'version', name=op.f('pk_violation_versions'))
    )
    with op.batch_alter_table('violation_versions', schema=None) as batch_op:
        batch_op.create_index('ix_violation_versions_subject_nip', ['subject_nip', 'violation_id'], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_ONLY_FUNCTION)
        for table in APPEND_ONLY_TABLES:
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION sbt_refuse_history_change()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION sbt_refuse_history_change()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS sbt_refuse_history_change()")
    op.drop_table('violation_versions')
    op.drop_table('changes')
    with op.batch_alter_table('violations', schema=None) as batch_op:
        batch_op.drop_index('ix_violations_updated')
        batch_op.drop_index(batch_op.f('ix_violations_subject_region_code'))
        batch_op.drop_index(batch_op.f('ix_violations_subject_nip'))
        batch_op.drop_index('ix_violations_status_updated')
        batch_op.drop_index('ix_violations_status_due')
        batch_op.drop_index('ix_violations_election')
        batch_op.drop_index('ix_violations_created')
        batch_op.drop_index('ix_violations_category_updated')
        batch_op.drop_index('ix_violations_agency_updated')

    op.drop_table('violations')
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_idempotency_keys_created_at')

    op.drop_table('idempotency_keys')
    op.drop_table('case_counters')
