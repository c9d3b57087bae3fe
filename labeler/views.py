"""Read views of the store: an annotator's progress per task, rounds, tasks, counts and the audit of every vote.

All of them read through the reader engine (on SQLite a deferred transaction: one WAL snapshot, never waiting for
the writer), so the Stats tab and progress lines do not slow votes down.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import and_, bindparam, case, func, or_, select

from labeler.leases import check_name, overlap_sql
from labeler.schema import Assignment, Candidate, Comparison, Item, Retraction, Round, Vote, iso, utcnow


class Statements:
    """The progress statements, built once (see labeler.leases.Statements)."""

    def __init__(self, store):
        A, C, V, now, me = Assignment, Comparison, Vote, bindparam("now"), bindparam("me")
        ov = overlap_sql(store)
        live = or_(A.state == "voted", and_(A.state == "open", A.expires_at > now))
        taken = select(func.count(A.id)).where(A.comparison_id == C.id, live).scalar_subquery()
        done = select(A.id).where(A.comparison_id == C.id, A.annotator == me,
                                  A.state.in_(("voted", "skipped"))).exists()
        mine = select(A.id).where(A.comparison_id == C.id, A.annotator == me, A.state == "open",
                                  A.expires_at > now).exists()
        # wanted from me: not yet full, not yet judged (or skipped) by me; available: of those, the ones I hold or
        # that have a free slot now (the rest are reserved by others and come back if their leases lapse)
        self.wanted = (select(Round.task, func.count(C.id), func.sum(case((or_(mine, taken < ov), 1), else_=0)))
                       .join(Round, Round.id == C.round_id).where(C.filled < ov, ~done).group_by(Round.task))
        self.standing = (select(Round.task, func.count(V.id)).join(C, C.id == V.comparison_id)
                         .join(Round, Round.id == C.round_id)
                         .where(V.annotator == me, V.id.not_in(select(Retraction.vote_id))).group_by(Round.task))
        self.recent = select(V.created_at).where(V.annotator == me, V.created_at > bindparam("since"))


def progress(store, annotator: str) -> dict:
    """The annotator's standing votes, labels still wanted from them, and labels/min over 10 minutes; in all and
    per task under "tasks": {task: {"count", "remaining", "available", "reserved"}}. `available` can be leased to
    them now; `reserved` are held by other annotators and come back to the queue if those leases lapse."""
    annotator = check_name(annotator)
    now = utcnow()
    q = store.view_sql
    with store.ReadSession() as s:
        standing = dict(s.execute(q.standing, {"me": annotator}).all())
        wanted = {t: (n, int(free or 0)) for t, n, free in s.execute(q.wanted, {"me": annotator, "now": now})}
        recent = s.scalars(q.recent, {"me": annotator, "since": now - timedelta(minutes=10)}).all()
    rate = 0.0
    if len(recent) >= 2:
        span = (now - min(recent)).total_seconds() / 60
        rate = len(recent) / max(span, 1 / 60)
    tasks = {t: {"count": standing.get(t, 0), "remaining": wanted.get(t, (0, 0))[0],
                 "available": wanted.get(t, (0, 0))[1], "reserved": wanted.get(t, (0, 0))[0] - wanted.get(t, (0, 0))[1]}
             for t in sorted(set(standing) | set(wanted))}
    return {"count": sum(standing.values()), "remaining": sum(n for n, _ in wanted.values()),
            "available": sum(free for _, free in wanted.values()), "per_min": round(rate, 1), "tasks": tasks}


def tasks(store) -> dict[str, int]:
    """{task: comparisons} for every task with a round, in name order."""
    with store.ReadSession() as s:
        rows = s.execute(select(Round.task, func.count(Comparison.id))
                         .outerjoin(Comparison, Comparison.round_id == Round.id).group_by(Round.task)).all()
    return dict(sorted(rows))


def rounds(store) -> list[dict]:
    """Every sampling round: id, task, policy name and path, k, when, whether complete, its --against round."""
    with store.ReadSession() as s:
        counts = dict(s.execute(select(Comparison.round_id, func.count(Comparison.id))
                                .group_by(Comparison.round_id)).all())
        return [{"id": r.id, "task": r.task, "policy_name": r.policy_name, "policy_path": r.policy_path,
                 "k": r.k, "created_at": r.created_at, "complete": r.complete, "expected": r.expected,
                 "comparisons": counts.get(r.id, 0), "part_of": r.part_of}
                for r in s.scalars(select(Round).order_by(Round.id))]


def counts(store) -> dict:
    """Rows per table."""
    with store.ReadSession() as s:
        return {t.__tablename__: s.scalar(select(func.count()).select_from(t))
                for t in (Round, Item, Candidate, Comparison, Assignment, Vote, Retraction)}


def votes(store) -> list[dict]:
    """Every vote ever written (the audit view), oldest first, with its comment, flag, marks ({candidate id (str):
    marks}, None when none) and retraction time."""
    with store.ReadSession() as s:
        rows = s.execute(
            select(Vote, Retraction.created_at, Comparison, Item, Round)
            .join(Comparison, Comparison.id == Vote.comparison_id)
            .join(Item, Item.id == Comparison.item_id)
            .join(Round, Round.id == Comparison.round_id)
            .outerjoin(Retraction, Retraction.vote_id == Vote.id)
            .order_by(Vote.id)).all()
    return [{"vote_id": v.id, "comparison_id": v.comparison_id, "round_id": r.id, "task": r.task,
             "policy": r.policy_name, "item_id": i.row_id, "image": i.image_path, "input": i.input_path,
             "annotator": v.annotator,
             "choice": v.choice, "ranking": v.ranking, "shown": v.shown, "candidate_ids": c.candidate_ids, "k": c.k,
             "created_at": iso(v.created_at), "elapsed_ms": v.elapsed_ms, "comment": v.comment,
             "flagged": bool(v.flagged), "marks": json.loads(v.marks) if v.marks else None,
             "retracted_at": None if rt is None else iso(rt)}
            for v, rt, c, i, r in rows]


def candidates(store, ids: Sequence[int]) -> dict[int, dict]:
    """{candidate id: {"text", "image", "round_id", "policy"}}."""
    with store.ReadSession() as s:
        rows = s.execute(select(Candidate, Round).join(Round, Round.id == Candidate.round_id)
                         .where(Candidate.id.in_(list(ids)))).all()
    return {c.id: {"text": c.text, "image": c.image_path, "round_id": c.round_id, "policy": r.policy_name}
            for c, r in rows}


def comparison(store, comparison_id: int) -> dict | None:
    """What comparison `comparison_id` shows, in its stored order: {"comparison_id", "task", "k", "item_id",
    "input", "image", "round_id", "policy", "candidates": [{"candidate_id", "text", "image", "policy"}]}."""
    with store.ReadSession() as s:
        row = s.execute(select(Comparison, Item, Round).join(Item, Item.id == Comparison.item_id)
                        .join(Round, Round.id == Comparison.round_id).where(Comparison.id == comparison_id)).first()
    if row is None:
        return None
    c, i, r = row
    cands = candidates(store, c.candidate_ids)
    return {"comparison_id": c.id, "task": r.task, "k": c.k, "item_id": i.row_id, "input": i.input_path,
            "image": i.image_path, "round_id": r.id, "policy": r.policy_name,
            "candidates": [{"candidate_id": cid} | cands[cid] for cid in c.candidate_ids]}
