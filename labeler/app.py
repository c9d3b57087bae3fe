"""The Gradio labeling app (`vrlhf label`): people compare a policy's samples; an HTTP API for programs.

    vrlhf label --db labels.sqlite --auth users.json --guidelines captioning=cap.md --guidelines colorization=col.md

The server decides who votes: with `--auth` the login (`gr.Request.username`), without it a name typed once per
page (and then only loopback hosts are served, and that one local user is admin). Annotators label; admins
(`vrlhf annotators add NAME --admin`) also see the Stats & export tab: agreement per task and per annotator, the
disagreements, every comment and flag, and the export (a zip with one folder per task, downloaded once and then
deleted from the server). The page's components are laid out in labeler/layout.py, what they show is rendered by
labeler/page.py, the desks behind them live in labeler/desk.py; this file holds the handlers and wires them.

API (gradio_client, or one plain POST to /gradio_api/run/<name> with {"data": [...]}; identity is the login
under --auth, else the `annotator` argument):
    next(annotator="")                                        -> {"view": ..., "progress": ...}
    vote(comparison_id, token, choice, ranking="", annotator="", marks="")
                                                              -> {"vote": ..., "view": next, "progress": ...}
    undo(annotator="")                                        -> {"retracted": vote_id, "view": ...}
`marks` (optional): JSON text {candidate id: marks} of where candidates are wrong (vrlhf/marks.py). On the page a
click or tap marks an image's cell or a caption's word, and the vote sends them (VOTE_JS).
"""

from __future__ import annotations

import functools
import html
import logging
import os
import shutil
import socket
import sys
import tempfile
import traceback
from datetime import datetime
from http import HTTPStatus
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from labeler import guides, page, stats
from labeler.desk import Desk, Labeler, refuse
from labeler.downloads import ROUTE, DownloadRoute, Downloads
from labeler.gate import Gate
from labeler.guides import load_guidelines  # noqa: F401  (re-exported: the demo and tests load them here)
from labeler.hosts import check_host, check_proxies
from labeler.layout import ALL, Ui
from labeler.marking import Grids
from labeler.schema import utcnow
from labeler.store import POSITIONS, LabelError, Store
from labeler.users import Roles

log = logging.getLogger("labeler")
NOT_ADMIN = "Only admins see statistics and export preferences; ask your project lead if you need them."


# The HTTP status of an API refusal, by what its sentence says (the first match; any other refusal is about the
# arguments: 422). Gradio answers every failed call with 500; the gate (labeler.gate.refusals_as_4xx) passes the
# status on, read from the error's title, so that a client tells "you may not" from "the server broke".
REFUSAL_STATUS = {"log in first": 401, "another annotator": 403, "another login": 403, "not leased to you": 403,
                  "unknown comparison": 404, "no longer open": 409}


def refusal(message: str) -> gr.Error:
    """An expected refusal for an API client: one line, titled with its HTTP reason phrase (e.g. "Conflict")."""
    status = next((code for words, code in REFUSAL_STATUS.items() if words in message), 422)
    return gr.Error(message, title=HTTPStatus(status).phrase, print_exception=False)


def guarded(handler):
    """An API handler as Gradio should call it: a refusal reaches the client as one line with a 4xx status; any
    other failure as one line with 500, logged as its type and code locations only (its message may carry a lease
    token, e.g. SQL parameters)."""

    @functools.wraps(handler)
    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error as e:  # the desk's refusals
            raise refusal(e.message) from None
        except LabelError as e:  # the store's
            raise refusal(str(e)) from None
        except Exception as e:  # noqa: BLE001  (a bug or a broken database: logged, answered, never leaked)
            raise refuse(internal(handler, e)) from None

    return run


def internal(handler, e: Exception) -> str:
    """Log a failure inside the app (type and code locations, never its message); the one line to answer."""
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if Path(f.filename).parent.name == "labeler"][-4:]
    where = " -> ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in ours + frames[-1:])
    log.error("labeler: %s failed with %s at %s", handler.__name__, type(e).__name__, where)
    return f"internal error ({type(e).__name__}); see the server log"


