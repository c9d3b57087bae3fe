"""Helpers for the labeler tests: stores filled with generated PNGs and captions, free ports, server processes."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from labeler.store import Store  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WORDS = "a red green blue small large circle square triangle on the left right top bottom of image".split()


def image(seed: int, size: int = 16) -> Image.Image:
    rng = random.Random(seed)
    im = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(6):
        im.putpixel((rng.randrange(size), rng.randrange(size)), tuple(rng.randrange(256) for _ in range(3)))
    return im


def caption(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))


def fill(store: Store, n: int, k: int = 2, task: str = "captioning", seed: int = 0, policy: str = "policy-a") -> int:
    """Add a round of `n` comparisons with real PNG inputs and text (or image) candidates; returns the round id."""
    rng = random.Random(seed)
    rid = store.add_round(task, f"/runs/{policy}", k, seed=seed)
    for i in range(n):
        im = image(seed * 100_000 + i)
        outs = ([caption(rng) for _ in range(k)] if task == "captioning"
                else [image(seed * 100_000 + i * 10 + j + 7) for j in range(k)])
        shown = im.convert("L").convert("RGB") if task != "captioning" else None
        store.add_comparison(rid, f"row-{i}", im, outs, shown)
    return rid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: str, port: int, *extra: str, log: Path | None = None) -> subprocess.Popen:
    """`python -m labeler.app` in its own process (so the tests can SIGKILL it); waits until it answers."""
    import httpx

    env = os.environ | {"PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    log = Path(log or Path(db).with_suffix(f".{port}.log"))
    with open(log, "ab") as out:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen([sys.executable, "-m", "labeler.app", "--db", db, "--port", str(port), *extra],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code in (200, 401, 307, 302):
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start in 90 s: {log.read_text()[-2000:]}")


# ---- raw Gradio HTTP, as a browser (or a forger) speaks it ---------------------------------------------------------

def http_login(url: str, name: str, password: str | None = None, **kw):
    """An httpx client holding `name`'s login cookie (POST /login, as Gradio's login page does)."""
    import httpx

    client = httpx.Client(base_url=url, timeout=30, **kw)
    r = client.post("login", data={"username": name, "password": password or f"{name}-pw"})
    assert r.status_code == 200, (name, r.status_code, r.text)
    return client


def ui_fns(client) -> dict[str, int]:
    """fn_index of each page event, by the elem_id of the component that triggers it ('load' for the page load)."""
    config = client.get("config").json()
    elem = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    fns = {}
    for i, dep in enumerate(config["dependencies"]):
        for target, trigger in dep["targets"]:
            fns.setdefault("load" if trigger == "load" else elem.get(target) or f"{target}:{trigger}", dep.get("id", i))
    return fns


def ui_event(client, fn_index: int, data: list, session_hash: str) -> dict:
    """Run one page event as the page sends it: one POST to run/predict for an event off the queue (the labeler's
    are), else join Gradio's queue and read the session's stream until the event completes.

    Returns the `process_completed` message ({"success", "output": {"data": [...]}}), or {"refused": status, "text":
    ...} when the server refuses the call, the join or the stream."""
    import json

    body = {"data": data, "fn_index": fn_index, "session_hash": session_hash, "event_data": None, "trigger_id": None}
    if not _queued(client, fn_index):
        r = client.post("gradio_api/run/predict", json=body)
        if r.status_code != 200:
            return {"refused": r.status_code, "text": r.text}
        return {"msg": "process_completed", "success": True, "output": r.json()}
    r = client.post("gradio_api/queue/join", json=body)
    if r.status_code != 200:
        return {"refused": r.status_code, "text": r.text}
    event_id = r.json()["event_id"]
    with client.stream("GET", "gradio_api/queue/data", params={"session_hash": session_hash}) as s:
        if s.status_code != 200:
            s.read()
            return {"refused": s.status_code, "text": s.text}
        for line in s.iter_lines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed" and msg.get("event_id") == event_id:
                    return msg
    raise RuntimeError("the event stream ended before the event completed")


def _queued(client, fn_index: int) -> bool:
    """Whether page event `fn_index` runs on Gradio's queue (from the app's config; unknown ids: yes)."""
    if not hasattr(client, "_vrlhf_queued"):
        deps = client.get("config").json()["dependencies"]
        client._vrlhf_queued = {dep.get("id", i): dep.get("queue", True) is not False for i, dep in enumerate(deps)}
    return client._vrlhf_queued.get(fn_index, True)


def start(browser, url: str, name: str, viewport=None):
    """A new browser page that has entered `name` and pressed Start (the labeler's first screen)."""
    page = browser.new_context(viewport=viewport or {"width": 1280, "height": 900}).new_page()
    page.goto(url)
    page.fill("#vr-name textarea, #vr-name input", name)
    page.click("#vr-start")
    page.wait_for_selector("#vr-view .vr-cmp, #vr-view .vr-done")
    return page


def refusal(capsys, argv) -> str:
    """`vrlhf ARGV`'s refusal: exit code 2 and exactly one line on stderr (no traceback)."""
    from vrlhf.cli import main as vrlhf

    capsys.readouterr()
    assert vrlhf(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    return err.strip()


# The page's comparison on screen, and a wait-for condition that it changed (browser tests and bench_marks_browser).
NEXT = ("b => { const e = document.querySelector('#vr-view .vr-cmp');"
        " return !e || (e.dataset.comparison + ':' + e.dataset.token) !== b; }")


def current(page) -> str:
    e = page.query_selector("#vr-view .vr-cmp")
    return e.get_attribute("data-comparison") + ":" + e.get_attribute("data-token") if e else "done"
