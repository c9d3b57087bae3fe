"""The Gradio labeling app (`vrlhf label`): people compare a policy's samples; an HTTP API for programs.

The server decides who votes: with `--auth` the login (`gr.Request.username`), without it a name typed once
per page (and then only loopback hosts are served). Each page keeps its comparison on screen plus the next one,
leased in the background, so a vote answers with the next comparison at once. Clicks carry the lease token of
what was on screen, so a fast double key press never votes on a comparison nobody saw.

API (gradio_client, or one plain POST to /gradio_api/run/<name> with {"data": [...]}; identity is the login
under --auth, else the `annotator` argument):
    next(annotator="")                                        -> {"view": ..., "progress": ...}
    vote(comparison_id, token, choice, ranking="", annotator="") -> {"vote": ..., "view": next, "progress": ...}
    undo(annotator="")                                        -> {"retracted": vote_id, "view": ...}
"""

from __future__ import annotations

import argparse
import base64
import functools
import html
import ipaddress
import logging
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from labeler.gate import MAX_TEXT, Gate
from labeler.store import MAX_K, POSITIONS, LabelError, Store, check_name

log = logging.getLogger("labeler")
FOREIGN_PAGE = "this page session belongs to another login: reload the page"

CSS = """
.vr-cmp {display: flex; flex-direction: column; gap: 14px; align-items: center}
.vr-row {display: flex; gap: 16px; justify-content: center; flex-wrap: wrap; width: 100%}
.vr-card {display: flex; flex-direction: column; align-items: center; gap: 6px; padding: 10px;
          border: 1px solid var(--border-color-primary); border-radius: 10px; flex: 1 1 0; max-width: 420px}
.vr-card img {width: 100%; max-width: 320px; height: auto}
.vr-input {flex: 0 0 auto; width: 240px}
.vr-pixel {image-rendering: pixelated}
.vr-pos {font-weight: 700; font-size: 1.2em}
.vr-text {font-size: 1.25em; line-height: 1.4; text-align: center; margin: 6px}
.vr-rank {font-size: 0.9em; opacity: 0.8}
"""

# Every shortcut is printed on its button; the key clicks the visible button that carries it.
KEYS_JS = """
<script>
(() => {
  const keys = {"1": ["vr-rank-A", "vr-a"], "2": ["vr-rank-B", "vr-b"], "3": ["vr-rank-C", "vr-tie"],
                "4": ["vr-rank-D"], "0": ["vr-bad", "vr-allbad"], "s": ["vr-skip"], "u": ["vr-undo"]};
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    if (e.target.closest && e.target.closest("input, textarea, select, [contenteditable]")) return;
    for (const id of keys[e.key.toLowerCase()] || []) {
      const el = document.getElementById(id);
      if (el && el.offsetParent !== null && !el.disabled) { e.preventDefault(); el.click(); return; }
    }
  });
})();
</script>
"""

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=4096)
def _data_uri(path: str) -> tuple[str, int]:
    """A PNG inlined as a data URI (no extra request, so nothing loads visibly), with its width."""
    data = Path(path).read_bytes()
    width = int.from_bytes(data[16:20], "big")  # PNG IHDR
    return "data:image/png;base64," + base64.b64encode(data).decode(), width


class Desk:
    """One open page: the comparison on screen, the next one (leased in the background), a partial ranking."""

    def __init__(self, name: str):
        self.name = name
        self.cur: dict | None = None
        self.nxt: dict | None = None
        self.rank: list[str] = []
        self.lock = threading.Lock()


