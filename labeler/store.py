"""The preference store: rounds, items, candidates, comparisons, leases and append-only votes (SQLAlchemy 2).

SQLite file by default (WAL, busy timeout, foreign keys, every transaction `BEGIN IMMEDIATE` so writers queue
instead of failing), PostgreSQL by URL (`SELECT ... FOR UPDATE SKIP LOCKED` hands out comparisons). Rendered images
live as lossless PNG files under a media directory; the database holds their paths relative to it.

Assignment invariant: for every comparison, `voted + open leases <= overlap`. A lease is an `assignments` row
(one per comparison and annotator) whose state moves open -> voted | skipped | expired; an open lease past its
`expires_at` stops counting and is reclaimed (state expired) when the comparison is handed to someone else.
A vote is accepted only on an open lease of its own annotator, so nothing is ever counted twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import secrets
import threading
import time
import contextlib
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Iterator, Sequence

from PIL import Image
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
    and_,
    bindparam,
    case,
    create_engine,
    event,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from vrlhf.errors import LabelError  # noqa: F401  (re-exported: labeler code raises it)

SCHEMA_VERSION = 2
PAIR_CHOICES = ("a", "b", "tie", "both_bad", "skip")
RANK_CHOICES = ("rank", "both_bad", "skip")
POSITIONS = "ABCD"
MAX_K = 4


def utcnow() -> datetime:
    # Naive UTC everywhere: SQLite keeps no time zone and PostgreSQL `timestamp` compares the same way.
    return datetime.now(UTC).replace(tzinfo=None)


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
    input_path: Mapped[str] = mapped_column(Text)  # what annotators see (grayscale for colorization)


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
    state: Mapped[str] = mapped_column(String(16), default="open")  # open | voted | skipped | expired
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


# Upgrades from version v to v + 1, run in order on start; each takes a connection inside a transaction.
MIGRATIONS: dict[int, Any] = {1: _v1_to_v2}


def _sqlite_engine(url: str, immediate: bool = True):
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
            db_path.parent.mkdir(parents=True, exist_ok=True)
            self.engine = _sqlite_engine(url)
            self.reader = _sqlite_engine(url, immediate=False)  # WAL readers never wait for the writer
            default_media = db_path.with_name(db_path.stem + "_media")
        else:
            self.engine = self.reader = create_engine(url, pool_size=32, max_overflow=32, pool_pre_ping=True)
            default_media = Path("labeler_media").resolve()
        self.media = Path(media or default_media).resolve()
        self.media.mkdir(parents=True, exist_ok=True)
        if overlap < 1 or not 0.0 <= overlap_fraction <= 1.0:
            raise LabelError("overlap must be >= 1 and overlap_fraction within [0, 1]")
        self.overlap, self.overlap_fraction = int(overlap), float(overlap_fraction)
        self.lease = timedelta(seconds=lease_seconds)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self.ReadSession = sessionmaker(self.reader, expire_on_commit=False)
        # SQLite has one writer at a time; queueing our threads here is fair and prompt, whereas SQLite's
        # busy handler sleeps in growing steps (up to 100 ms). Other processes still meet the busy timeout.
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        self._contents: dict[int, dict] = {}
        self._build_queries()
        self._migrate()

    # ---- schema ----------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        Base.metadata.create_all(self.engine)
        with self._tx() as s:
            version = s.scalar(select(func.max(SchemaVersion.version)))
            if version is None:
                s.add(SchemaVersion(version=SCHEMA_VERSION))
                return
            if version > SCHEMA_VERSION:
                raise LabelError(f"database schema v{version} is newer than this labeler (v{SCHEMA_VERSION})")
            for v in range(version, SCHEMA_VERSION):
                MIGRATIONS[v](s.connection())
                s.add(SchemaVersion(version=v + 1))

    def schema_version(self) -> int:
        with self.ReadSession() as s:
            return s.scalar(select(func.max(SchemaVersion.version)))

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self.Session.begin() as s:
            yield s

    def _retry(self, fn, attempts: int = 8):
        """Run `fn(session)` in a transaction, retrying lock timeouts and lost insert races."""
        for attempt in range(attempts):
            try:
                with self._write_lock, self._tx() as s:
                    return fn(s)
            except (OperationalError, IntegrityError):
                if attempt == attempts - 1:
                    raise
                time.sleep(0.01 * (attempt + 1) * random.random())

    def close(self) -> None:
        self.engine.dispose()
        self.reader.dispose()

    # ---- overlap ---------------------------------------------------------------------------------------

    def _overlap_selected(self, cid):
        # A multiplicative hash of the id spreads the overlapped fraction evenly; identical in SQL and Python.
        return (cid * 7919) % 1000 < round(self.overlap_fraction * 1000)

    def overlap_of(self, comparison_id: int) -> int:
        return self.overlap if self.overlap > 1 and self._overlap_selected(comparison_id) else 1

    def _overlap_sql(self):
        if self.overlap == 1:
            return literal(1)
        return case((self._overlap_selected(Comparison.id), self.overlap), else_=1)

    # ---- media -----------------------------------------------------------------------------------------

    def save_png(self, image: Image.Image, kind: str) -> tuple[str, str]:
        """Write `image` losslessly under media/kind/, named by content; returns (relative path, sha256)."""
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        rel = f"{kind}/{sha[:2]}/{sha}.png"
        path = self.media / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return rel, sha

    def media_path(self, rel: str) -> Path:
        return self.media / rel

    # ---- writing rounds and comparisons ----------------------------------------------------------------

    def add_round(self, task: str, policy_path: str, k: int, policy_name: str | None = None,
                  seed: int | None = None, data_path: str | None = None, recipe: dict | None = None,
                  expected: int | None = None, complete: bool = True, part_of: int | None = None) -> int:
        """A new round; `vrlhf sample` opens it incomplete (`complete=False`, its `recipe` and `expected` size) and
        closes it with `finish_round`. `part_of`: the round whose comparisons hold this one's candidates."""
        if not 2 <= k <= MAX_K:
            raise LabelError(f"k must be between 2 and {MAX_K}, got {k}")
        with self._tx() as s:
            r = Round(task=task, policy_path=str(policy_path), policy_name=policy_name or Path(policy_path).name,
                      k=k, seed=seed, data_path=None if data_path is None else str(data_path),
                      recipe=None if recipe is None else canonical(recipe), expected=expected, complete=complete,
                      part_of=part_of)
            s.add(r)
            s.flush()
            return r.id

    def open_round(self, recipe: dict) -> dict | None:
        """The incomplete round sampled from `recipe`, if any: {"id", "partner" (its --against round or None),
        "rows" (row ids that already have their comparison)}."""
        with self.ReadSession() as s:
            r = s.scalar(select(Round).where(Round.recipe == canonical(recipe), Round.complete.is_(False),
                                             Round.part_of.is_(None)).order_by(Round.id).limit(1))
            if r is None:
                return None
            partner = s.scalar(select(Round.id).where(Round.part_of == r.id).order_by(Round.id).limit(1))
            rows = s.scalars(select(Item.row_id).join(Comparison, Comparison.item_id == Item.id)
                             .where(Comparison.round_id == r.id)).all()
        return {"id": r.id, "partner": partner, "rows": set(rows)}

    def finish_round(self, round_id: int) -> None:
        """Mark a round (and the rounds that are part of it) complete; refused unless all its comparisons are in."""
        def write(s: Session) -> None:
            r = s.get(Round, round_id)
            if r is None:
                raise LabelError(f"unknown round {round_id}")
            have = s.scalar(select(func.count(Comparison.id)).where(Comparison.round_id == round_id))
            if r.expected is not None and have != r.expected:
                raise LabelError(f"round {round_id} holds {have} of its {r.expected} comparisons: not complete")
            s.execute(update(Round).where(or_(Round.id == round_id, Round.part_of == round_id))
                      .values(complete=True).execution_options(synchronize_session=False))

        self._retry(write)

    def add_comparison(self, round_id: int, row_id: str, image: Image.Image, outputs: Sequence[str | Image.Image],
                       input_image: Image.Image | None = None, output_rounds: Sequence[int] | None = None) -> int:
        """Store one input and its k rendered outputs (text or images) as a comparison; returns its id.

        `output_rounds` names the round (policy) that produced each output when they differ, e.g. a tuned policy
        against the previous one; by default every output belongs to `round_id`.
        """
        image = image.convert("RGB")
        image_rel, sha = self.save_png(image, "inputs")
        input_rel = image_rel if input_image is None else self.save_png(input_image, "inputs")[0]
        rendered = [(o, None) if isinstance(o, str) else (None, self.save_png(o.convert("RGB"), "candidates")[0])
                    for o in outputs]

        def write(s: Session) -> int:
            q = select(Round).where(Round.id == round_id)
            rnd = s.scalar(q.with_for_update() if self.dialect == "postgresql" else q)  # one writer per round
            if rnd is None:
                raise LabelError(f"unknown round {round_id}")
            if len(outputs) != rnd.k:
                raise LabelError(f"round {round_id} has k={rnd.k} but got {len(outputs)} outputs")
            item = s.scalar(select(Item).where(Item.task == rnd.task, Item.row_id == str(row_id),
                                               Item.image_sha == sha))
            if item is None:
                item = Item(task=rnd.task, row_id=str(row_id), image_sha=sha, image_path=image_rel,
                            input_path=input_rel)
                s.add(item)
                s.flush()
            else:  # an item appears once per round: a second sampler of the same round finds it already in
                have = s.scalar(select(Comparison.id).where(Comparison.round_id == round_id,
                                                            Comparison.item_id == item.id).limit(1))
                if have is not None:
                    return have
            origin = list(output_rounds) if output_rounds is not None else [round_id] * len(rendered)
            cands = [Candidate(round_id=origin[j], item_id=item.id, index=j, text=t, image_path=p)
                     for j, (t, p) in enumerate(rendered)]
            s.add_all(cands)
            s.flush()
            c = Comparison(round_id=round_id, item_id=item.id, candidate_ids=[c.id for c in cands], k=rnd.k,
                           filled=0)
            s.add(c)
            s.flush()
            return c.id

        return self._retry(write)

    # ---- leases ----------------------------------------------------------------------------------------

    def next_comparison(self, annotator: str, exclude: Sequence[int] = ()) -> dict | None:
        """Lease a comparison to `annotator`: their oldest open lease (not in `exclude`, by comparison id),
        else a fresh one with free overlap; None when nothing is left for them."""
        annotator = check_name(annotator)
        return self._retry(lambda s: self._lease(s, annotator, set(exclude)))

    def _build_queries(self) -> None:
        """The lease statements, built once with bind parameters (building them per call costs more than
        running them on SQLite)."""
        A, C, now, me = Assignment, Comparison, bindparam("now"), bindparam("me")
        ov = self._overlap_sql()
        live = or_(A.state == "voted", and_(A.state == "open", A.expires_at > now))
        taken = select(func.count(A.id)).where(A.comparison_id == C.id, live).scalar_subquery()
        seen = select(A.id).where(A.comparison_id == C.id, A.annotator == me,
                                  or_(A.state.in_(("voted", "skipped")), live)).exists()
        free = and_(C.filled < ov, ~seen, taken < ov)
        self._q_mine_open = (select(A).where(A.annotator == me, A.state == "open", A.expires_at > now,
                                             A.comparison_id.not_in(bindparam("exclude", expanding=True)))
                             .order_by(A.id).limit(1))
        pick = select(C.id).where(free, C.id.not_in(bindparam("tried", expanding=True))).order_by(C.id).limit(1)
        self._q_pick_any = pick
        if self.dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True, of=C)
        self._q_pick = pick
        self._q_recheck = select(C.id).where(C.id == bindparam("cid"), free)
        self._q_reclaim = (update(A).where(A.comparison_id == bindparam("cid"), A.state == "open",
                                           A.expires_at <= now).values(state="expired")
                           .execution_options(synchronize_session=False))
        self._q_mine_row = select(A).where(A.comparison_id == bindparam("cid"), A.annotator == me)
        self._q_by_token = select(A).where(A.token == bindparam("token"))
        self._q_last_vote = select(func.max(Vote.created_at)).where(Vote.annotator == me)
        self._q_standing = select(func.count(Vote.id)).where(Vote.annotator == me,
                                                             Vote.id.not_in(select(Retraction.vote_id)))
        self._q_recent = select(Vote.created_at).where(Vote.annotator == me, Vote.created_at > bindparam("since"))
        done = select(A.id).where(A.comparison_id == C.id, A.annotator == me,
                                  A.state.in_(("voted", "skipped"))).exists()
        self._q_remaining = select(func.count(C.id)).where(C.filled < ov, ~done)

    def _lease(self, s: Session, annotator: str, exclude: set[int]) -> dict | None:
        now = utcnow()
        params = {"me": annotator, "now": now}
        a = s.scalar(self._q_mine_open, params | {"exclude": sorted(exclude)})
        if a is not None:
            a.expires_at = now + self.lease
            return self._view(s, a)
        tried = set(exclude)
        for _ in range(200):
            cid = s.scalar(self._q_pick, params | {"tried": sorted(tried)})
            if cid is None:
                if self.dialect == "sqlite" or s.scalar(self._q_pick_any, params | {"tried": sorted(tried)}) is None:
                    return None
                time.sleep(0.005 * random.random())  # all free ones are locked for a moment: not "none left"
                continue
            if self.dialect != "sqlite":
                # Our snapshot may predate a lease committed just before we got the row lock: re-check.
                if s.scalar(self._q_recheck, params | {"cid": cid}) is None:
                    tried.add(cid)
                    continue
            s.execute(self._q_reclaim, {"cid": cid, "now": now})
            shown = list(self._content(s, cid)["candidate_ids"])
            random.shuffle(shown)
            a = s.scalar(self._q_mine_row, params | {"cid": cid})
            if a is None:
                a = Assignment(comparison_id=cid, annotator=annotator)
                s.add(a)
            a.token, a.shown, a.state = secrets.token_urlsafe(18), shown, "open"
            a.issued_at, a.expires_at = now, now + self.lease
            s.flush()
            return self._view(s, a)
        return None

    def _content(self, s: Session, cid: int) -> dict:
        """What a comparison shows (input, candidates): written once, never changed, so cached."""
        got = self._contents.get(cid)
        if got is None:
            comp = s.get(Comparison, cid)
            item = s.get(Item, comp.item_id)
            cands = s.scalars(select(Candidate).where(Candidate.id.in_(comp.candidate_ids))).all()
            got = {"comparison_id": cid, "task": item.task, "k": comp.k, "item_id": item.row_id,
                   "input": item.input_path, "image": item.image_path, "candidate_ids": list(comp.candidate_ids),
                   "candidates": {c.id: {"text": c.text, "image": c.image_path} for c in cands}}
            if len(self._contents) > 100_000:
                self._contents.clear()
            self._contents[cid] = got
        return got

    def _view(self, s: Session, a: Assignment) -> dict:
        c = self._content(s, a.comparison_id)
        return {
            "comparison_id": a.comparison_id,
            "token": a.token,
            "task": c["task"],
            "k": c["k"],
            "item_id": c["item_id"],
            "input": c["input"],
            "image": c["image"],
            "candidates": [{"position": POSITIONS[i], "candidate_id": cid} | c["candidates"][cid]
                           for i, cid in enumerate(a.shown)],
            "expires_at": a.expires_at.isoformat() + "Z",
        }

    # ---- votes -----------------------------------------------------------------------------------------

    def vote(self, token: str, choice: str, ranking: Sequence[str] | str | None = None,
             annotator: str | None = None, comparison_id: int | None = None, lease_next: bool = False) -> dict:
        """Record a vote on the lease `token`; `annotator`/`comparison_id`, when given, must match the lease.

        `choice` is positional ("a" = the left candidate); with k > 2 use "rank" and `ranking` = the shown
        positions best first (e.g. "CAB"). Committed before returning; raises LabelError, writing nothing.
        With `lease_next` the same transaction (one commit, one fsync) also leases the annotator's next
        comparison, returned under "next".
        """
        if not isinstance(token, str) or not 8 <= len(token) <= 64:
            raise LabelError("malformed lease token")
        if not isinstance(choice, str) or choice not in PAIR_CHOICES + RANK_CHOICES:
            raise LabelError(f"unknown choice {str(choice)[:20]!r}: use one of {', '.join(PAIR_CHOICES)}, rank")
        if annotator is not None:
            annotator = check_name(annotator)

        def write(s: Session) -> dict:
            a = s.scalar(self._q_by_token, {"token": token})
            if a is None or (comparison_id is not None and a.comparison_id != comparison_id):
                raise LabelError("unknown comparison or lease token")
            if annotator is not None and a.annotator != annotator:
                raise LabelError("this comparison is not leased to you")
            comp = self._lock_comparison(s, a.comparison_id)
            if self.dialect != "sqlite":
                s.refresh(a)  # its state as of our row lock (SQLite's write lock already predates the read)
            if a.state != "open":
                raise LabelError(f"this lease is no longer open ({a.state})")
            order = list(a.shown)
            ranked = None
            if comp.k == 2 and choice not in PAIR_CHOICES:
                raise LabelError(f"a pair takes one of {', '.join(PAIR_CHOICES)}")
            if comp.k > 2 and choice not in RANK_CHOICES:
                raise LabelError(f"a {comp.k}-way comparison takes one of {', '.join(RANK_CHOICES)}")
            if choice == "rank":
                ranked = parse_ranking(ranking, comp.k)
                ranked = [order[POSITIONS.index(p)] for p in ranked]
            elif ranking:
                raise LabelError("a ranking is only allowed with choice 'rank'")
            now = utcnow()
            last = s.scalar(self._q_last_vote, {"me": a.annotator})
            start = max(a.issued_at, last) if last else a.issued_at
            v = Vote(assignment_id=a.id, comparison_id=comp.id, annotator=a.annotator, choice=choice,
                     ranking=ranked, shown=order, created_at=now,
                     elapsed_ms=max(0, int((now - start).total_seconds() * 1000)))
            s.add(v)
            if choice == "skip":
                a.state = "skipped"  # frees the slot for someone else
            else:
                a.state = "voted"
                comp.filled += 1
            s.flush()
            out = {"vote_id": v.id, "comparison_id": comp.id, "annotator": a.annotator, "choice": choice,
                   "created_at": now.isoformat() + "Z"}
            if lease_next:
                out["next"] = self._lease(s, a.annotator, set())
            return out

        return self._retry(write)

    def _lock_comparison(self, s: Session, cid: int) -> Comparison:
        q = select(Comparison).where(Comparison.id == cid)
        if self.dialect == "postgresql":
            q = q.with_for_update()  # serialises with _lease on this comparison
        return s.scalar(q)

    def retract(self, annotator: str) -> dict | None:
        """Undo `annotator`'s latest standing vote: append a retraction, reopen its lease and return the
        reopened view (None when there is nothing to undo, or the slot was given away after a skip)."""
        annotator = check_name(annotator)

        def write(s: Session):
            retracted = select(Retraction.vote_id)
            v = s.scalar(select(Vote).where(Vote.annotator == annotator, Vote.id.notin_(retracted))
                         .order_by(Vote.id.desc()).limit(1))
            if v is None:
                return None
            comp = self._lock_comparison(s, v.comparison_id)
            a = s.get(Assignment, v.assignment_id)
            s.refresh(a)
            s.add(Retraction(vote_id=v.id, annotator=annotator))
            now = utcnow()
            if a.state == "voted":
                comp.filled -= 1
            else:  # a skip freed its slot: take it back only if nobody else holds it
                live = s.scalar(select(func.count(Assignment.id)).where(
                    Assignment.comparison_id == comp.id, Assignment.id != a.id,
                    or_(Assignment.state == "voted", and_(Assignment.state == "open", Assignment.expires_at > now))))
                if live >= self.overlap_of(comp.id):
                    a.state = "expired"
                    return {"retracted": v.id, "view": None}
            a.state, a.issued_at, a.expires_at = "open", now, now + self.lease
            a.token = secrets.token_urlsafe(18)
            s.flush()
            return {"retracted": v.id, "view": self._view(s, a)}

        return self._retry(write)

    # ---- reading ---------------------------------------------------------------------------------------

    def progress(self, annotator: str) -> dict:
        """The annotator's standing votes, labels still wanted from them, and labels/min over 10 minutes."""
        annotator = check_name(annotator)
        now = utcnow()
        with self.ReadSession() as s:
            count = s.scalar(self._q_standing, {"me": annotator})
            recent = s.scalars(self._q_recent, {"me": annotator, "since": now - timedelta(minutes=10)}).all()
            remaining = s.scalar(self._q_remaining, {"me": annotator})
        rate = 0.0
        if len(recent) >= 2:
            span = (now - min(recent)).total_seconds() / 60
            rate = len(recent) / max(span, 1 / 60)
        return {"count": count, "remaining": remaining, "per_min": round(rate, 1)}

    def rounds(self) -> list[dict]:
        """Every sampling round: id, task, policy name and path, k, when, whether complete, its --against round."""
        with self.ReadSession() as s:
            counts = dict(s.execute(select(Comparison.round_id, func.count(Comparison.id))
                                    .group_by(Comparison.round_id)).all())
            return [{"id": r.id, "task": r.task, "policy_name": r.policy_name, "policy_path": r.policy_path,
                     "k": r.k, "created_at": r.created_at, "complete": r.complete, "expected": r.expected,
                     "comparisons": counts.get(r.id, 0), "part_of": r.part_of}
                    for r in s.scalars(select(Round).order_by(Round.id))]

    def counts(self) -> dict:
        with self.ReadSession() as s:
            return {t.__tablename__: s.scalar(select(func.count()).select_from(t))
                    for t in (Round, Item, Candidate, Comparison, Assignment, Vote, Retraction)}

    def votes(self) -> list[dict]:
        """Every vote ever written (the audit view), oldest first, with its retraction time if undone."""
        with self.ReadSession() as s:
            rows = s.execute(
                select(Vote, Retraction.created_at, Comparison, Item, Round)
                .join(Comparison, Comparison.id == Vote.comparison_id)
                .join(Item, Item.id == Comparison.item_id)
                .join(Round, Round.id == Comparison.round_id)
                .outerjoin(Retraction, Retraction.vote_id == Vote.id)
                .order_by(Vote.id)).all()
        return [{"vote_id": v.id, "comparison_id": v.comparison_id, "round_id": r.id, "task": r.task,
                 "policy": r.policy_name, "item_id": i.row_id, "image": i.image_path, "annotator": v.annotator, "choice": v.choice,
                 "ranking": v.ranking, "shown": v.shown, "candidate_ids": c.candidate_ids, "k": c.k,
                 "created_at": v.created_at.isoformat() + "Z", "elapsed_ms": v.elapsed_ms,
                 "retracted_at": None if rt is None else rt.isoformat() + "Z"}
                for v, rt, c, i, r in rows]

    def candidates(self, ids: Sequence[int]) -> dict[int, dict]:
        with self.ReadSession() as s:
            rows = s.execute(select(Candidate, Round).join(Round, Round.id == Candidate.round_id)
                             .where(Candidate.id.in_(list(ids)))).all()
        return {c.id: {"text": c.text, "image": c.image_path, "round_id": c.round_id, "policy": r.policy_name}
                for c, r in rows}

    def items(self, row_ids: Sequence[str] | None = None) -> dict[str, dict]:
        with self.ReadSession() as s:
            q = select(Item)
            if row_ids is not None:
                q = q.where(Item.row_id.in_(list(row_ids)))
            return {i.row_id: {"task": i.task, "image": i.image_path, "input": i.input_path}
                    for i in s.scalars(q)}

    def assignments(self) -> list[dict]:
        with self.ReadSession() as s:
            return [{"comparison_id": a.comparison_id, "annotator": a.annotator, "state": a.state,
                     "expires_at": a.expires_at} for a in s.scalars(select(Assignment))]


def canonical(recipe: dict) -> str:
    """A recipe as the text stored and compared: sorted keys, no spaces."""
    return json.dumps(recipe, sort_keys=True, separators=(",", ":"))


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 100 or any(ord(ch) < 32 for ch in name):
        raise LabelError("annotator name must be 1-100 printable characters")
    return name.strip()


def parse_ranking(ranking: Sequence[str] | str | None, k: int) -> list[str]:
    """Positions best first ("CAB", "C,A,B" or ["C", "A", "B"]); must name each of the k positions once."""
    if isinstance(ranking, str):
        if len(ranking) > 16:
            raise LabelError("ranking is too long")
        ranking = [p for p in ranking.replace(",", "").replace(">", "").replace(" ", "").upper()]
    if not isinstance(ranking, (list, tuple)) or len(ranking) > MAX_K:
        raise LabelError(f"ranking must list the {k} shown positions best first, e.g. {POSITIONS[:k][::-1]!r}")
    ranking = [str(p).upper() for p in ranking]
    if sorted(ranking) != list(POSITIONS[:k]):
        raise LabelError(f"ranking must list the {k} shown positions best first, e.g. {POSITIONS[:k][::-1]!r}")
    return ranking