def page_event(handler, n_outputs: int, say_at: int):
    """A page handler that never shows Gradio's bare "Error": any refusal or failure becomes a sentence in the
    output at `say_at` (the page's message line) and leaves every other output as it was."""

    @functools.wraps(handler)
    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except (gr.Error, LabelError) as e:
            text = e.message if isinstance(e, gr.Error) else str(e)
            sentence = text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")
        except Exception as e:  # noqa: BLE001
            sentence = (f"Something went wrong on the server ({internal(handler, e)}). Every vote you made is saved: "
                        "try again, and if it keeps happening tell your project lead.")
        out = [gr.update()] * n_outputs
        out[say_at] = gr.update(value=sentence, visible=True)
        return out

    return run


def build_app(store: Store, auth_file: str | None = None, guidelines: dict[str | None, str] | None = None,
              title: str = "visual-rlhf labeler", download_seconds: float = 600, poll_seconds: float = 10.0,
              idle_seconds: float = 180.0) -> gr.Blocks:
    """The labeling UI (Label, and Stats & export for admins) plus the `next`, `vote` and `undo` API endpoints.

    `guidelines`: Markdown per task (None: for every task without its own). A page with nothing left checks for
    new work every `poll_seconds`; a page left alone for `idle_seconds` (0: never) pauses and gives its
    reservations back; an export's download link works once, for `download_seconds`.
    """
    auth = auth_file is not None
    lab, roles = Labeler(store, auth), Roles(auth_file)
    downloads = Downloads(download_seconds)

    def is_admin(request: gr.Request | None) -> bool:
        return request is not None and (not auth or roles.is_admin(getattr(request, "username", None)))

    with gr.Blocks(title=title, delete_cache=(60, 600)) as demo:
        # the pickers' choices: a task sampled later is labelled and exported under ALL
        ui = Ui(list(store.tasks()), auth, poll_seconds)
        label = LabelEvents(store, lab, ui, guidelines or {}, is_admin, poll_seconds, idle_seconds)
        admin = AdminEvents(store, ui, is_admin, downloads, auth)
        wire(demo, ui, label, admin)
        # Off the queue: one plain POST (/gradio_api/run/<name>) per call, no SSE round trips.
        api = dict(concurrency_limit=None, queue=False)
        gr.api(guarded(lab.api_next), api_name="next", **api)
        gr.api(guarded(lab.api_vote), api_name="vote", **api)
        gr.api(guarded(lab.api_undo), api_name="undo", **api)
    demo.queue(default_concurrency_limit=None)
    demo.labeler, demo.downloads = lab, downloads  # for tests, embedding and serve()
    return demo


