"""The Gradio labeling app (`vrlhf label`): people compare a policy's samples; an HTTP API for programs.

    vrlhf label --db labels.sqlite --auth users.json --guidelines captioning=cap.md --guidelines colorization=col.md

The server decides who votes: with `--auth` the login (`gr.Request.username`), without it a name typed once per
page (and then only loopback hosts are served, and that one local user is admin). Annotators label; admins
(`vrlhf annotators add NAME --admin`) also see the Stats & export tab: agreement per task and per annotator, the
disagreements, every comment and flag, and the export (a zip with one folder per task, downloaded once and then
deleted from the server). The page and its handlers live in labeler/desk.py (server side) and labeler/page.py (what
is shown); this file lays the page out and wires it.

API (gradio_client, or one plain POST to /gradio_api/run/<name> with {"data": [...]}; identity is the login
under --auth, else the `annotator` argument):
    next(annotator="")                                        -> {"view": ..., "progress": ...}
    vote(comparison_id, token, choice, ranking="", annotator="") -> {"vote": ..., "view": next, "progress": ...}
    undo(annotator="")                                        -> {"retracted": vote_id, "view": ...}
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
from labeler.cli import LabelConfig, check_host, check_proxies, is_loopback, main  # noqa: F401  (`-m labeler.app`)
from labeler.desk import Desk, Labeler, refuse
from labeler.downloads import ROUTE, DownloadRoute, Downloads
from labeler.gate import Gate
from labeler.guides import load_guidelines  # noqa: F401  (re-exported: the demo and tests load them here)
from labeler.leases import MAX_COMMENT
from labeler.schema import utcnow
from labeler.store import MAX_K, POSITIONS, LabelError, Store
from labeler.users import Roles
from vrlhf.exports import FORMATS

log = logging.getLogger("labeler")
ALL = "all"  # the task pickers' value for every task (labelling: interleaved; export: one folder per task)
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
    lab, roles, guidelines = Labeler(store, auth), Roles(auth_file), guidelines or {}
    downloads = Downloads(download_seconds)
    present = list(store.tasks())  # the pickers' choices; a task sampled later is labelled and exported under ALL
    task_choices = [("All tasks, interleaved", ALL)] + [(t, t) for t in present]
    export_choices = [("All tasks (one folder each)", ALL)] + [(t, t) for t in present]

    def is_admin(request: gr.Request) -> bool:
        return not auth or roles.is_admin(getattr(request, "username", None))

    with gr.Blocks(title=title, delete_cache=(60, 600)) as demo:
        shown = gr.Textbox(visible=False, elem_id="vr-token")  # lease token on screen, sent with each click
        timer = gr.Timer(poll_seconds, active=False)  # ticks only while nothing is left to label
        with gr.Column(visible=not auth) as login_col:
            gr.Markdown("## Who is labelling?")
            name_box = gr.Textbox(label="Your name", placeholder="e.g. alice", max_length=100, elem_id="vr-name")
            name_msg = gr.Markdown(elem_id="vr-name-msg")
            start = gr.Button("Start", variant="primary", elem_id="vr-start")
        with gr.Tabs(visible=auth) as tabs:  # shown once someone is labelling (no empty tabs under the name box)
            with gr.Tab("Label", id="label"):
                with gr.Column(visible=False, elem_id="vr-label") as label_col:
                    with gr.Row(equal_height=True, elem_id="vr-top"):
                        task_pick = gr.Radio(task_choices, value=ALL, label="Task", elem_id="vr-task", scale=3)
                        progress = gr.Markdown(elem_id="vr-progress")
                        if auth:  # a shared computer: end this login here (the page's reservations go back)
                            gr.Button("Log out", elem_id="vr-logout", size="sm", scale=0, min_width=90).click(
                                None, js="() => { location.href = 'logout?all_session=false'; }")
                    message = gr.Markdown(elem_id="vr-message")
                    with gr.Accordion("Guidelines [G]", open=False, elem_id="vr-guidelines") as guide_acc:
                        guide_text = gr.Markdown(elem_id="vr-guidelines-text")
                    view = gr.HTML(elem_id="vr-view")
                    with gr.Row(equal_height=True):
                        comment = gr.Textbox(show_label=False, max_length=MAX_COMMENT, lines=1, scale=4,
                                             placeholder="Comment on this comparison (optional; saved with your vote; "
                                                         "Enter or Esc: back to the keys)",
                                             elem_id="vr-comment")
                        flag = gr.Checkbox(label="Flag for the project lead", elem_id="vr-flag", scale=1)
                    # Vote buttons, Skip and Undo: a bar fixed to the bottom of the window (page.CSS), always in view.
                    with gr.Column(elem_id="vr-actions"):
                        with gr.Row(visible=True, elem_classes="vr-keys") as pair_row:
                            pair_btns = [gr.Button("A better [1]", elem_id="vr-a", variant="primary"),
                                         gr.Button("B better [2]", elem_id="vr-b", variant="primary"),
                                         gr.Button("Tie [3]", elem_id="vr-tie"),
                                         gr.Button("Both bad [0]", elem_id="vr-bad")]
                        with gr.Row(visible=False, elem_classes="vr-keys") as rank_row:
                            rank_btns = [gr.Button(f"{p} [{i + 1}]", elem_id=f"vr-rank-{p}", variant="primary")
                                         for i, p in enumerate(POSITIONS[:MAX_K])]
                            all_bad = gr.Button("All bad [0]", elem_id="vr-allbad")
                        with gr.Row(elem_classes="vr-keys"):
                            skip = gr.Button("Skip [S]", elem_id="vr-skip", size="sm")
                            undo = gr.Button("Undo last [U]", elem_id="vr-undo", size="sm")
                    # Pressed by the page's script (page.HEAD_JS): a page left alone pauses; the next key goes on.
                    away = gr.Button("away", elem_id="vr-away", elem_classes="vr-hidden")
                    back = gr.Button("back", elem_id="vr-back", elem_classes="vr-hidden")
            with gr.Tab("Stats & export", id="stats", visible=not auth, elem_id="vr-stats-tab") as stats_tab:
                admin_msg = gr.Markdown(elem_id="vr-admin-msg")
                with gr.Row(equal_height=True):
                    export_task = gr.Dropdown(export_choices, value=ALL, label="Export", elem_id="vr-export-task")
                    fmt = gr.Dropdown(list(FORMATS), value="hf", label="Format", elem_id="vr-format")
                    export_btn = gr.Button("Export preferences", elem_id="vr-export", variant="primary")
                download = gr.HTML(elem_id="vr-download")
                refresh = gr.Button("Refresh statistics", elem_id="vr-refresh", size="sm")
                summary = gr.Markdown(elem_id="vr-summary")
                per_annotator = gr.Dataframe(stats.per_annotator([]), interactive=False, elem_id="vr-per-annotator",
                                             label="Per annotator")
                gr.Markdown(stats.PER_ANNOTATOR_EXPLAINED)
                gr.Markdown("### Disagreements\nComparisons whose annotators judged differently, newest first.")
                disagreements = gr.HTML(elem_id="vr-disagreements")
                gr.Markdown("### Comments and flags")
                notes = gr.HTML(elem_id="vr-notes")
                inspected = gr.HTML(elem_id="vr-inspected")  # a clicked row's comparison, as its annotators saw it
                inspect_id = gr.Textbox(visible=False)
                inspect = gr.Button("inspect", elem_id="vr-inspect", elem_classes="vr-hidden")
                labels = gr.Dataframe(stats.label_mix([]), interactive=False, label="Label distribution")

        # Outputs of every comparison event (`core`), and of the events that open a page (`full`). The lease token
        # comes first, the message line second (page_event writes its sentences there), the name line last.
        core = [shown, message, view, progress, pair_row, rank_row, *rank_btns, skip, comment, flag, timer, guide_acc,
                guide_text]
        full = core + [login_col, label_col, stats_tab, task_pick, tabs, name_msg]

        def render(desk: Desk, said: str = "", opening: bool = False, request: gr.Request | None = None) -> list:
            with desk.lock:
                v, p = desk.cur, store.progress(desk.name)
                k = v["k"] if v else 2
                acc, text, opened = gr.update(), gr.update(), False
                key = (v["task"], guides.kind_of(k)) if v else (desk.task, "pairs")
                if key != desk.guides:  # the guidelines follow the comparison's task and kind (pairs, rankings)
                    text = gr.update(value=guides.guidelines_markdown(key[0], k, guidelines))
                    done = p["tasks"].get(key[0], {}).get("count", 0) if key[0] else p["count"]
                    other_kind = any(t == key[0] and kind != key[1] for t, kind in desk.seen)
                    if v is not None and key not in desk.seen and (done == 0 or other_kind):
                        acc, opened = gr.update(open=True), True  # first time on this task, or this kind of it
                    desk.guides = key
                    desk.seen.add(key)
                if v is not None:
                    left = (datetime.fromisoformat(v["expires_at"][:-1]) - utcnow()).total_seconds()
                    body = page.render_view(store, v, desk.rank, store.lease_seconds, left, idle_seconds,
                                            guides_opened=opened)
                elif desk.away:
                    body = page.render_paused(idle_seconds)
                else:
                    body = page.render_done(p, desk.task, poll_seconds)
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
            tasks_now = [(label, value) for label, value in task_choices if value == ALL or value in store.tasks()]
            return out + [gr.update(visible=False), gr.update(visible=True),
                          gr.update(visible=request is not None and is_admin(request)),
                          gr.update(choices=tasks_now, value=desk.task or ALL), gr.update(visible=True),
                          gr.update(value="", visible=False)]

        def on_load(request: gr.Request):
            if not auth:
                return [gr.update()] * len(full)
            return render(lab.open(lab.who(request), request), opening=True, request=request)

        def on_start(name: str, request: gr.Request):
            if not (name or "").strip():
                out = [gr.update()] * len(full)
                out[-1] = gr.update(value="Type your name first (the name your project lead knows you by), then "
                                          "press Start.", visible=True)
                return out
            try:
                desk = lab.open(lab.who(request, name), request)
            except LabelError:
                out = [gr.update()] * len(full)
                out[-1] = gr.update(value="A name is 1 to 100 letters, digits or spaces on one line: type it again "
                                          "and press Start.", visible=True)
                return out
            said = ""
            if name != desk.name:  # check_name strips: say so, so the lead's tables hold no surprise
                said = (f"Your name is stored as “{desk.name}” (spaces at its ends are dropped): your votes are "
                        f"counted under that name.")
            return render(desk, said, opening=True, request=request)

        def on_click(choice: str):
            def on_button(token: str, note: str, flagged: bool, name: str, request: gr.Request):
                desk = lab.desk(request, name, shown=token)
                said = lab.click(desk, token, choice, note, flagged)
                return render(desk, said)
            on_button.__name__ = f"on_{choice.replace(':', '_')}"
            return on_button

        def on_undo(token: str, name: str, request: gr.Request):
            desk = lab.desk(request, name)
            return render(desk, lab.undo(desk, token))

        def on_task(task: str, name: str, request: gr.Request):
            desk = lab.desk(request, name)
            lab.set_task(desk, None if task == ALL else task)
            return render(desk, opening=True, request=request)

        def on_tick(name: str, request: gr.Request):
            desk = lab.desk(request, name)
            if desk.cur is not None or not lab.poll(desk):
                return [gr.update()] * 3 + [page.render_progress(desk.name, store.progress(desk.name), desk.task)] \
                    + [gr.update()] * (len(core) - 4)
            return render(desk, "New comparisons have arrived.")

        def on_away(name: str, request: gr.Request):
            desk = lab.desk(request, name)
            lab.pause(desk)
            return render(desk)

        def on_back(name: str, request: gr.Request):
            desk = lab.desk(request, name)
            if not desk.away:
                return [gr.update()] * len(core)
            lab.resume(desk)
            return render(desk, "Welcome back." if desk.cur is not None else "")

        admin_outputs = [admin_msg, summary, per_annotator, disagreements, notes, labels, export_task]

        def on_stats(request: gr.Request):
            if not is_admin(request):
                return [gr.update(value=NOT_ADMIN, visible=True)] + [gr.update()] * (len(admin_outputs) - 1)
            s = stats.compute(store)
            choices = [(label, value) for label, value in export_choices if value == ALL or value in s["tasks"]]
            said = stats.summary_markdown(s, store.overlap, store.overlap_fraction)
            return [gr.update(value="", visible=False), said, s["per_annotator"], s["disagreements"], s["notes"],
                    s["labels"], gr.update(choices=choices)]

        def on_inspect(comparison: str, request: gr.Request):
            if not is_admin(request):
                return gr.update(value=NOT_ADMIN, visible=True), gr.update()
            if not (comparison or "").isdigit():
                return gr.update(), gr.update()
            return gr.update(value="", visible=False), stats.inspect_html(store, int(comparison))

        def on_export(task: str, format_: str, request: gr.Request):
            from labeler.export import export_archive

            if not is_admin(request):
                return gr.update(value=NOT_ADMIN, visible=True), ""
            folder = Path(tempfile.mkdtemp(prefix="vrlhf-download-"))  # removed once downloaded (labeler.downloads)
            try:
                path, pairs = export_archive(store, folder, format_, None if task == ALL else task)
            except BaseException as e:
                shutil.rmtree(folder, ignore_errors=True)
                if not isinstance(e, LabelError):
                    raise
                return gr.update(value=f"Nothing was exported: {e}.", visible=True), ""  # and no stale link
            token = downloads.add(path, getattr(request, "username", None) if auth else None)
            size = path.stat().st_size / 1e6
            what = ", ".join(f"{t}: {n} pairs" for t, n in pairs.items())
            said = (f"Export ready ({what}; {size:.1f} MB). The download starts by itself; the link works once, and "
                    f"the file is deleted from the server once downloaded (or after {download_seconds / 60:g} min).")
            link = (f"<a href='{ROUTE.lstrip('/')}{token}' download='{html.escape(path.name)}'>"
                    f"Download {html.escape(path.name)} ({size:.1f} MB)</a>")
            return gr.update(value=said, visible=True), link

        # Page events off the queue: a click is one POST to run/predict (no queue round trip, no event stream).
        ui = dict(api_visibility="private", concurrency_limit=None, queue=False)
        comparison_inputs = [shown, comment, flag, name_box]
        demo.load(page_event(on_load, len(full), 1), None, full, **ui)

        def on_unload(request: gr.Request):
            lab.close(request)

        demo.unload(on_unload)  # the tab closed (its heartbeat stream ended): its reservations go back now
        for trigger in (start.click, name_box.submit):
            trigger(page_event(on_start, len(full), len(full) - 1), name_box, full, **ui)
        for btn, choice in zip(pair_btns, ("a", "b", "tie", "both_bad")):
            btn.click(page_event(on_click(choice), len(core), 1), comparison_inputs, core, **ui)
        for btn, p in zip(rank_btns, POSITIONS):
            btn.click(page_event(on_click(f"rank:{p}"), len(core), 1), comparison_inputs, core, **ui)
        all_bad.click(page_event(on_click("both_bad"), len(core), 1), comparison_inputs, core, **ui)
        skip.click(page_event(on_click("skip"), len(core), 1), comparison_inputs, core, **ui)
        undo.click(page_event(on_undo, len(core), 1), [shown, name_box], core, **ui)
        task_pick.input(page_event(on_task, len(full), 1), [task_pick, name_box], full, **ui)
        timer.tick(page_event(on_tick, len(core), 1), name_box, core, **ui)
        away.click(page_event(on_away, len(core), 1), name_box, core, **ui)
        back.click(page_event(on_back, len(core), 1), name_box, core, **ui)
        stats_tab.select(page_event(on_stats, len(admin_outputs), 0), None, admin_outputs, **ui)
        refresh.click(page_event(on_stats, len(admin_outputs), 0), None, admin_outputs, **ui)
        inspect.click(page_event(on_inspect, 2, 0), inspect_id, [admin_msg, inspected],
                      js="() => [window.vrInspect || '']", **ui).then(
            None, None, None, js="() => document.getElementById('vr-inspected').scrollIntoView({block: 'start'})")
        export_btn.click(page_event(on_export, 2, 0), [export_task, fmt], [admin_msg, download], **ui).then(
            None, None, None, js="() => { const a = document.querySelector('#vr-download a'); if (a) a.click(); }")

        # Off the queue: one plain POST (/gradio_api/run/<name>) per call, no SSE round trips.
        api = dict(concurrency_limit=None, queue=False)
        gr.api(guarded(lab.api_next), api_name="next", **api)
        gr.api(guarded(lab.api_vote), api_name="vote", **api)
        gr.api(guarded(lab.api_undo), api_name="undo", **api)
    demo.queue(default_concurrency_limit=None)
    demo.labeler, demo.downloads = lab, downloads  # for tests, embedding and serve()
    return demo


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


if __name__ == "__main__":
    sys.exit(main())
