"""Simulated annotators that label through the running app's HTTP API, exactly as a program or a person would.

Each judgment draws from (seed, comparison id) on the candidates in sampling order, so the labels do not depend
on which annotator got which comparison or in which order the app showed the two candidates. With marks on, each
vote also carries the oracle's marks (`oracle.mark`: the cells or words it finds wrong) on every candidate.
"""

from __future__ import annotations

import json
import threading
import time
from types import ModuleType

import numpy as np

from vrlhf.errors import LabelError
from vrlhf.tasks import get_oracle


def candidate_output(store, candidate: dict, task: ModuleType, row: dict):
    """The output a candidate of a view stands for, read back from what the store kept (the task's `from_stored`:
    its text, or its image, as the task's STORED says)."""
    from PIL import Image

    if task.STORED == "text":
        return task.from_stored(candidate["text"], row)
    return task.from_stored(Image.open(store.media_path(candidate["image"])).convert("RGB"), row)


def annotate(url: str, name: str, task: ModuleType, rows_by_id: dict, store, seed: int, counts: dict,
             personal: int | None = None, marks: bool = True) -> None:
    """One annotator: ask the app for the next comparison, judge it with its task's oracle, vote; until none left.
    `personal` (an index, with overlap > 1) gives this annotator draws of their own, so people can disagree; with
    `marks` each vote carries the oracle's marks on the candidates."""
    from gradio_client import Client

    # a vote waits behind the others' under load: gradio_client's own 20 s read timeout would end this annotator
    client = Client(url, verbose=False, httpx_kwargs={"timeout": 300})
    reply = client.predict(annotator=name, api_name="/next")
    while reply.get("view"):
        view = reply["view"]
        if view["task"] != task.NAME:  # label_all labels one task's comparisons: the store's open ones must be its
            raise ValueError(f"comparison {view['comparison_id']} is of task {view['task']}, not {task.NAME}")
        row = rows_by_id[view["item_id"]]
        choice, ranking = judgment(task, view, row, store, seed, personal)
        marked = marks_of(task, view, row, store, seed, personal) if marks else ""
        reply = client.predict(comparison_id=view["comparison_id"], token=view["token"], choice=choice, ranking=ranking,
                               annotator=name, marks=marked, api_name="/vote")
        counts[name] = counts.get(name, 0) + 1
    client.close()


def judgment(task: ModuleType, view: dict, row: dict, store, seed: int, personal: int | None = None
             ) -> tuple[str, str]:
    """The (choice, ranking) an annotator sends for a view: a pair is judged (a, b or tie), 3-4 candidates ranked
    best first (Plackett–Luce), always over the candidates in sampling order, whatever order they were shown in.
    The draw depends on (seed, comparison) only, or also on `personal` (then labels depend on who got what)."""
    shown = view["candidates"]
    ordered = sorted(shown, key=lambda c: c["candidate_id"])
    outputs = [candidate_output(store, c, task, row) for c in ordered]
    key = [seed, view["comparison_id"]] + ([personal] if personal is not None else [])
    oracle, rng = get_oracle(task), np.random.default_rng(key)
    if len(shown) == 2:
        verdict = oracle.judge(row, outputs[0], outputs[1], rng)
        return ("tie" if verdict == 0.5 else "ab"[shown.index(ordered[0 if verdict == 1.0 else 1])]), ""
    return "rank", "".join(ordered[i]["position"] for i in oracle.rank(row, outputs, rng))


def marks_of(task: ModuleType, view: dict, row: dict, store, seed: int, personal: int | None = None) -> str:
    """The marks an annotator sends with a vote: JSON {candidate id: the oracle's marks} over the candidates it finds
    something wrong in ("" when none), drawn from (seed, comparison[, personal]) apart from the judgment's draw."""
    key = [seed, view["comparison_id"], 1] + ([personal] if personal is not None else [])
    oracle, rng = get_oracle(task), np.random.default_rng(key)
    marked = {}
    for c in sorted(view["candidates"], key=lambda c: c["candidate_id"]):
        one = oracle.mark(row, candidate_output(store, c, task, row), rng)
        if one:
            marked[str(c["candidate_id"])] = one
    return json.dumps(marked, separators=(",", ":")) if marked else ""


def label_all(store, task: ModuleType, rows_by_id: dict, annotators: int, seed: int, host: str = "127.0.0.1",
              port: int = 0, say=print, marks: bool = True) -> dict:
    """Serve the app on `host`, let `annotators` simulated people label everything open of `task` (a task module; the
    store holds its comparisons), stop the app. With the
    store's overlap > 1 each annotator draws their own judgments (agreement is then measurable, not perfect); with
    `marks` their votes carry marks (vrlhf/marks.py)."""
    from labeler.app import free_port, serve

    app, url = serve(store, host, port or free_port(host), block=False, quiet=True)
    say(f"labeling app serving on {url}; {annotators} simulated annotators labelling {task.NAME} through its API")
    counts: dict[str, int] = {}
    personal = store.overlap > 1
    failures: list[BaseException] = []

    def one(i: int) -> None:
        try:
            annotate(url, f"sim-{task.NAME}-{i + 1}", task, rows_by_id, store, seed, counts, i if personal else None,
                     marks)
        except BaseException as error:  # noqa: BLE001 (reported below: a round must not go on short of its labels)
            failures.append(error)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(annotators)]
    start = time.time()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        app.close()
    if failures:
        raise LabelError(f"{len(failures)} of {annotators} simulated annotators of {task.NAME} stopped "
                         f"({type(failures[0]).__name__}: {failures[0]}); the round would go on short of its labels")
    seconds = time.time() - start
    votes = sum(counts.values())
    say(f"{votes} votes in {seconds:.0f}s ({votes / max(seconds, 1e-9):.1f}/s): {counts}")
    return {"votes": votes, "seconds": seconds, "annotators": counts}
