"""The preference store: one object over the database and the media directory, its methods grouped by concern.

    store = Store("labels.sqlite", overlap=3, overlap_fraction=0.1, lease_seconds=600)   # or a SQLAlchemy URL

SQLite file by default (WAL, busy timeout, foreign keys, every write transaction `BEGIN IMMEDIATE` so writers queue
instead of failing), PostgreSQL by URL (`SELECT ... FOR UPDATE SKIP LOCKED` hands out comparisons, so several app
servers can share one database). Where each part lives:

    labeler/schema.py   tables, engines, migrations          labeler/media.py   the PNG files
    labeler/rounds.py   rounds and comparisons (sampling)     labeler/leases.py  leases, votes, undo
    labeler/views.py    progress, rounds, tasks, the audit of every vote
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from labeler import leases, media, rounds, views
from labeler.leases import PAIR_CHOICES, POSITIONS, RANK_CHOICES, check_name, parse_ranking  # noqa: F401
from labeler.rounds import MAX_K, canonical  # noqa: F401
from labeler.schema import (  # noqa: F401  (re-exported for callers and tests)
    MIGRATIONS,
    SCHEMA_VERSION,
    Assignment,
    Base,
    Candidate,
    Comparison,
    Item,
    Retraction,
    Round,
    SchemaVersion,
    Vote,
    server_engine,
    sqlite_engine,
    utcnow,
)
from vrlhf.errors import LabelError  # noqa: F401  (re-exported: labeler code raises it)


def _make_folder(path: Path, problem: str, fix: str = "give a path in a folder you can write") -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # read-only, a file in the way, no permission
        raise LabelError(f"{problem} ({e.strerror}: {e.filename}): {fix}") from None


def _unusable(url, error: DatabaseError) -> str:
    """Why the database at `url` cannot be opened, and what to do, in one line."""
    where = url.render_as_string(hide_password=True)
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    if url.get_backend_name() != "sqlite":
        return f"--db {where}: cannot use the database ({reason})"
    path = url.database
    if "not a database" in reason:
        return f"--db {path} is not a SQLite database: give the labeler's database file, or a new file name"
    if "readonly" in reason or "read-only" in reason or "unable to open" in reason:
        return (f"--db {path}: cannot write it or its folder ({reason}): SQLite writes beside the file (-wal, -shm); "
                "give a path in a folder you can write")
    return f"--db {path}: cannot use the database ({reason})"


class Store:
    """A preference store at `url` (a SQLite path or any SQLAlchemy URL); `media` holds the rendered PNGs.

    `overlap` annotators see each of a fraction `overlap_fraction` of the comparisons (chosen by id, stable
    across restarts); the rest go to one annotator. Leases expire after `lease_seconds`.
    """

    def __init__(self, url: str | os.PathLike, media: str | os.PathLike | None = None, overlap: int = 1,
                 overlap_fraction: float = 1.0, lease_seconds: float = 600.0):
        url = str(url)
        if url in ("", ":memory:"):
            raise LabelError("an in-memory SQLite database cannot be shared: give a file path")
        if "://" not in url:
            url = f"sqlite:///{Path(url).resolve()}"
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite":
            db_path = Path(self.url.database or "")
            if not self.url.database or str(db_path) == ":memory:":
                raise LabelError("an in-memory SQLite database cannot be shared: give a file path")
            if db_path.is_dir():
                raise LabelError(f"--db {db_path} is a folder: give the SQLite file in it to use, e.g. "
                                 f"--db {db_path / 'labels.sqlite'}")
            _make_folder(db_path.parent, f"--db {db_path}: cannot create its folder")
            self.engine = sqlite_engine(url)
            self.reader = sqlite_engine(url, immediate=False)  # WAL readers never wait for the writer
            default_media = db_path.with_name(db_path.stem + "_media")
        else:
            self.engine = self.reader = server_engine(url)
            default_media = Path("labeler_media").resolve()
        self.media = Path(media or default_media).resolve()
        if media or self.dialect != "sqlite":
            _make_folder(self.media, f"--media {self.media}: cannot create it", "give a folder you can write")
        else:  # beside the SQLite file: its folder is the one that must be writable
            _make_folder(self.media, f"--db {self.url.database}: cannot create the media folder beside it")
        if overlap < 1 or not 0.0 <= overlap_fraction <= 1.0:
            raise LabelError("overlap must be >= 1 and overlap_fraction within [0, 1]")
        self.overlap, self.overlap_fraction = int(overlap), float(overlap_fraction)
        self.lease_seconds = float(lease_seconds)
        self.lease = timedelta(seconds=lease_seconds)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self.ReadSession = sessionmaker(self.reader, expire_on_commit=False)
        # SQLite has one writer at a time; queueing our threads here is fair and prompt, whereas SQLite's
        # busy handler sleeps in growing steps (up to 100 ms). Other processes still meet the busy timeout.
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        self.contents: dict[int, dict] = {}  # what each comparison shows: written once, so cached
        self.lease_sql = leases.Statements(self)
        self.view_sql = views.Statements(self)
        try:
            self._migrate()
        except DatabaseError as e:  # the file or server is not usable: one line saying what to do
            self.close()
            raise LabelError(_unusable(self.url, e)) from None

    # ---- the store's parts (each a module-level function taking the store first) ----------------------------

    # rounds and comparisons: what `vrlhf sample` writes
    add_round = rounds.add_round
    open_round = rounds.open_round
    finish_round = rounds.finish_round
    add_comparison = rounds.add_comparison
    # leases and votes
    next_comparison = leases.next_comparison
    vote = leases.vote
    retract = leases.retract
    release = leases.release
    overlap_of = leases.overlap_of
    # media
    save_png = media.save_png
    media_path = media.media_path
    # read views
    progress = views.progress
    tasks = views.tasks
    rounds = views.rounds
    counts = views.counts
    votes = views.votes
    candidates = views.candidates

    # ---- transactions and schema ----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.Session.begin() as s:
            yield s

    def retry(self, fn, attempts: int = 8):
        """Run `fn(session)` in a write transaction, retrying lock timeouts and lost insert races."""
        for attempt in range(attempts):
            try:
                with self._write_lock, self.transaction() as s:
                    return fn(s)
            except (OperationalError, IntegrityError):
                if attempt == attempts - 1:
                    raise
                time.sleep(0.01 * (attempt + 1) * random.random())

    def _migrate(self) -> None:
        """Create the tables at SCHEMA_VERSION, or upgrade an older database (MIGRATIONS); refuse a newer one.
        One transaction, serialised across processes (app servers starting together on one PostgreSQL)."""
        with self._write_lock, self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7303)")  # any fixed key: 'migrating the store'
            Base.metadata.create_all(conn)
            version = conn.scalar(select(func.max(SchemaVersion.version)))
            if version is None:
                conn.execute(SchemaVersion.__table__.insert().values(version=SCHEMA_VERSION))
                return
            if version > SCHEMA_VERSION:
                raise LabelError(f"database schema v{version} is newer than this labeler (v{SCHEMA_VERSION})")
            for v in range(version, SCHEMA_VERSION):
                MIGRATIONS[v](conn)
                conn.execute(SchemaVersion.__table__.insert().values(version=v + 1))

    def schema_version(self) -> int:
        with self.ReadSession() as s:
            return s.scalar(select(func.max(SchemaVersion.version)))

    def close(self) -> None:
        self.engine.dispose()
        self.reader.dispose()
