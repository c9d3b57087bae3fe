"""Leases and votes: who sees which comparison, and the append-only record of what they chose.

Assignment invariant: for every comparison, `voted + open leases <= overlap`. A lease is an `assignments` row (one
per comparison and annotator) whose state moves open -> voted | skipped | expired | released; an open lease past its
`expires_at` stops counting and is reclaimed (state expired) when the comparison is handed to someone else. A vote
is accepted only on an open lease of its own annotator, so nothing is ever counted twice.

SQLite: every write transaction is `BEGIN IMMEDIATE` (plus one in-process lock), so a lease is read and written
under the database's one write lock. PostgreSQL: `SELECT ... FOR UPDATE SKIP LOCKED` on the comparison row, then a
re-check of its free slots (our snapshot may predate a lease committed just before we got the row lock).
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, case, func, literal, or_, select, update
from sqlalchemy.orm import Session

from labeler.schema import Assignment, Candidate, Comparison, Item, Retraction, Round, Vote, iso, utcnow
from vrlhf import marks as marks_format
from vrlhf.errors import DataError, LabelError

PAIR_CHOICES = ("a", "b", "tie", "both_bad", "skip")
RANK_CHOICES = ("rank", "both_bad", "skip")
POSITIONS = "ABCD"
MAX_COMMENT = 1000  # characters of an annotator's comment on a comparison
MAX_MARKS = 8192  # characters of a vote's marks as JSON (64 cells of each of four candidates fit)


# ---- overlap --------------------------------------------------------------------------------------------------

def overlap_selected(store, cid):
    """Whether comparison `cid` is one of the overlapped fraction: a multiplicative hash of the id spreads them
    evenly and is stable across restarts; the same expression in SQL (a column) and in Python (an int)."""
    return (cid * 7919) % 1000 < round(store.overlap_fraction * 1000)


def overlap_of(store, comparison_id: int) -> int:
    """How many distinct annotators comparison `comparison_id` goes to."""
    return store.overlap if store.overlap > 1 and overlap_selected(store, comparison_id) else 1


def overlap_sql(store):
    if store.overlap == 1:
        return literal(1)
    return case((overlap_selected(store, Comparison.id), store.overlap), else_=1)


class Statements:
    """The lease statements, built once with bind parameters (building them per call costs more than running them
    on SQLite). Dicts keyed by `filtered` hold a variant for all tasks (False) and one for `:task` only (True)."""

    def __init__(self, store):
        A, C, now, me = Assignment, Comparison, bindparam("now"), bindparam("me")
        ov = overlap_sql(store)
        live = or_(A.state == "voted", and_(A.state == "open", A.expires_at > now))
        taken = select(func.count(A.id)).where(A.comparison_id == C.id, live).scalar_subquery()
        seen = select(A.id).where(A.comparison_id == C.id, A.annotator == me,
                                  or_(A.state.in_(("voted", "skipped")), live)).exists()
        free = and_(C.filled < ov, ~seen, taken < ov)
        of_task = C.round_id.in_(select(Round.id).where(Round.task == bindparam("task")))
        mine = select(A).where(A.annotator == me, A.state == "open", A.expires_at > now,
                               A.comparison_id.not_in(bindparam("exclude", expanding=True)))
        self.mine_open = {False: mine.order_by(A.id).limit(1),
                          True: mine.where(A.comparison_id.in_(select(C.id).where(of_task))).order_by(A.id).limit(1)}
        pick = select(C.id).where(free, C.id.not_in(bindparam("tried", expanding=True))).order_by(C.id).limit(1)
        self.pick_any = {False: pick, True: pick.where(of_task)}
        if store.dialect == "postgresql":
            self.pick = {f: q.with_for_update(skip_locked=True, of=C) for f, q in self.pick_any.items()}
        else:
            self.pick = self.pick_any
        self.recheck = select(C.id).where(C.id == bindparam("cid"), free)
        self.reclaim = (update(A).where(A.comparison_id == bindparam("cid"), A.state == "open", A.expires_at <= now)
                        .values(state="expired").execution_options(synchronize_session=False))
        self.mine_row = select(A).where(A.comparison_id == bindparam("cid"), A.annotator == me)
        self.by_token = select(A).where(A.token == bindparam("token"))
        self.last_vote = select(func.max(Vote.created_at)).where(Vote.annotator == me)
        self.extend = (update(A).where(A.token == bindparam("lease"), A.annotator == me, A.state == "open",
                                       A.expires_at > now).values(expires_at=bindparam("until"))
                       .execution_options(synchronize_session=False))
        self.release = (update(A).where(A.token.in_(bindparam("tokens", expanding=True)), A.annotator == me,
                                        A.state == "open").values(state="released")
                        .execution_options(synchronize_session=False))


# ---- leasing --------------------------------------------------------------------------------------------------

def next_comparison(store, annotator: str, exclude: Sequence[int] = (), task: str | None = None,
                    prefer: str | None = None) -> dict | None:
    """Lease a comparison to `annotator`: their oldest open lease (not in `exclude`, by comparison id), else a
    fresh one with free overlap; None when nothing is left for them. `task` keeps to one task; `prefer` (with no
    `task`) takes that task's comparisons first and the others after (how the page interleaves tasks)."""
    annotator = check_name(annotator)
    return store.retry(lambda s: _lease(store, s, annotator, set(exclude), task, prefer))


