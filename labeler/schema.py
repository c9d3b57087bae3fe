"""The store's tables, its database engines (SQLite pragmas, PostgreSQL pool) and the schema migrations.

Tables: `schema_version`, `rounds` (one `vrlhf sample` run: task, policy, recipe, size), `items` (an input row),
`candidates` (one rendered output), `comparisons` (an item and its k candidates), `assignments` (the leases: one per
comparison and annotator, state open -> voted | skipped | expired | released), `votes` (append-only, with an
optional comment, flag and marks), `retractions` (undo). A database is created at SCHEMA_VERSION or upgraded to it on
start.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 4


def utcnow() -> datetime:
    # Naive UTC everywhere: SQLite keeps no time zone and PostgreSQL `timestamp` compares the same way.
    return datetime.now(UTC).replace(tzinfo=None)


def iso(t: datetime) -> str:
    return t.isoformat() + "Z"


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)


class Round(Base):
    __tablename__ = "rounds"
    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(String(32))
    policy_path: Mapped[str] = mapped_column(Text)
    policy_name: Mapped[str] = mapped_column(String(200))
    k: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    data_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # v2: a round written by `vrlhf sample` is complete only once all its comparisons are in; until then the
    # next `vrlhf sample` with the same recipe (canonical JSON of its inputs) resumes it.
    recipe: Mapped[str | None] = mapped_column(Text, nullable=True)
    expected: Mapped[int | None] = mapped_column(Integer, nullable=True)  # comparisons the round is to hold
    complete: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    part_of: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), nullable=True)  # --against: its round


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("task", "row_id", "image_sha"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(String(32))
    row_id: Mapped[str] = mapped_column(String(200))
    image_sha: Mapped[str] = mapped_column(String(64))
    image_path: Mapped[str] = mapped_column(Text)  # the row's image (RGB), relative to the media dir
    input_path: Mapped[str] = mapped_column(Text)  # what annotators see (task.show_input: gray for colorization)


class Candidate(Base):
    __tablename__ = "candidates"
    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)  # sample j of this item in its round
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    image_path: Mapped[str | None] = mapped_column(Text, nullable=True)


class Comparison(Base):
    __tablename__ = "comparisons"
    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    candidate_ids: Mapped[list] = mapped_column(JSON)
    k: Mapped[int] = mapped_column(Integer)
    filled: Mapped[int] = mapped_column(Integer, default=0)  # votes that count toward overlap
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("comparison_id", "annotator"),
        Index("ix_assignments_annotator_state", "annotator", "state"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id"), index=True)
    annotator: Mapped[str] = mapped_column(String(100))
    token: Mapped[str] = mapped_column(String(64), unique=True)
    shown: Mapped[list] = mapped_column(JSON)  # candidate ids, left to right, randomised per lease
    state: Mapped[str] = mapped_column(String(16), default="open")  # open | voted | skipped | expired | released
    issued_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Vote(Base):
    __tablename__ = "votes"
    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), index=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id"), index=True)
    annotator: Mapped[str] = mapped_column(String(100), index=True)
    choice: Mapped[str] = mapped_column(String(16))  # a | b | tie | both_bad | skip | rank ("a" = left)
    ranking: Mapped[list | None] = mapped_column(JSON, nullable=True)  # candidate ids, best first
    shown: Mapped[list] = mapped_column(JSON)  # candidate ids as they were shown, left to right
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    elapsed_ms: Mapped[int] = mapped_column(Integer)
    # v3: what the annotator wrote about the comparison, and whether they flagged it for the project lead
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # v4: where the annotator said candidates are wrong: JSON text {candidate id: marks} (vrlhf/marks.py), or NULL
    marks: Mapped[str | None] = mapped_column(Text, nullable=True)


class Retraction(Base):
    __tablename__ = "retractions"
    id: Mapped[int] = mapped_column(primary_key=True)
    vote_id: Mapped[int] = mapped_column(ForeignKey("votes.id"), unique=True)
    annotator: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


def _v1_to_v2(conn) -> None:
    """Rounds get their sampling recipe, expected size, complete flag and --against link. Rounds of a v1 database
    are marked complete: nothing recorded how many comparisons they were meant to hold."""
    for ddl in ("ALTER TABLE rounds ADD COLUMN recipe TEXT",
                "ALTER TABLE rounds ADD COLUMN expected INTEGER",
                "ALTER TABLE rounds ADD COLUMN complete BOOLEAN NOT NULL DEFAULT TRUE",
                "ALTER TABLE rounds ADD COLUMN part_of INTEGER REFERENCES rounds (id)"):
        conn.exec_driver_sql(ddl)


def _v2_to_v3(conn) -> None:
    """Votes get the annotator's comment and flag (none on the votes already cast)."""
    for ddl in ("ALTER TABLE votes ADD COLUMN comment TEXT",
                "ALTER TABLE votes ADD COLUMN flagged BOOLEAN NOT NULL DEFAULT FALSE"):
        conn.exec_driver_sql(ddl)


def _v3_to_v4(conn) -> None:
    """Votes get the annotator's marks (none on the votes already cast)."""
    conn.exec_driver_sql("ALTER TABLE votes ADD COLUMN marks TEXT")


# Upgrades from version v to v + 1, run in order on start; each takes a connection inside a transaction.
MIGRATIONS: dict[int, Any] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def sqlite_engine(url: str, immediate: bool = True):
    """An engine on a SQLite file: WAL, synchronous=FULL, busy timeout, foreign keys; `immediate` writers."""
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=32,
                           max_overflow=32)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # a vote acknowledged is a vote on disk
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        # Writers take the write lock up front: read-then-write transactions cannot deadlock or hand out a
        # lease twice. Readers start a plain (deferred) transaction: one consistent WAL snapshot, no lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def server_engine(url: str):
    """An engine on a database server (PostgreSQL): a pool large enough for the app's threads."""
    return create_engine(url, pool_size=32, max_overflow=32, pool_pre_ping=True)
