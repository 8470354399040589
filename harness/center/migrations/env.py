"""Alembic environment of the center database: the URL comes from the caller's
Config (``harness.center.store.upgrade``), the target metadata from the models."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from harness.center.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
engine = create_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