def _lease(store, s: Session, annotator: str, exclude: set[int], task: str | None = None,
           prefer: str | None = None) -> dict | None:
    q, now = store.lease_sql, utcnow()
    params = {"me": annotator, "now": now, "exclude": sorted(exclude), "task": task}
    a = s.scalar(q.mine_open[task is not None], params)
    if a is not None:
        a.expires_at = now + store.lease
        return _view(store, s, a)
    for t in ([prefer] if prefer and not task else []) + [task]:
        cid = _pick(store, s, params | {"task": t}, exclude)
        if cid is not None:
            return _grant(store, s, annotator, cid, now)
    return None


def _pick(store, s: Session, params: dict, exclude: set[int]) -> int | None:
    """The id of a comparison with a free slot for `params["me"]` (locked for us on PostgreSQL), or None."""
    q, filtered, tried = store.lease_sql, params["task"] is not None, set(exclude)
    for _ in range(200):
        cid = s.scalar(q.pick[filtered], params | {"tried": sorted(tried)})
        if cid is None:
            if store.dialect == "sqlite" or s.scalar(q.pick_any[filtered], params | {"tried": sorted(tried)}) is None:
                return None
            time.sleep(0.005 * random.random())  # all free ones are locked for a moment: not "none left"
            continue
        if store.dialect != "sqlite" and s.scalar(q.recheck, params | {"cid": cid}) is None:
            tried.add(cid)  # our snapshot predates a lease committed just before we got the row lock
            continue
        return cid
    return None


def _grant(store, s: Session, annotator: str, cid: int, now) -> dict:
    """Lease comparison `cid` to `annotator` (reclaiming lapsed leases on it), candidates in a fresh random order."""
    q = store.lease_sql
    s.execute(q.reclaim, {"cid": cid, "now": now})
    shown = list(_content(store, s, cid)["candidate_ids"])
    random.shuffle(shown)
    a = s.scalar(q.mine_row, {"me": annotator, "cid": cid})
    if a is None:
        a = Assignment(comparison_id=cid, annotator=annotator)
        s.add(a)
    a.token, a.shown, a.state = secrets.token_urlsafe(18), shown, "open"
    a.issued_at, a.expires_at = now, now + store.lease
    s.flush()
    return _view(store, s, a)


def _content(store, s: Session, cid: int) -> dict:
    """What a comparison shows (input, candidates): written once, never changed, so cached."""
    got = store.contents.get(cid)
    if got is None:
        comp = s.get(Comparison, cid)
        item = s.get(Item, comp.item_id)
        cands = s.scalars(select(Candidate).where(Candidate.id.in_(comp.candidate_ids))).all()
        got = {"comparison_id": cid, "task": item.task, "k": comp.k, "item_id": item.row_id,
               "input": item.input_path, "image": item.image_path, "candidate_ids": list(comp.candidate_ids),
               "candidates": {c.id: {"text": c.text, "image": c.image_path} for c in cands}}
        if len(store.contents) > 100_000:
            store.contents.clear()
        store.contents[cid] = got
    return got


def _view(store, s: Session, a: Assignment) -> dict:
    c = _content(store, s, a.comparison_id)
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
        "expires_at": iso(a.expires_at),
    }


def release(store, annotator: str, tokens: Sequence[str]) -> None:
    """Give back `annotator`'s open leases `tokens` at once (the page switched task): their slots return to the
    queue now, not when they lapse. Tokens that are not open leases of `annotator` are ignored."""
    annotator = check_name(annotator)
    tokens = [t for t in tokens if isinstance(t, str) and t]
    if tokens:
        store.retry(lambda s: s.execute(store.lease_sql.release, {"me": annotator, "tokens": tokens}))