class Labeler:
    """The app's server side: identity, desks per page, prefetching, and the handlers behind UI and API."""

    def __init__(self, store: Store, auth: bool = False):
        self.store, self.auth = store, auth
        self.desks: dict[str, Desk] = {}
        self.prefetcher = ThreadPoolExecutor(4, thread_name_prefix="prefetch")

    # ---- identity --------------------------------------------------------------------------------------

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

    # ---- API -------------------------------------------------------------------------------------------

    def api_next(self, annotator: str = "", request: gr.Request = None) -> dict:
        name = self.who(request, annotator)
        return {"view": self.store.next_comparison(name), "progress": self.store.progress(name)}

    def api_vote(self, comparison_id: int, token: str, choice: str, ranking: str = "", annotator: str = "",
                 request: gr.Request = None) -> dict:
        name = self.who(request, annotator)
        check_args(comparison_id, token, choice, ranking)
        vote = self.store.vote(token, choice, ranking or None, annotator=name, comparison_id=comparison_id,
                               lease_next=True)  # a LabelError reaches the client as one line (guarded)
        view = vote.pop("next")
        return {"vote": vote, "view": view, "progress": self.store.progress(name)}

    def api_undo(self, annotator: str = "", request: gr.Request = None) -> dict:
        name = self.who(request, annotator)
        done = self.store.retract(name)
        return {"retracted": done and done["retracted"], "view": done and done["view"]}

    # ---- UI --------------------------------------------------------------------------------------------

    def desk(self, request: gr.Request) -> Desk:
        desk = self.desks.get(request.session_hash)
        if desk is None:
            raise refuse("this page has expired: reload it")
        if not self.owns(desk, request):
            raise refuse(FOREIGN_PAGE)
        return desk

    def owns(self, desk: Desk, request: gr.Request) -> bool:
        """Under --auth a page session belongs to the login that opened it (the gate refuses others first)."""
        return not self.auth or desk.name == getattr(request, "username", None)

    def open(self, name: str, request: gr.Request) -> Desk:
        old = self.desks.get(request.session_hash)
        if old is not None and not self.owns(old, request):
            raise refuse(FOREIGN_PAGE)
        desk = Desk(name)
        self.desks[request.session_hash] = desk
        with desk.lock:
            desk.cur = self.store.next_comparison(name)
        self._prefetch(desk)
        return desk

    def close(self, request: gr.Request) -> None:
        desk = self.desks.get(request.session_hash)
        if desk is not None and self.owns(desk, request):
            del self.desks[request.session_hash]

    def _prefetch(self, desk: Desk) -> None:
        def run():
            with desk.lock:
                if desk.nxt is None and desk.cur is not None:
                    desk.nxt = self.store.next_comparison(desk.name, exclude=[desk.cur["comparison_id"]])
        self.prefetcher.submit(run)

    def _advance(self, desk: Desk) -> None:
        exclude = [desk.cur["comparison_id"]] if desk.cur else []
        desk.cur, desk.nxt, desk.rank = desk.nxt, None, []
        if desk.cur is None:
            desk.cur = self.store.next_comparison(desk.name, exclude=exclude)
        self._prefetch(desk)

    def click(self, desk: Desk, shown_token: str, choice: str) -> None:
        """A button on the page: `shown_token` is the lease that page displayed when the key was pressed."""
        with desk.lock:
            if desk.cur is None or desk.cur["token"] != shown_token:
                return  # a stale click (double press): the page already moved on
            k = desk.cur["k"]
            if choice.startswith("rank:"):
                pos = choice[5:]
                if k == 2 or pos in desk.rank or pos not in POSITIONS[:k]:
                    return
                desk.rank.append(pos)
                if len(desk.rank) < k - 1:
                    return
                rest = [p for p in POSITIONS[:k] if p not in desk.rank]
                choice, ranking = "rank", "".join(desk.rank + rest)
            else:
                ranking = None
            try:
                self.store.vote(desk.cur["token"], choice, ranking, annotator=desk.name)
            except LabelError as e:
                gr.Warning(f"{e}; moving on")
            self._advance(desk)

    def undo(self, desk: Desk, shown_token: str) -> None:
        with desk.lock:
            if desk.cur is not None and desk.cur["token"] != shown_token:
                return
            if desk.rank:
                desk.rank.pop()
                return
            done = self.store.retract(desk.name)
            if done is None:
                gr.Info("nothing to undo")
                return
            if done["view"] is None:
                gr.Info("undone; that comparison has gone to someone else meanwhile")
                return
            if desk.cur is not None:
                desk.nxt = desk.cur  # the one we were on comes back right after
            desk.cur, desk.rank = done["view"], []

    # ---- rendering -------------------------------------------------------------------------------------

    def image_tag(self, rel: str, alt: str) -> str:
        uri, width = _data_uri(str(self.store.media_path(rel)))
        pixel = " vr-pixel" if width < 160 else ""
        return f'<img class="{pixel.strip()}" src="{uri}" alt="{html.escape(alt)}">'

    def render_view(self, desk: Desk) -> str:
        v = desk.cur
        if v is None:
            return "<div class='vr-cmp'><h2>All done: nothing left to label. Thank you!</h2></div>"
        inp = "Input (grayscale)" if v["task"] == "colorization" else "Input"
        parts = [f"<div class='vr-cmp' data-token='{html.escape(v['token'])}' data-comparison='{v['comparison_id']}'>",
                 f"<div class='vr-input vr-card'><div>{inp}</div>{self.image_tag(v['input'], inp)}</div>",
                 "<div class='vr-row'>"]
        for c in v["candidates"]:
            body = (f"<p class='vr-text'>{html.escape(c['text'])}</p>" if c["text"] is not None
                    else self.image_tag(c["image"], c["position"]))
            parts.append(f"<div class='vr-card'><div class='vr-pos'>{c['position']}</div>{body}</div>")
        parts.append("</div>")
        if v["k"] > 2:
            ranked = " &gt; ".join(desk.rank) or "press the candidates from best to worst"
            parts.append(f"<div class='vr-rank'>Ranking: {ranked}</div>")
        parts.append("</div>")
        return "".join(parts)

    def render_progress(self, desk: Desk) -> str:
        p = self.store.progress(desk.name)
        return (f"**{html.escape(desk.name)}** · {p['count']} labelled · {p['remaining']} remaining · "
                f"{p['per_min']:.1f} labels/min")