class LabelEvents:
    """The Label tab's handlers: each renders the page's desk (the comparison on screen) into `ui.core` (or
    `ui.full` for the events that open a page: Start, a login's page load, the task picker)."""

    def __init__(self, store: Store, lab: Labeler, ui: Ui, guidelines: dict[str | None, str], is_admin,
                 poll_seconds: float, idle_seconds: float):
        self.store, self.lab, self.ui, self.guidelines, self.is_admin = store, lab, ui, guidelines, is_admin
        self.poll_seconds, self.idle_seconds = poll_seconds, idle_seconds
        self.grids = Grids(store)  # the grid each comparison's image candidates are marked on

    def render(self, desk: Desk, said: str = "", opening: bool = False, request: gr.Request | None = None) -> list:
        store = self.store
        with desk.lock:
            v, p = desk.cur, store.progress(desk.name)
            k = v["k"] if v else 2
            acc, text, opened = self.guides_update(desk, v, p)
            if v is not None:
                left = (datetime.fromisoformat(v["expires_at"][:-1]) - utcnow()).total_seconds()
                images = any(c["text"] is None for c in v["candidates"])
                body = page.render_view(store, v, desk.rank, store.lease_seconds, left, self.idle_seconds,
                                        guides_opened=opened, grid=self.grids(v["comparison_id"]) if images else None)
            elif desk.away:
                body = page.render_paused(self.idle_seconds)
            else:
                body = page.render_done(p, desk.task, self.poll_seconds)
            fresh = v is None or v["token"] != desk.rendered  # a new comparison on screen: a blank note
            desk.rendered = v and v["token"]
            out = [v["token"] if v else "", gr.update(value=said, visible=bool(said)), body,
                   page.render_progress(desk.name, p, desk.task),
                   gr.update(visible=v is not None and k == 2), gr.update(visible=v is not None and k > 2),
                   *[gr.update(visible=i < k, interactive=pos not in desk.rank) for i, pos in enumerate(POSITIONS)],
                   gr.update(visible=v is not None),
                   gr.update(value="", visible=v is not None) if fresh else gr.update(),
                   gr.update(value=False, visible=v is not None) if fresh else gr.update(),
                   gr.Timer(active=v is None and not desk.away), acc, text]
        if not opening:
            return out
        tasks_now = [(label, value) for label, value in self.ui.task_choices if value == ALL or value in store.tasks()]
        return out + [gr.update(visible=False), gr.update(visible=True), gr.update(visible=self.is_admin(request)),
                      gr.update(choices=tasks_now, value=desk.task or ALL), gr.update(visible=True),
                      gr.update(value="", visible=False)]

    def guides_update(self, desk: Desk, v: dict | None, p: dict) -> tuple[dict, dict, bool]:
        """The guidelines panel's updates (accordion, text) and whether it opens: the guidelines follow the
        comparison's task and kind (pairs, rankings), and open by themselves the first time a task, or this kind of
        it, is on screen."""
        k = v["k"] if v else 2
        key = (v["task"], guides.kind_of(k)) if v else (desk.task, "pairs")
        if key == desk.guides:
            return gr.update(), gr.update(), False
        acc, text = gr.update(), gr.update(value=guides.guidelines_markdown(key[0], k, self.guidelines))
        done = p["tasks"].get(key[0], {}).get("count", 0) if key[0] else p["count"]
        other_kind = any(t == key[0] and kind != key[1] for t, kind in desk.seen)
        if v is not None and key not in desk.seen and (done == 0 or other_kind):
            acc = gr.update(open=True)  # first time on this task, or this kind of it
        desk.guides = key
        desk.seen.add(key)
        return acc, text, acc.get("open") is True

    def on_load(self, request: gr.Request):
        if not self.lab.auth:
            return [gr.update()] * len(self.ui.full)
        return self.render(self.lab.open(self.lab.who(request), request), opening=True, request=request)

    def on_start(self, name: str, request: gr.Request):
        def say(sentence: str) -> list:  # on the name line, under the name box
            return [gr.update()] * (len(self.ui.full) - 1) + [gr.update(value=sentence, visible=True)]

        if not (name or "").strip():
            return say("Type your name first (the name your project lead knows you by), then press Start.")
        try:
            desk = self.lab.open(self.lab.who(request, name), request)
        except LabelError:
            return say("A name is 1 to 100 letters, digits or spaces on one line: type it again and press Start.")
        said = ""
        if name != desk.name:  # check_name strips: say so, so the lead's tables hold no surprise
            said = (f"Your name is stored as “{desk.name}” (spaces at its ends are dropped): your votes are "
                    f"counted under that name.")
        return self.render(desk, said, opening=True, request=request)

    def on_click(self, choice: str):
        def on_button(token: str, note: str, flagged: bool, name: str, marks: str, request: gr.Request):
            desk = self.lab.desk(request, name, shown=token)
            said = self.lab.click(desk, token, choice, note, flagged, marks)
            return self.render(desk, said)
        on_button.__name__ = f"on_{choice.replace(':', '_')}"
        return on_button

    def on_undo(self, token: str, name: str, request: gr.Request):
        desk = self.lab.desk(request, name)
        return self.render(desk, self.lab.undo(desk, token))

    def on_task(self, task: str, name: str, request: gr.Request):
        desk = self.lab.desk(request, name)
        self.lab.set_task(desk, None if task == ALL else task)
        return self.render(desk, opening=True, request=request)

    def on_tick(self, name: str, request: gr.Request):
        desk = self.lab.desk(request, name)
        if desk.cur is not None or not self.lab.poll(desk):
            line = page.render_progress(desk.name, self.store.progress(desk.name), desk.task)
            return [gr.update()] * 3 + [line] + [gr.update()] * (len(self.ui.core) - 4)
        return self.render(desk, "New comparisons have arrived.")

    def on_away(self, name: str, request: gr.Request):
        desk = self.lab.desk(request, name)
        self.lab.pause(desk)
        return self.render(desk)

    def on_back(self, name: str, request: gr.Request):
        desk = self.lab.desk(request, name)
        if not desk.away:
            return [gr.update()] * len(self.ui.core)
        self.lab.resume(desk)
        return self.render(desk, "Welcome back." if desk.cur is not None else "")

    def on_unload(self, request: gr.Request):
        self.lab.close(request)


