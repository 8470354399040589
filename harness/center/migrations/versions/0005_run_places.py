"""Where runs stood in a labgrid lab: one row per run and place (the lab page's history).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('run_places',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_pk', sa.Integer(), nullable=False),
    sa.Column('place', sa.String(length=200), nullable=False),
    sa.Column('coordinator', sa.String(length=300), nullable=False),
    sa.Column('exporter', sa.String(length=200), nullable=False),
    sa.Column('resource', sa.String(length=400), nullable=False),
    sa.ForeignKeyConstraint(['run_pk'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_run_places_run_pk'), 'run_places', ['run_pk'], unique=False)
    op.create_index(op.f('ix_run_places_place'), 'run_places', ['place'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_run_places_place'), table_name='run_places')
    op.drop_index(op.f('ix_run_places_run_pk'), table_name='run_places')
    op.drop_table('run_places')
