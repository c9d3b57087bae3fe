"""Simulated annotators that label through the running app's HTTP API, exactly as a program or a person would.

Each judgment draws from (seed, comparison id) on the candidates in sampling order, so the labels do not depend
on which annotator got which comparison or in which order the app showed the two candidates.
"""

from __future__ import annotations

import threading
import time

import numpy as np


def candidate_output(store, candidate: dict):
    """The output a candidate of a view stands for: its text, or its rendered image."""
    from PIL import Image

    if candidate["text"] is not None:
        return candidate["text"]
    return Image.open(store.media_path(candidate["image"])).convert("RGB")


def annotate(url: str, name: str, rows_by_id: dict, store, seed: int, counts: dict) -> None:
    """One annotator: ask the app for the next comparison, judge it with its task's oracle, vote; until none left."""
    from gradio_client import Client

    from vrlhf.tasks import get_oracle

    client = Client(url, verbose=False)
    reply = client.predict(annotator=name, api_name="/next")
    while reply.get("view"):
        view = reply["view"]
        row = rows_by_id[view["item_id"]]
        shown = view["candidates"][:2]
        first, second = sorted(shown, key=lambda c: c["candidate_id"])  # judged in sampling order, not as shown
        verdict = get_oracle(view["task"]).judge(row, candidate_output(store, first), candidate_output(store, second),
                                                 np.random.default_rng([seed, view["comparison_id"]]))
        choice = "tie" if verdict == 0.5 else "ab"[shown.index(first if verdict == 1.0 else second)]
        reply = client.predict(comparison_id=view["comparison_id"], token=view["token"], choice=choice, ranking="",
                               annotator=name, api_name="/vote")
        counts[name] = counts.get(name, 0) + 1
    client.close()


def label_all(store, task: str, rows_by_id: dict, annotators: int, seed: int, host: str = "127.0.0.1",
              port: int = 0, say=print) -> dict:
    """Serve the app on `host`, let `annotators` simulated people label everything open, stop the app."""
    from labeler.app import free_port, serve

    app, url = serve(store, host, port or free_port(host), block=False, quiet=True)
    say(f"labeling app serving on {url}; {annotators} simulated annotators labelling {task} through its API")
    counts: dict[str, int] = {}
    threads = [threading.Thread(target=annotate, args=(url, f"sim-{task}-{i + 1}", rows_by_id, store, seed, counts))
               for i in range(annotators)]
    start = time.time()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        app.close()
    seconds = time.time() - start
    votes = sum(counts.values())
    say(f"{votes} votes in {seconds:.0f}s ({votes / max(seconds, 1e-9):.1f}/s): {counts}")
    return {"votes": votes, "seconds": seconds, "annotators": counts}
