"""The app's server side: who is asking, one desk per open page, and the handlers behind the page and the API.

A desk holds the comparison on screen plus the next one, leased in a background thread, so a vote answers with the
next comparison at once. Clicks carry the lease token of what was on screen, so a fast double key press never
votes on a comparison nobody saw. A desk labels one task or all of them interleaved (the next comparison is taken
from the task after the current one's, when it has any).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import gradio as gr

from labeler import leases
from labeler.gate import MAX_TEXT
from labeler.store import POSITIONS, LabelError, Store, check_name

FOREIGN_PAGE = "this page session belongs to another login: reload the page"
CHOICE_WORDS = {"a": "A better", "b": "B better", "tie": "Tie", "both_bad": "Both bad", "skip": "Skipped",
                "rank": "Ranking"}


class Desk:
    """One open page: the comparison on screen, the next one (leased in the background), a partial ranking."""

    def __init__(self, name: str, task: str | None = None):
        self.name, self.task = name, task  # task None: every task, interleaved
        self.cur: dict | None = None
        self.nxt: dict | None = None
        self.rank: list[str] = []
        self.lock = threading.Lock()
        self.guides: tuple | None = None  # (task, kind) whose guidelines the page shows (None: none shown yet)
        self.seen: set[tuple] = set()  # every (task, kind) whose guidelines this page has shown
        self.rendered: str | None = None  # the lease token the page shows
        self.away = False  # paused after a while without a key or click: it holds no reservation


class Labeler:
    """Identity, desks per page, prefetching, and the handlers behind UI and API."""

    def __init__(self, store: Store, auth: bool = False):
        self.store, self.auth = store, auth
        self.desks: dict[str, Desk] = {}
        self.prefetcher = ThreadPoolExecutor(4, thread_name_prefix="prefetch")
        self._tasks: tuple[float, list[str]] = (0.0, [])

    def task_names(self) -> list[str]:
        """The tasks the database holds, re-read at most every 5 s (new rounds arrive from `vrlhf sample`)."""
        when, names = self._tasks
        if time.monotonic() - when > 5:
            names = list(self.store.tasks())
            self._tasks = (time.monotonic(), names)
        return names

    # ---- identity --------------------------------------------------------------------------------------------

    def who(self, request: gr.Request | None, claimed: str | None = "") -> str:
        if claimed is not None and (not isinstance(claimed, str) or len(claimed) > MAX_TEXT):
            raise refuse("malformed annotator name")
        if self.auth:
            user = getattr(request, "username", None)
            if not user:
                raise refuse("log in first")
            if claimed and claimed != user:
                raise refuse("you cannot act as another annotator")
            return user
        return check_name(claimed)

    # ---- API -------------------------------------------------------------------------------------------------

    def api_next(self, annotator: str = "", request: gr.Request = None) -> dict:
        name = self.who(request, annotator)
        return {"view": self.store.next_comparison(name), "progress": api_progress(self.store.progress(name))}

    def api_vote(self, comparison_id: int, token: str, choice: str, ranking: str = "", annotator: str = "",
                 marks: str = "", request: gr.Request = None) -> dict:
        name = self.who(request, annotator)
        check_args(comparison_id, token, choice, ranking)
        if marks is not None and not isinstance(marks, str):
            raise refuse("marks must be a string: JSON text {candidate id: marks}")
        vote = self.store.vote(token, choice, ranking or None, annotator=name, comparison_id=comparison_id,
                               lease_next=True, marks=marks or None)  # a LabelError: one line to the client
        view = vote.pop("next")
        return {"vote": vote, "view": view, "progress": api_progress(self.store.progress(name))}

    def api_undo(self, annotator: str = "", request: gr.Request = None) -> dict:
        name = self.who(request, annotator)
        done = self.store.retract(name)
        return {"retracted": done and done["retracted"], "view": done and done["view"]}

    # ---- desks -----------------------------------------------------------------------------------------------

    def desk(self, request: gr.Request, name: str | None = None, shown: str | None = None) -> Desk:
        """The page's desk; a page the server no longer knows (it restarted, or took the page for closed) gets a new
        one for its login, or, without logins, for the name the page started with; `shown`, the lease on the page,
        is taken back when nobody has taken it meanwhile, so the vote on it counts."""
        desk = self.desks.get(request.session_hash)
        if desk is None:
            if self.auth:
                return self.open(self.who(request), request, shown=shown)
            try:
                return self.open(check_name(name), request, shown=shown)
            except LabelError:
                raise refuse("this page has expired: reload it and type your name again") from None
        if not self.owns(desk, request):
            raise refuse(FOREIGN_PAGE)
        return desk

    def owns(self, desk: Desk, request: gr.Request) -> bool:
        """Under --auth a page session belongs to the login that opened it (the gate refuses others first)."""
        return not self.auth or desk.name == getattr(request, "username", None)

    def open(self, name: str, request: gr.Request, task: str | None = None, shown: str | None = None) -> Desk:
        old = self.desks.get(request.session_hash)
        if old is not None and not self.owns(old, request):
            raise refuse(FOREIGN_PAGE)
        desk = Desk(name, task)
        self.desks[request.session_hash] = desk
        with desk.lock:
            back = shown and leases.reclaim(self.store, name, shown)
            desk.cur = back or self.store.next_comparison(name, task=task)
        self._prefetch(desk)
        return desk

    def close(self, request: gr.Request) -> None:
        """The page closed (Gradio's unload: its heartbeat stream ended) or logged out: its reservations go back to
        the queue now, not when they lapse."""
        desk = self.desks.get(request.session_hash)
        if desk is not None and self.owns(desk, request):
            del self.desks[request.session_hash]
            self.give_back(desk, keep=self.shown_elsewhere(desk))

    def shown_elsewhere(self, desk: Desk) -> set[str]:
        """Leases of the desk's annotator that another of their pages holds: a reload opens the new page before the
        old one's unload, and a lease is the annotator's, not the page's, so those stay."""
        return {v["token"] for d in list(self.desks.values()) if d is not desk and d.name == desk.name
                for v in (d.cur, d.nxt) if v is not None}

    def give_back(self, desk: Desk, keep: set[str] = frozenset()) -> None:
        """Release what the desk holds (the comparison on screen and the prefetched one) but the leases in `keep`;
        a partial ranking goes."""
        with desk.lock:
            held = [v["token"] for v in (desk.cur, desk.nxt) if v is not None and v["token"] not in keep]
            desk.cur, desk.nxt, desk.rank = None, None, []
            self.store.release(desk.name, held)

    def pause(self, desk: Desk) -> None:
        """The page was left alone: give its reservations back; `resume` (the next key or click) goes on."""
        desk.away = True
        self.give_back(desk, keep=self.shown_elsewhere(desk))

    def resume(self, desk: Desk) -> None:
        desk.away = False
        self.poll(desk)

    def set_task(self, desk: Desk, task: str | None) -> None:
        """Label `task` only (None: every task, interleaved); leases of other tasks go back to the queue at once."""
        with desk.lock:
            desk.task = task
            held = [v for v in (desk.cur, desk.nxt) if v is not None]
            keep = [v for v in held if task is None or v["task"] == task]
            self.store.release(desk.name, [v["token"] for v in held if v not in keep])
            desk.cur = keep[0] if keep else None
            desk.nxt = keep[1] if len(keep) > 1 else None
            desk.rank = []
            if desk.cur is None:
                desk.cur = self.store.next_comparison(desk.name, task=task)
        self._prefetch(desk)

    def _following(self, desk: Desk) -> str | None:
        """With every task interleaved, the task to take the next comparison from: the one after the current's."""
        if desk.task is not None or desk.cur is None:
            return None
        names = self.task_names()
        if len(names) < 2 or desk.cur["task"] not in names:
            return None
        return names[(names.index(desk.cur["task"]) + 1) % len(names)]

    def _prefetch(self, desk: Desk) -> None:
        def run():
            with desk.lock:
                if desk.nxt is None and desk.cur is not None:
                    desk.nxt = self.store.next_comparison(desk.name, exclude=[desk.cur["comparison_id"]],
                                                          task=desk.task, prefer=self._following(desk))
        self.prefetcher.submit(run)

    def _advance(self, desk: Desk) -> None:
        exclude = [desk.cur["comparison_id"]] if desk.cur else []
        desk.cur, desk.nxt, desk.rank = desk.nxt, None, []
        if desk.cur is None:
            desk.cur = self.store.next_comparison(desk.name, exclude=exclude, task=desk.task)
        self._prefetch(desk)

    def poll(self, desk: Desk) -> bool:
        """A page with nothing on screen asks again (new rounds, lapsed reservations); True when it got one."""
        with desk.lock:
            if desk.away:
                return False
            if desk.cur is None:
                desk.cur = self.store.next_comparison(desk.name, task=desk.task)
                if desk.cur is None:
                    return False
        self._prefetch(desk)
        return True

    # ---- page actions ----------------------------------------------------------------------------------------

    def click(self, desk: Desk, shown_token: str, choice: str, comment: str = "", flagged: bool = False,
              marks: str = "") -> str:
        """A button on the page: `shown_token` is the lease that page displayed when the key was pressed; `marks`
        the JSON of the marks made on it ({candidate id: marks}, "" for none), stored with the vote (not with a
        skip). Returns the sentence the page shows about it ("" when nothing happened)."""
        with desk.lock:
            if desk.cur is None or desk.cur["token"] != shown_token:
                return ""  # a stale click (double press): the page already moved on
            k = desk.cur["k"]
            if choice.startswith("rank:"):
                pos = choice[5:]
                if k == 2 or pos in desk.rank or pos not in POSITIONS[:k]:
                    return ""
                desk.rank.append(pos)
                if len(desk.rank) < k - 1:
                    return ""
                rest = [p for p in POSITIONS[:k] if p not in desk.rank]
                choice, ranking = "rank", "".join(desk.rank + rest)
            else:
                ranking = None
            cid = desk.cur["comparison_id"]
            try:
                marks = None if choice == "skip" else marks or None
                self.store.vote(desk.cur["token"], choice, ranking, annotator=desk.name, comment=comment or None,
                                flagged=bool(flagged), extend=desk.nxt and desk.nxt["token"], marks=marks)
                what = CHOICE_WORDS[choice] + (f" {' > '.join(ranking)}" if ranking else "")
                extra = ", flagged" if flagged else ""
                extra += ", with your comment" if (comment or "").strip() else ""
                extra += ", with your marks" if marks else ""
                said = f"Saved: {what} on comparison {cid}{extra}. Press U to undo."
            except LabelError as e:
                said = refused_vote(str(e))
            self._advance(desk)
            return said

    def undo(self, desk: Desk, shown_token: str) -> str:
        with desk.lock:
            if desk.cur is not None and desk.cur["token"] != shown_token:
                return ""
            if desk.rank:
                desk.rank.pop()
                return "Took back your last pick of this ranking."
            done = self.store.retract(desk.name)
            if done is None:
                return "Nothing to undo: you have no vote left to take back."
            if done["view"] is None:
                return ("Undone, but that comparison has gone to another annotator meanwhile, so it is not shown "
                        "again.")
            if desk.cur is not None:  # the one we were on comes back right after (a dropped prefetch stays ours:
                desk.nxt = desk.cur  # it is our oldest open lease, so a later lease finds it again)
            desk.cur, desk.rank = done["view"], []
            return f"Undone: your vote on comparison {desk.cur['comparison_id']} is taken back; vote on it again."


def refused_vote(reason: str) -> str:
    """The sentence a page shows for a vote the store refused: what happened, and that the page moved on."""
    if "no longer open" in reason:
        return ("Your reservation of that comparison ran out and it went to another annotator, so that vote was "
                "not saved. Here is your next comparison.")
    return f"That vote was not saved ({reason}). Here is your next comparison."


def api_progress(p: dict) -> dict:
    return {key: p[key] for key in ("count", "remaining", "per_min")}


def refuse(message: str) -> gr.Error:
    """A clear one-line error for the client; an expected refusal, so no server-side traceback."""
    return gr.Error(message, print_exception=False)


def check_args(comparison_id, token, choice, ranking) -> None:
    """Refuse malformed or oversized API arguments before touching the database."""
    if not isinstance(comparison_id, int) or isinstance(comparison_id, bool) or not 0 < comparison_id < 2**62:
        raise refuse("comparison_id must be a positive integer")
    for name, value in (("token", token), ("choice", choice), ("ranking", ranking)):
        if value is not None and not isinstance(value, str):
            raise refuse(f"{name} must be a string")
        if value is not None and len(value) > MAX_TEXT:
            raise refuse(f"{name} is too long")