def reclaim(store, annotator: str, token: str) -> dict | None:
    """Open again `annotator`'s released lease `token` (its page was taken for closed, e.g. its heartbeat stream
    dropped for a moment, and a vote on it arrives), with the same token and order, if nobody has taken its slot
    meanwhile; its view, else None."""
    annotator = check_name(annotator)
    if not isinstance(token, str) or not 8 <= len(token) <= 64:
        return None

    def write(s: Session):
        a = s.scalar(store.lease_sql.by_token, {"token": token})
        if a is None or a.annotator != annotator or a.state != "released":
            return None
        comp = _lock_comparison(store, s, a.comparison_id)
        now = utcnow()
        live = s.scalar(select(func.count(Assignment.id)).where(
            Assignment.comparison_id == comp.id, Assignment.id != a.id,
            or_(Assignment.state == "voted", and_(Assignment.state == "open", Assignment.expires_at > now))))
        if live >= overlap_of(store, comp.id):
            return None
        a.state, a.expires_at = "open", now + store.lease
        s.flush()
        return _view(store, s, a)

    return store.retry(write)


# ---- votes ----------------------------------------------------------------------------------------------------

def vote(store, token: str, choice: str, ranking: Sequence[str] | str | None = None, annotator: str | None = None,
         comparison_id: int | None = None, lease_next: bool = False, comment: str | None = None,
         flagged: bool = False, extend: str | None = None, marks: dict | str | None = None) -> dict:
    """Record a vote on the lease `token`; `annotator`/`comparison_id`, when given, must match the lease.

    `choice` is positional ("a" = the left candidate); with k > 2 use "rank" and `ranking` = the shown positions
    best first (e.g. "CAB"). `comment` and `flagged` are the annotator's note on the comparison, stored with the
    vote. Committed before returning; raises LabelError, writing nothing. With `lease_next` the same transaction
    (one commit, one fsync) also leases the annotator's next comparison, returned under "next"; `extend` is the
    token of another open lease of theirs (the one the page shows next) whose reservation restarts now. `marks`
    ({candidate id: marks}, or its JSON text) say where the annotator found candidates wrong (vrlhf/marks.py); they
    must be on this comparison's candidates and fit them (a cell on the grid, a word of the caption).
    """
    if not isinstance(token, str) or not 8 <= len(token) <= 64:
        raise LabelError("malformed lease token")
    if not isinstance(choice, str) or choice not in PAIR_CHOICES + RANK_CHOICES:
        raise LabelError(f"unknown choice {str(choice)[:20]!r}: use one of {', '.join(PAIR_CHOICES)}, rank")
    if annotator is not None:
        annotator = check_name(annotator)
    comment = check_comment(comment)
    marks = check_marks(marks)

    def write(s: Session) -> dict:
        a = s.scalar(store.lease_sql.by_token, {"token": token})
        if a is None or (comparison_id is not None and a.comparison_id != comparison_id):
            raise LabelError("unknown comparison or lease token")
        if annotator is not None and a.annotator != annotator:
            raise LabelError("this comparison is not leased to you")
        comp = _lock_comparison(store, s, a.comparison_id)
        if store.dialect != "sqlite":
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
        stored_marks = marks_on(s, comp, marks)
        now = utcnow()
        last = s.scalar(store.lease_sql.last_vote, {"me": a.annotator})
        start = max(a.issued_at, last) if last else a.issued_at
        v = Vote(assignment_id=a.id, comparison_id=comp.id, annotator=a.annotator, choice=choice, ranking=ranked,
                 shown=order, created_at=now, elapsed_ms=max(0, int((now - start).total_seconds() * 1000)),
                 comment=comment, flagged=bool(flagged), marks=stored_marks)
        s.add(v)
        if choice == "skip":
            a.state = "skipped"  # frees the slot for someone else
        else:
            a.state = "voted"
            comp.filled += 1
        s.flush()
        out = {"vote_id": v.id, "comparison_id": comp.id, "annotator": a.annotator, "choice": choice,
               "created_at": iso(now)}
        if extend:
            s.execute(store.lease_sql.extend, {"lease": extend, "me": a.annotator, "now": now,
                                               "until": now + store.lease})
        if lease_next:
            out["next"] = _lease(store, s, a.annotator, set())
        return out

    return store.retry(write)


def _lock_comparison(store, s: Session, cid: int) -> Comparison:
    q = select(Comparison).where(Comparison.id == cid)
    if store.dialect == "postgresql":
        q = q.with_for_update()  # serialises with _lease on this comparison
    return s.scalar(q)