def refuse(message: str) -> gr.Error:
    """A clear one-line error for the client; an expected refusal, so no server-side traceback."""
    return gr.Error(message, print_exception=False)


def guarded(handler):
    """`handler` as Gradio should call it: a refusal reaches the client as one line; any other failure too, and
    is logged as its type and code locations only (its message may carry a lease token, e.g. SQL parameters)."""

    @functools.wraps(handler)
    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except LabelError as e:
            raise refuse(str(e)) from None
        except Exception as e:  # noqa: BLE001  (a bug or a broken database: logged, answered, never leaked)
            frames = traceback.extract_tb(e.__traceback__)
            ours = [f for f in frames if Path(f.filename).parent.name == "labeler"][-4:]
            where = " -> ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in ours + frames[-1:])
            log.error("labeler: %s failed with %s at %s", handler.__name__, type(e).__name__, where)
            raise refuse(f"internal error ({type(e).__name__}); see the server log") from None

    return run


def check_args(comparison_id, token, choice, ranking) -> None:
    """Refuse malformed or oversized API arguments before touching the database."""
    if not isinstance(comparison_id, int) or isinstance(comparison_id, bool) or not 0 < comparison_id < 2**62:
        raise refuse("comparison_id must be a positive integer")
    for name, value in (("token", token), ("choice", choice), ("ranking", ranking)):
        if value is not None and not isinstance(value, str):
            raise refuse(f"{name} must be a string")
        if value is not None and len(value) > MAX_TEXT:
            raise refuse(f"{name} is too long")