class AdminEvents:
    """The Stats & export tab's handlers: statistics, a lead's look at one comparison, the export. Admins only."""

    def __init__(self, store: Store, ui: Ui, is_admin, downloads: Downloads, auth: bool):
        self.store, self.ui, self.is_admin, self.downloads, self.auth = store, ui, is_admin, downloads, auth

    def on_stats(self, request: gr.Request):
        if not self.is_admin(request):
            return [gr.update(value=NOT_ADMIN, visible=True)] + [gr.update()] * (len(self.ui.admin_outputs) - 1)
        s = stats.compute(self.store)
        choices = [(label, value) for label, value in self.ui.export_choices if value == ALL or value in s["tasks"]]
        said = stats.summary_markdown(s, self.store.overlap, self.store.overlap_fraction)
        return [gr.update(value="", visible=False), said, s["per_annotator"], s["disagreements"], s["notes"],
                s["labels"], gr.update(choices=choices)]

    def on_inspect(self, comparison: str, request: gr.Request):
        if not self.is_admin(request):
            return gr.update(value=NOT_ADMIN, visible=True), gr.update()
        if not (comparison or "").isdigit():
            return gr.update(), gr.update()
        return gr.update(value="", visible=False), stats.inspect_html(self.store, int(comparison))

    def on_export(self, task: str, format_: str, request: gr.Request):
        from labeler.export import export_archive

        if not self.is_admin(request):
            return gr.update(value=NOT_ADMIN, visible=True), ""
        folder = Path(tempfile.mkdtemp(prefix="vrlhf-download-"))  # removed once downloaded (labeler.downloads)
        try:
            path, pairs = export_archive(self.store, folder, format_, None if task == ALL else task)
        except BaseException as e:
            shutil.rmtree(folder, ignore_errors=True)
            if not isinstance(e, LabelError):
                raise
            return gr.update(value=f"Nothing was exported: {e}.", visible=True), ""  # and no stale link
        token = self.downloads.add(path, getattr(request, "username", None) if self.auth else None)
        size, minutes = path.stat().st_size / 1e6, self.downloads.lifetime / 60
        what = ", ".join(f"{t}: {n} pairs" for t, n in pairs.items())
        said = (f"Export ready ({what}; {size:.1f} MB). The download starts by itself; the link works once, and "
                f"the file is deleted from the server once downloaded (or after {minutes:g} min).")
        link = (f"<a href='{ROUTE.lstrip('/')}{token}' download='{html.escape(path.name)}'>"
                f"Download {html.escape(path.name)} ({size:.1f} MB)</a>")
        return gr.update(value=said, visible=True), link


# A vote (by click, or by key: the key clicks the button) carries the marks made on the comparison it is on: the
# page's script fills in the last argument (page.HEAD_JS, window.vrMarks) just before the event is sent.
VOTE_JS = ("(token, note, flagged, name, marks) => "
           "[token, note, flagged, name, window.vrMarks ? window.vrMarks(token) : '']")


