"""The scenario catalogue (场景清单): demands the center's admin enters.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scenario_demands',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('scenario', sa.String(length=40), nullable=False),
    sa.Column('task', sa.String(length=40), nullable=False),
    sa.Column('models', sa.JSON(), nullable=False),
    sa.Column('requirements', sa.JSON(), nullable=False),
    sa.Column('volume_qps', sa.Float(), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_scenario_demands_scenario'), 'scenario_demands', ['scenario'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_scenario_demands_scenario'), table_name='scenario_demands')
    op.drop_table('scenario_demands')
