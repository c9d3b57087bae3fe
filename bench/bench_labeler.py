"""Vote -> next-comparison latency of `vrlhf label` under 20 concurrent annotators on 127.0.0.1 (p50/p95).

    python bench/bench_labeler.py [--annotators 20] [--votes 30] [--db URL]

Starts the app in its own process on a fresh SQLite store (or --db), then each annotator thread votes in a loop;
one vote call returns the next comparison, so its round trip is the vote -> next latency. Two clients are timed:
a plain HTTP POST to `/gradio_api/run/vote` (as curl or any language would) and `gradio_client` (which adds
its own polling, ~50 ms sleeps, and threads per call). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fill(db: str, n: int) -> None:
    from PIL import Image

    from labeler.store import Store

    store, rng = Store(db), random.Random(0)
    rid = store.add_round("captioning", "bench-policy", 2)
    words = "a red green blue small large circle square triangle left right top bottom".split()
    for i in range(n):
        im = Image.new("RGB", (32, 32), tuple(rng.randrange(256) for _ in range(3)))
        store.add_comparison(rid, f"row-{i}", im, [" ".join(rng.sample(words, 5)) for _ in range(2)])


def start(db: str, port: int) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "labeler.app", "--db", db, "--port", str(port)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the app did not start")


class Http:
    """One plain POST per call: `/gradio_api/run/<name>` with {"data": [...]} (the endpoints are off the queue)."""

    def __init__(self, url: str):
        self.url, self.http = url.rstrip("/"), httpx.Client(timeout=30)

    def call(self, name: str, *args):
        r = self.http.post(f"{self.url}/gradio_api/run/{name}", json={"data": list(args)})
        if r.status_code != 200:
            raise RuntimeError(r.text[:200])
        return r.json()["data"][0]


class GradioClient:
    def __init__(self, url: str):
        from gradio_client import Client

        self.c = Client(url, verbose=False, analytics_enabled=False, download_files=False)

    def call(self, name: str, *args):
        return self.c.predict(*args, api_name=f"/{name}")


def run(kind, url: str, annotators: int, votes: int, prefix: str, think: float = 0.0) -> list[float]:
    latencies: list[float] = []
    lock, errors = threading.Lock(), []
    barrier = threading.Barrier(annotators)

    def work(i: int):
        try:
            client, name, rng = kind(url), f"{prefix}{i}", random.Random(i)
            view = client.call("next", name)["view"]
            barrier.wait()
            for _ in range(votes):
                if view is None:
                    return
                t = time.perf_counter()
                r = client.call("vote", view["comparison_id"], view["token"], rng.choice("ab"), "", name)
                dt = time.perf_counter() - t
                with lock:
                    latencies.append(dt)
                view = r["view"]
                time.sleep(think * rng.uniform(0.5, 1.5))  # looking at the next comparison
        except Exception as e:  # report, don't hide
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(annotators)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} annotators failed: {errors[0]}")
    return latencies


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=20, help="concurrent annotators (threads)")
    parser.add_argument("--votes", type=int, default=30, help="votes per annotator and client kind")
    parser.add_argument("--db", default=None, help="store URL (default: a fresh SQLite file)")
    parser.add_argument("--port", type=int, default=7871, help="port for the app")
    parser.add_argument("--think", type=float, nargs="+", default=[1.0, 0.0],
                        help="mean seconds an annotator looks before voting (0: back-to-back, saturation)")
    parser.add_argument("--clients", nargs="+", default=["http", "gradio_client"], choices=["http", "gradio_client"],
                        help="which clients to time")
    args = parser.parse_args(argv)
    db = args.db or str(Path(tempfile.mkdtemp(prefix="bench-labeler-")) / "labels.sqlite")
    fill(db, len(args.think) * len(args.clients) * args.annotators * (args.votes + 2) + 50)
    proc = start(db, args.port)
    url = f"http://127.0.0.1:{args.port}/"
    try:
        rows = []
        kinds = {"http": ("HTTP POST", Http), "gradio_client": ("gradio_client", GradioClient)}
        for think in args.think:
            for key in args.clients:
                label, kind = kinds[key]
                prefix = f"{key}-{think}-"
                run(kind, url, 2, 3, f"warm-{prefix}")  # warm up imports and the connection pool
                t0 = time.perf_counter()
                lat = run(kind, url, args.annotators, args.votes, prefix, think)
                wall = time.perf_counter() - t0
                rows.append((label, think, len(lat), pct(lat, 0.5), pct(lat, 0.95), statistics.mean(lat) * 1000,
                             len(lat) / wall))
    finally:
        proc.kill()
        proc.wait()
    print(f"vote -> next comparison, {args.annotators} concurrent annotators, 127.0.0.1, "
          f"{'SQLite' if db.endswith('.sqlite') else db.split(':')[0]}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| client | think s | votes | p50 ms | p95 ms | mean ms | votes/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, think, n, p50, p95, mean, rate in rows:
        print(f"| {label} | {think:g} | {n} | {p50:.0f} | {p95:.0f} | {mean:.0f} | {rate:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