def wire(demo: gr.Blocks, ui: Ui, label: LabelEvents, admin: AdminEvents) -> None:
    """Every page event: which component triggers which handler, with what inputs and outputs."""
    # Page events off the queue: a click is one POST to run/predict (no queue round trip, no event stream).
    opts = dict(api_visibility="private", concurrency_limit=None, queue=False)
    core, full = len(ui.core), len(ui.full)
    comparison_inputs = [ui.shown, ui.comment, ui.flag, ui.name_box, ui.marks]
    votes = dict(opts, js=VOTE_JS)
    demo.load(page_event(label.on_load, full, 1), None, ui.full, **opts)
    demo.unload(label.on_unload)  # the tab closed (its heartbeat stream ended): its reservations go back now
    for trigger in (ui.start.click, ui.name_box.submit):
        trigger(page_event(label.on_start, full, full - 1), ui.name_box, ui.full, **opts)
    for btn, choice in zip(ui.pair_btns, ("a", "b", "tie", "both_bad")):
        btn.click(page_event(label.on_click(choice), core, 1), comparison_inputs, ui.core, **votes)
    for btn, p in zip(ui.rank_btns, POSITIONS):
        btn.click(page_event(label.on_click(f"rank:{p}"), core, 1), comparison_inputs, ui.core, **votes)
    ui.all_bad.click(page_event(label.on_click("both_bad"), core, 1), comparison_inputs, ui.core, **votes)
    ui.skip.click(page_event(label.on_click("skip"), core, 1), comparison_inputs, ui.core, **opts)  # no marks
    ui.undo.click(page_event(label.on_undo, core, 1), [ui.shown, ui.name_box], ui.core, **opts)
    ui.task_pick.input(page_event(label.on_task, full, 1), [ui.task_pick, ui.name_box], ui.full, **opts)
    ui.timer.tick(page_event(label.on_tick, core, 1), ui.name_box, ui.core, **opts)
    ui.away.click(page_event(label.on_away, core, 1), ui.name_box, ui.core, **opts)
    ui.back.click(page_event(label.on_back, core, 1), ui.name_box, ui.core, **opts)

    stats_out = len(ui.admin_outputs)
    ui.stats_tab.select(page_event(admin.on_stats, stats_out, 0), None, ui.admin_outputs, **opts)
    ui.refresh.click(page_event(admin.on_stats, stats_out, 0), None, ui.admin_outputs, **opts)
    ui.inspect.click(page_event(admin.on_inspect, 2, 0), ui.inspect_id, [ui.admin_msg, ui.inspected],
                     js="() => [window.vrInspect || '']", **opts).then(
        None, None, None, js="() => document.getElementById('vr-inspected').scrollIntoView({block: 'start'})")
    ui.export_btn.click(page_event(admin.on_export, 2, 0), [ui.export_task, ui.fmt], [ui.admin_msg, ui.download],
                        **opts).then(
        None, None, None, js="() => { const a = document.querySelector('#vr-download a'); if (a) a.click(); }")


def serve(store: Store, host: str = "127.0.0.1", port: int | None = 7860, auth_file: str | None = None,
          block: bool = True, quiet: bool = False, login_policy=None, download_seconds: float = 600,
          guidelines: dict[str | None, str] | None = None, poll_seconds: float = 10.0,
          trusted_proxies: list[str] | None = None, idle_seconds: float = 180.0) -> tuple[gr.Blocks, str]:
    """Launch the app; returns (blocks, url). Refuses non-loopback hosts without `auth_file`; `login_policy`
    (labeler.users.LoginPolicy) sets how failed logins are slowed and limited; the client address those limits
    count is taken from X-Forwarded-For only on requests from `trusted_proxies` (addresses or networks; default:
    nobody's); see build_app for the rest."""
    from labeler.users import authenticator, load_users

    check_host(host, auth_file is not None)
    forwarded_allow_ips = check_proxies(trusted_proxies or [], auth_file is not None)
    if auth_file is not None:
        load_users(auth_file)  # fail now, not at the first login
    demo = build_app(store, auth_file, guidelines, download_seconds=download_seconds, poll_seconds=poll_seconds,
                     idle_seconds=idle_seconds)
    # Gradio builds uvicorn's Config inside launch() and passes no `forwarded_allow_ips`, so uvicorn reads this
    # variable, and without it trusts X-Forwarded-For from 127.0.0.1: anyone on the machine (or a proxy there that
    # passes the header on) would choose the address the login limits count.
    previous = os.environ.get("FORWARDED_ALLOW_IPS")
    os.environ["FORWARDED_ALLOW_IPS"] = forwarded_allow_ips
    try:
        _, url, _ = demo.launch(
            server_name=host, server_port=port, auth=authenticator(auth_file, login_policy) if auth_file else None,
            auth_message="visual-rlhf labeler: log in with your annotator name", prevent_thread_lock=True,
            quiet=quiet, css=page.CSS, head=page.HEAD_JS, footer_links=["api"], max_file_size="1mb", ssr_mode=False,
            enable_monitoring=False,  # Gradio's event analytics (the gate refuses /monitoring too)
            app_kwargs={"middleware": [Middleware(Gate), Middleware(DownloadRoute, downloads=demo.downloads)]})
    finally:
        if previous is None:
            os.environ.pop("FORWARDED_ALLOW_IPS", None)
        else:
            os.environ["FORWARDED_ALLOW_IPS"] = previous
    if block:
        demo.block_thread()
    return demo, url


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


if __name__ == "__main__":  # `python -m labeler.app` is `vrlhf label`
    from labeler.cli import main
    from vrlhf.errors import run_command

    sys.exit(run_command("vrlhf label", main))
