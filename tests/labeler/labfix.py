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
        store.add_comparison(rid, f"row-{i}", im, outs, im.convert("L").convert("RGB") if task != "captioning" else None)
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
