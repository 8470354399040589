"""Revocation lists served by the registry.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('revocation_lists',
    sa.Column('sequence', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('updated_at', sa.String(length=40), nullable=False),
    sa.Column('next_update', sa.String(length=40), nullable=False),
    sa.Column('envelope', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('sequence')
    )


def downgrade() -> None:
    op.drop_table('revocation_lists')