def build_app(store: Store, auth: bool = False, title: str = "visual-rlhf labeler",
              cache_seconds: int = 600) -> gr.Blocks:
    """The labeling UI (Label and Stats tabs) plus the `next`, `vote` and `undo` API endpoints.

    Export zips are served from Gradio's cache and deleted `cache_seconds` after they were made (and at shutdown).
    """
    from labeler import stats

    lab = Labeler(store, auth)
    with gr.Blocks(title=title, delete_cache=(min(60, cache_seconds), cache_seconds)) as demo:
        shown = gr.Textbox(visible=False, elem_id="vr-token")  # lease token on screen, sent with each click
        with gr.Column(visible=not auth) as login_col:
            gr.Markdown("## Who is labelling?")
            name_box = gr.Textbox(label="Your name", placeholder="e.g. alice", max_length=100, elem_id="vr-name")
            start = gr.Button("Start", variant="primary", elem_id="vr-start")
        with gr.Tab("Label"):
            with gr.Column(visible=False) as label_col:
                progress = gr.Markdown(elem_id="vr-progress")
                view = gr.HTML(elem_id="vr-view")
                with gr.Row(visible=True) as pair_row:
                    pair_btns = [gr.Button("A better [1]", elem_id="vr-a", variant="primary"),
                                 gr.Button("B better [2]", elem_id="vr-b", variant="primary"),
                                 gr.Button("Tie [3]", elem_id="vr-tie"),
                                 gr.Button("Both bad [0]", elem_id="vr-bad")]
                with gr.Row(visible=False) as rank_row:
                    rank_btns = [gr.Button(f"{p} [{i + 1}]", elem_id=f"vr-rank-{p}", variant="primary")
                                 for i, p in enumerate(POSITIONS[:MAX_K])]
                    all_bad = gr.Button("All bad [0]", elem_id="vr-allbad")
                with gr.Row():
                    skip = gr.Button("Skip [S]", elem_id="vr-skip")
                    undo = gr.Button("Undo last [U]", elem_id="vr-undo")
        with gr.Tab("Stats"):
            refresh = gr.Button("Refresh", elem_id="vr-refresh")
            summary = gr.Markdown(elem_id="vr-summary")
            per_annotator = gr.Dataframe(label="Per annotator", interactive=False)
            labels = gr.Dataframe(label="Label distribution", interactive=False)
            with gr.Row():
                fmt = gr.Dropdown(["hf", "jsonl", "parquet"], value="hf", label="Export format")
                export_btn = gr.Button("Export preferences", elem_id="vr-export")
                download = gr.File(label="Download (zip)", interactive=False, elem_id="vr-download")

        outputs = [shown, view, progress, pair_row, rank_row, *rank_btns, login_col, label_col]

        def render(desk: Desk):
            with desk.lock:
                k = desk.cur["k"] if desk.cur else 2
                token = desk.cur["token"] if desk.cur else ""
                return (token, lab.render_view(desk), lab.render_progress(desk), gr.update(visible=k == 2),
                        gr.update(visible=k > 2),
                        *[gr.update(visible=i < k, interactive=p not in desk.rank) for i, p in enumerate(POSITIONS)],
                        gr.update(visible=False), gr.update(visible=True))

        def on_load(request: gr.Request):
            if not auth:
                return [gr.update()] * len(outputs)
            return render(lab.open(lab.who(request), request))

        def on_start(name: str, request: gr.Request):
            return render(lab.open(lab.who(request, name), request))

        def on_click(choice: str):
            def on_button(token: str, request: gr.Request):
                desk = lab.desk(request)
                lab.click(desk, token, choice)
                return render(desk)
            return on_button

        def on_undo(token: str, request: gr.Request):
            desk = lab.desk(request)
            lab.undo(desk, token)
            return render(desk)

        def on_refresh():
            s = stats.compute(store)
            return stats.summary_markdown(s), s["per_annotator"], s["labels"]

        def on_export(fmt_: str):
            from labeler.export import export

            # The zip goes straight into Gradio's cache (an unguessable folder): Gradio serves it in place instead
            # of copying it, and deletes it with its cache (delete_cache above). The export it zips is removed at once.
            served = Path(demo.GRADIO_CACHE) / f"vrlhf-{secrets.token_hex(16)}"
            with tempfile.TemporaryDirectory(prefix="vrlhf-export-") as build:
                export(store, Path(build) / "export", fmt_)
                served.mkdir(parents=True)
                return shutil.make_archive(str(served / f"preferences-{fmt_}"), "zip", Path(build) / "export")

        ui = dict(api_visibility="private", concurrency_limit=None)
        demo.load(guarded(on_load), None, outputs, **ui)

        def on_unload(request: gr.Request):
            lab.close(request)

        demo.unload(guarded(on_unload))
        start.click(guarded(on_start), name_box, outputs, **ui)
        name_box.submit(guarded(on_start), name_box, outputs, **ui)
        for btn, choice in zip(pair_btns, ("a", "b", "tie", "both_bad")):
            btn.click(guarded(on_click(choice)), shown, outputs, **ui)
        for btn, p in zip(rank_btns, POSITIONS):
            btn.click(guarded(on_click(f"rank:{p}")), shown, outputs, **ui)
        all_bad.click(guarded(on_click("both_bad")), shown, outputs, **ui)
        skip.click(guarded(on_click("skip")), shown, outputs, **ui)
        undo.click(guarded(on_undo), shown, outputs, **ui)
        refresh.click(guarded(on_refresh), None, [summary, per_annotator, labels], api_visibility="private")
        export_btn.click(guarded(on_export), fmt, download, api_visibility="private")

        # Off the queue: one plain POST (/gradio_api/run/<name>) per call, no SSE round trips.
        api = dict(concurrency_limit=None, queue=False)
        gr.api(guarded(lab.api_next), api_name="next", **api)
        gr.api(guarded(lab.api_vote), api_name="vote", **api)
        gr.api(guarded(lab.api_undo), api_name="undo", **api)
    demo.queue(default_concurrency_limit=None)
    demo.labeler = lab  # for tests and embedding
    return demo