def retract(store, annotator: str) -> dict | None:
    """Undo `annotator`'s latest standing vote: append a retraction, reopen its lease and return the reopened
    view (None when there is nothing to undo, or the slot was given away after a skip)."""
    annotator = check_name(annotator)

    def write(s: Session):
        retracted = select(Retraction.vote_id)
        v = s.scalar(select(Vote).where(Vote.annotator == annotator, Vote.id.notin_(retracted))
                     .order_by(Vote.id.desc()).limit(1))
        if v is None:
            return None
        comp = _lock_comparison(store, s, v.comparison_id)
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
            if live >= overlap_of(store, comp.id):
                a.state = "expired"
                return {"retracted": v.id, "view": None}
        a.state, a.issued_at, a.expires_at = "open", now, now + store.lease
        a.token = secrets.token_urlsafe(18)
        s.flush()
        return {"retracted": v.id, "view": _view(store, s, a)}

    return store.retry(write)


# ---- checks ---------------------------------------------------------------------------------------------------

def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 100 or any(ord(ch) < 32 for ch in name):
        raise LabelError("annotator name must be 1-100 printable characters")
    return name.strip()


def check_comment(comment: Any) -> str | None:
    """An annotator's comment as stored: stripped, None when empty; refused when not text or too long."""
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise LabelError("a comment must be text")
    comment = comment.strip()
    if len(comment) > MAX_COMMENT:
        raise LabelError(f"a comment takes at most {MAX_COMMENT} characters; this one has {len(comment)}")
    return comment or None


def check_marks(marks: Any) -> dict:
    """A vote's marks as sent: {candidate id (str): marks}, {} when none; refused when not such an object."""
    if marks is None or (isinstance(marks, str) and not marks.strip()):
        return {}
    if isinstance(marks, str):
        if len(marks) > MAX_MARKS:
            raise LabelError(f"marks take at most {MAX_MARKS} characters of JSON; these have {len(marks)}")
        try:
            marks = json.loads(marks)
        except ValueError:
            raise LabelError("marks are not valid JSON: send {\"<candidate id>\": {\"words\": [2]}}") from None
    if not isinstance(marks, dict):
        raise LabelError("marks must be a JSON object {candidate id: marks}")
    out = {}
    for cid, one in marks.items():
        if not (isinstance(cid, int) and not isinstance(cid, bool) or isinstance(cid, str) and cid.isdigit()):
            raise LabelError(f"marks are keyed by candidate id, got {str(cid)[:20]!r}")
        out[str(int(cid))] = one
    return out


def marks_on(s: Session, comp: Comparison, marks: dict) -> str | None:
    """The JSON text stored with a vote: `marks` checked against the comparison's candidates (each on one of them,
    fitting its output: a caption's words, an image's grid); None when nothing is marked."""
    if not marks:
        return None
    kept = {}
    for cid, one in marks.items():
        if int(cid) not in comp.candidate_ids:
            raise LabelError(f"marks on candidate {cid}, which is not in comparison {comp.id} "
                             f"(its candidates: {', '.join(map(str, comp.candidate_ids))})")
        text, image = s.execute(select(Candidate.text, Candidate.image_path).where(Candidate.id == int(cid))).one()
        seen = text if image is None else marks_format.IMAGE  # marks are on what people saw: words, or image cells
        try:
            one = marks_format.parse(one, seen, f"marks on candidate {cid}")
        except DataError as e:
            raise LabelError(str(e)) from None
        if not marks_format.is_empty(one):
            kept[cid] = one
    return json.dumps(kept, separators=(",", ":")) if kept else None


def parse_ranking(ranking: Sequence[str] | str | None, k: int) -> list[str]:
    """Positions best first ("CAB", "C,A,B" or ["C", "A", "B"]); must name each of the k positions once."""
    if isinstance(ranking, str):
        if len(ranking) > 16:
            raise LabelError("ranking is too long")
        ranking = [p for p in ranking.replace(",", "").replace(">", "").replace(" ", "").upper()]
    if not isinstance(ranking, (list, tuple)) or len(ranking) > len(POSITIONS):
        raise LabelError(f"ranking must list the {k} shown positions best first, e.g. {POSITIONS[:k][::-1]!r}")
    ranking = [str(p).upper() for p in ranking]
    if sorted(ranking) != list(POSITIONS[:k]):
        raise LabelError(f"ranking must list the {k} shown positions best first, e.g. {POSITIONS[:k][::-1]!r}")
    return ranking
