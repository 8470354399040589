"""The center's database tables (SQLAlchemy 2 declarative models).

The schema is created and upgraded by the Alembic migrations in
``harness/center/migrations`` (``shipei db init``), never by ``create_all``; a test
checks the migrations and these models agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Vendor(Base):
    __tablename__ = "vendors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    keyid: Mapped[str] = mapped_column(String(64), unique=True)
    public_pem: Mapped[str] = mapped_column(Text)
    #: sha256 of the vendor's upload token (the token itself is never stored)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Bundle(Base):
    """An accepted submission: stored only after intake passed every check."""

    __tablename__ = "bundles"
    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    vendor_id: Mapped[int] = mapped_column(ForeignKey("vendors.id"))
    target: Mapped[str] = mapped_column(String(300))
    claimed_at: Mapped[str] = mapped_column(String(40))
    uploaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    published: Mapped[bool] = mapped_column(Boolean, default=False)
    vendor: Mapped[Vendor] = relationship()
    runs: Mapped[list[Run]] = relationship(back_populates="bundle")


class IntakeReport(Base):
    """Every intake, passed or refused (a refused bundle's bytes are not kept)."""

    __tablename__ = "intake_reports"
    id: Mapped[int] = mapped_column(primary_key=True)
    bundle_digest: Mapped[str] = mapped_column(String(64), index=True)
    bundle_id: Mapped[int | None] = mapped_column(ForeignKey("bundles.id"), nullable=True)
    vendor_id: Mapped[int | None] = mapped_column(ForeignKey("vendors.id"), nullable=True)
    accepted: Mapped[bool] = mapped_column(Boolean)
    failed_check: Mapped[str | None] = mapped_column(String(60), nullable=True)
    checks: Mapped[list[Any]] = mapped_column(JSON)
    profile: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(String(200), unique=True)
    bundle_id: Mapped[int | None] = mapped_column(ForeignKey("bundles.id"), nullable=True)
    target: Mapped[str] = mapped_column(String(300), index=True)
    driver_version: Mapped[str] = mapped_column(String(100))
    runtime: Mapped[str] = mapped_column(String(100))
    runtime_version: Mapped[str] = mapped_column(String(100))
    device: Mapped[str] = mapped_column(String(200))
    harness_version: Mapped[str] = mapped_column(String(100))
    platform_id: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[str] = mapped_column(String(40))
    finished_at: Mapped[str] = mapped_column(String(40))
    bundle: Mapped[Bundle | None] = relationship(back_populates="runs")
    records: Mapped[list[Record]] = relationship(back_populates="run")


class Record(Base):
    __tablename__ = "records"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    suite: Mapped[str] = mapped_column(String(100))
    case: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20))
    op_type: Mapped[str | None] = mapped_column(String(100), nullable=True)
    max_abs_error: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    run: Mapped[Run] = relationship(back_populates="records")


class RunPlace(Base):
    """Where a run's target stood in a labgrid lab (run.json ``targets.<label>.place``, or
    each place of a farm run): the lab page's history per place
    (:mod:`harness.center.lab_runs`)."""

    __tablename__ = "run_places"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    place: Mapped[str] = mapped_column(String(200), index=True)
    coordinator: Mapped[str] = mapped_column(String(300))
    exporter: Mapped[str] = mapped_column(String(200))
    resource: Mapped[str] = mapped_column(String(400))
    run: Mapped[Run] = relationship()


class ContentDigest(Base):
    """What an accepted bundle measured, per case (:mod:`harness.center.replay`): a later
    bundle whose measurements are already here is a replay, whoever signed it."""

    __tablename__ = "content_digests"
    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), index=True)
    #: "record" (a case's timings) or "samples" (a timed case's latency samples file)
    kind: Mapped[str] = mapped_column(String(20))
    bundle_id: Mapped[int] = mapped_column(ForeignKey("bundles.id"), index=True)
    suite: Mapped[str] = mapped_column(String(100))
    case: Mapped[str] = mapped_column(String(300))


class Audit(Base):
    __tablename__ = "audits"
    id: Mapped[int] = mapped_column(primary_key=True)
    bundle_id: Mapped[int] = mapped_column(ForeignKey("bundles.id"))
    seed: Mapped[int] = mapped_column(Integer)
    sample: Mapped[list[Any]] = mapped_column(JSON)
    agreement: Mapped[float] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Certificate(Base):
    __tablename__ = "certificates"
    id: Mapped[int] = mapped_column(primary_key=True)
    certificate_id: Mapped[str] = mapped_column(String(40), unique=True)
    vendor_id: Mapped[int | None] = mapped_column(ForeignKey("vendors.id"), nullable=True)
    bundle_id: Mapped[int | None] = mapped_column(ForeignKey("bundles.id"), nullable=True)
    target: Mapped[str] = mapped_column(String(300), index=True)
    chip: Mapped[str] = mapped_column(String(200))
    framework: Mapped[str] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(40))
    profile: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(100))
    issued_at: Mapped[str] = mapped_column(String(40))
    expires_at: Mapped[str] = mapped_column(String(40))
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    statement: Mapped[dict[str, Any]] = mapped_column(JSON)
    published: Mapped[bool] = mapped_column(Boolean, default=False)
    vendor: Mapped[Vendor | None] = relationship()


class Revocation(Base):
    __tablename__ = "revocations"
    id: Mapped[int] = mapped_column(primary_key=True)
    certificate_id: Mapped[str] = mapped_column(String(40), unique=True)
    reason: Mapped[str] = mapped_column(Text)
    revoked_at: Mapped[str] = mapped_column(String(40))
    #: the sequence of the first revocation list that carries this entry
    sequence: Mapped[int] = mapped_column(Integer, unique=True)


class RevocationList(Base):
    """Each signed revocation list the registry has served; the newest is current."""

    __tablename__ = "revocation_lists"
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    updated_at: Mapped[str] = mapped_column(String(40))
    next_update: Mapped[str] = mapped_column(String(40))
    envelope: Mapped[bytes] = mapped_column(LargeBinary)


class ScenarioDemand(Base):
    """A demand of the scenario catalogue (场景清单), entered by the center's admin: what a
    scenario asks of a chip, framework and configuration (:mod:`harness.center.scenarios`
    matches it against the published certificates)."""

    __tablename__ = "scenario_demands"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scenario: Mapped[str] = mapped_column(String(40), index=True)
    task: Mapped[str] = mapped_column(String(40))
    #: model names asked for (empty: any model of the task)
    models: Mapped[list[Any]] = mapped_column(JSON)
    #: [{"figure": ..., "value": ...}]: floors and ceilings on the task's figures
    requirements: Mapped[list[Any]] = mapped_column(JSON)
    volume_qps: Mapped[float | None] = mapped_column(Float, nullable=True)
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
