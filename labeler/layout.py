"""The labeling page's components, laid out top to bottom: the name box, the Label tab (task picker, guidelines, the
comparison, comment and flag, the vote bar) and the admin's Stats & export tab. No handlers: labeler/app.py wires
them; labeler/page.py renders what they show.
"""

from __future__ import annotations

import gradio as gr

from labeler import stats
from labeler.leases import MAX_COMMENT, MAX_MARKS
from labeler.store import MAX_K, POSITIONS
from vrlhf.exports import FORMATS

ALL = "all"  # the task pickers' value for every task (labelling: interleaved; export: one folder per task)


class Ui:
    """Every component of the page (built inside a `gr.Blocks`), and the output lists its events write."""

    def __init__(self, tasks: list[str], auth: bool, poll_seconds: float):
        self.task_choices = [("All tasks, interleaved", ALL)] + [(t, t) for t in tasks]
        self.export_choices = [("All tasks (one folder each)", ALL)] + [(t, t) for t in tasks]
        self.shown = gr.Textbox(visible=False, elem_id="vr-token")  # lease token on screen, sent with each click
        # the marks made on the comparison on screen, filled in by the page's script as a vote is sent (app.VOTE_JS)
        self.marks = gr.Textbox(visible=False, max_length=MAX_MARKS, elem_id="vr-marks")
        self.timer = gr.Timer(poll_seconds, active=False)  # ticks only while nothing is left to label
        with gr.Column(visible=not auth) as self.login_col:
            gr.Markdown("## Who is labelling?")
            self.name_box = gr.Textbox(label="Your name", placeholder="e.g. alice", max_length=100, elem_id="vr-name")
            self.name_msg = gr.Markdown(elem_id="vr-name-msg")
            self.start = gr.Button("Start", variant="primary", elem_id="vr-start")
        with gr.Tabs(visible=auth) as self.tabs:  # shown once someone is labelling (no empty tabs under the name box)
            with gr.Tab("Label", id="label"):
                self.label_tab(auth)
            with gr.Tab("Stats & export", id="stats", visible=not auth, elem_id="vr-stats-tab") as self.stats_tab:
                self.admin_tab()

        # Outputs of every comparison event (`core`), and of the events that open a page (`full`). The lease token
        # comes first, the message line second (app.page_event writes its sentences there), the name line last.
        self.core = [self.shown, self.message, self.view, self.progress, self.pair_row, self.rank_row,
                     *self.rank_btns, self.skip, self.comment, self.flag, self.timer, self.guide_acc, self.guide_text]
        self.full = self.core + [self.login_col, self.label_col, self.stats_tab, self.task_pick, self.tabs,
                                 self.name_msg]
        self.admin_outputs = [self.admin_msg, self.summary, self.per_annotator, self.disagreements, self.notes,
                              self.labels, self.export_task]

    def label_tab(self, auth: bool) -> None:
        with gr.Column(visible=False, elem_id="vr-label") as self.label_col:
            with gr.Row(equal_height=True, elem_id="vr-top"):
                self.task_pick = gr.Radio(self.task_choices, value=ALL, label="Task", elem_id="vr-task", scale=3)
                self.progress = gr.Markdown(elem_id="vr-progress")
                if auth:  # a shared computer: end this login here (the page's reservations go back)
                    gr.Button("Log out", elem_id="vr-logout", size="sm", scale=0, min_width=90).click(
                        None, js="() => { location.href = 'logout?all_session=false'; }")
            self.message = gr.Markdown(elem_id="vr-message")
            with gr.Accordion("Guidelines [G]", open=False, elem_id="vr-guidelines") as self.guide_acc:
                self.guide_text = gr.Markdown(elem_id="vr-guidelines-text")
            self.view = gr.HTML(elem_id="vr-view")
            with gr.Row(equal_height=True):
                self.comment = gr.Textbox(show_label=False, max_length=MAX_COMMENT, lines=1, scale=4,
                                          placeholder="Comment on this comparison (optional; saved with your vote; "
                                                      "Enter or Esc: back to the keys)",
                                          elem_id="vr-comment")
                self.flag = gr.Checkbox(label="Flag for the project lead", elem_id="vr-flag", scale=1)
            # Vote buttons, Skip and Undo: a bar fixed to the bottom of the window (page.CSS), always in view.
            with gr.Column(elem_id="vr-actions"):
                with gr.Row(visible=True, elem_classes="vr-keys") as self.pair_row:
                    self.pair_btns = [gr.Button("A better [1]", elem_id="vr-a", variant="primary"),
                                      gr.Button("B better [2]", elem_id="vr-b", variant="primary"),
                                      gr.Button("Tie [3]", elem_id="vr-tie"),
                                      gr.Button("Both bad [0]", elem_id="vr-bad")]
                with gr.Row(visible=False, elem_classes="vr-keys") as self.rank_row:
                    self.rank_btns = [gr.Button(f"{p} [{i + 1}]", elem_id=f"vr-rank-{p}", variant="primary")
                                      for i, p in enumerate(POSITIONS[:MAX_K])]
                    self.all_bad = gr.Button("All bad [0]", elem_id="vr-allbad")
                with gr.Row(elem_classes="vr-keys"):
                    self.skip = gr.Button("Skip [S]", elem_id="vr-skip", size="sm")
                    self.undo = gr.Button("Undo last [U]", elem_id="vr-undo", size="sm")
            # Pressed by the page's script (page.HEAD_JS): a page left alone pauses; the next key goes on.
            self.away = gr.Button("away", elem_id="vr-away", elem_classes="vr-hidden")
            self.back = gr.Button("back", elem_id="vr-back", elem_classes="vr-hidden")

    def admin_tab(self) -> None:
        self.admin_msg = gr.Markdown(elem_id="vr-admin-msg")
        with gr.Row(equal_height=True):
            self.export_task = gr.Dropdown(self.export_choices, value=ALL, label="Export", elem_id="vr-export-task")
            self.fmt = gr.Dropdown(list(FORMATS), value="hf", label="Format", elem_id="vr-format")
            self.export_btn = gr.Button("Export preferences", elem_id="vr-export", variant="primary")
        self.download = gr.HTML(elem_id="vr-download")
        self.refresh = gr.Button("Refresh statistics", elem_id="vr-refresh", size="sm")
        self.summary = gr.Markdown(elem_id="vr-summary")
        self.per_annotator = gr.Dataframe(stats.per_annotator([]), interactive=False, elem_id="vr-per-annotator",
                                          label="Per annotator")
        gr.Markdown(stats.PER_ANNOTATOR_EXPLAINED)
        gr.Markdown("### Disagreements\nComparisons whose annotators judged differently, newest first.")
        self.disagreements = gr.HTML(elem_id="vr-disagreements")
        gr.Markdown("### Comments and flags")
        self.notes = gr.HTML(elem_id="vr-notes")
        self.inspected = gr.HTML(elem_id="vr-inspected")  # a clicked row's comparison, as its annotators saw it
        self.inspect_id = gr.Textbox(visible=False)
        self.inspect = gr.Button("inspect", elem_id="vr-inspect", elem_classes="vr-hidden")
        self.labels = gr.Dataframe(stats.label_mix([]), interactive=False, label="Label distribution")