def serve(store: Store, host: str = "127.0.0.1", port: int | None = 7860, auth_file: str | None = None,
          block: bool = True, quiet: bool = False, login_policy=None, cache_seconds: int = 600
          ) -> tuple[gr.Blocks, str]:
    """Launch the app; returns (blocks, url). Refuses non-loopback hosts without `auth_file`; `login_policy`
    (labeler.users.LoginPolicy) sets how failed logins are slowed and limited; export zips live `cache_seconds`."""
    from labeler.users import authenticator, load_users

    if auth_file is None and not is_loopback(host):
        raise LabelError(f"refusing to serve {host} without --auth: only loopback hosts may skip logins")
    if auth_file is not None:
        load_users(auth_file)  # fail now, not at the first login
    demo = build_app(store, auth=auth_file is not None, cache_seconds=cache_seconds)
    _, url, _ = demo.launch(
        server_name=host, server_port=port, auth=authenticator(auth_file, login_policy) if auth_file else None,
        auth_message="visual-rlhf labeler: log in with your annotator name", prevent_thread_lock=True,
        quiet=quiet, css=CSS, head=KEYS_JS, footer_links=["api"], max_file_size="1mb", ssr_mode=False,
        app_kwargs={"middleware": [Middleware(Gate)]})
    if block:
        demo.block_thread()
    return demo, url


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vrlhf label", description="Serve the Gradio preference-labeling app.")
    parser.add_argument("--db", required=True, help="database: a SQLite file path or a SQLAlchemy URL")
    parser.add_argument("--media", default=None, help="directory of rendered PNGs (default: beside the SQLite file)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind; non-loopback needs --auth")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (0: any free port)")
    parser.add_argument("--auth", default=None, help="users file from `vrlhf annotators add`: require logins")
    parser.add_argument("--overlap", type=int, default=1, help="distinct annotators per overlapped comparison")
    parser.add_argument("--overlap-fraction", type=float, default=1.0,
                        help="fraction of comparisons that get --overlap annotators (the rest get one)")
    parser.add_argument("--lease-seconds", type=float, default=600.0,
                        help="how long a shown comparison stays reserved before it returns to the queue")
    args = parser.parse_args(argv)
    store = Store(args.db, media=args.media, overlap=args.overlap, overlap_fraction=args.overlap_fraction,
                  lease_seconds=args.lease_seconds)
    serve(store, args.host, args.port or free_port(args.host), args.auth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
