"""Per-case content digests of accepted bundles (replay detection on content).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('content_digests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('bundle_id', sa.Integer(), nullable=False),
    sa.Column('suite', sa.String(length=100), nullable=False),
    sa.Column('case', sa.String(length=300), nullable=False),
    sa.ForeignKeyConstraint(['bundle_id'], ['bundles.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_content_digests_bundle_id'), 'content_digests', ['bundle_id'],
                    unique=False)
    op.create_index(op.f('ix_content_digests_digest'), 'content_digests', ['digest'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_content_digests_digest'), table_name='content_digests')
    op.drop_index(op.f('ix_content_digests_bundle_id'), table_name='content_digests')
    op.drop_table('content_digests')
