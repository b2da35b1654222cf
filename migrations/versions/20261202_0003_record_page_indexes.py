"""violations: an index per filter and sort order, and the province of the region code

A filtered page sorted by creation time, or filtered by province or election, had no index that both
selects and orders it: at 1,000,000 records PostgreSQL sorted every match or skipped thousands of rows
per page (p99 14-40 ms). Each equality filter now leads an index in both sort orders.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

PROVINCE = sa.text("substr(subject_region_code, 1, 2)")


def upgrade() -> None:
    op.drop_index('ix_violations_election', table_name='violations')
    op.create_index('ix_violations_status_created', 'violations', ['status', 'created_at', 'id'])
    op.create_index('ix_violations_agency_created', 'violations', ['reporting_agency', 'created_at', 'id'])
    op.create_index('ix_violations_category_created', 'violations', ['category', 'created_at', 'id'])
    op.create_index('ix_violations_election_updated', 'violations',
                    ['election_type', 'election_year', 'updated_at', 'id'])
    op.create_index('ix_violations_election_created', 'violations',
                    ['election_type', 'election_year', 'created_at', 'id'])
    op.create_index('ix_violations_province_updated', 'violations', [PROVINCE, 'updated_at', 'id'])
    op.create_index('ix_violations_province_created', 'violations', [PROVINCE, 'created_at', 'id'])


def downgrade() -> None:
    for name in ('ix_violations_province_created', 'ix_violations_province_updated',
                 'ix_violations_election_created', 'ix_violations_election_updated',
                 'ix_violations_category_created', 'ix_violations_agency_created',
                 'ix_violations_status_created'):
        op.drop_index(name, table_name='violations')
    op.create_index('ix_violations_election', 'violations', ['election_type', 'election_year'])
