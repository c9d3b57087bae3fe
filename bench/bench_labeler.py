"""Vote -> next-comparison latency of `vrlhf label` with 20 concurrent annotators: SQLite, PostgreSQL with one app
server and PostgreSQL with two (p50/p95, 1 s think time and back-to-back), with the machine's load while measuring.

    python bench/bench_labeler.py                       # all three setups; writes bench/results/labeler.{md,json}
    python bench/bench_labeler.py --setups sqlite --think 1 --votes 10     # a quick look

Each app server runs in its own process (`python -m labeler.app`, as `vrlhf label`); each annotator is a thread
voting in a loop. Two clients: `http`, one plain POST to /gradio_api/run/vote that answers with the next comparison
(what programs and simulated annotators use), and `page`, the page's own click as the browser sends it (one POST to
/gradio_api/run/predict: the page's events are off Gradio's queue), whose answer carries the next comparison
rendered, the progress line and the buttons' state; `http-marks` and `page-marks` send every vote with marks (as
the page does after clicks on a caption's words). With two servers the annotators are split between them (as a
sticky proxy would). PostgreSQL: a throw-away server started here (initdb + pg_ctl; /usr/lib/postgresql/15/bin,
fsync on), or --pg URL.

The load is measured, not assumed: the machine's load average and how busy its CPUs were during each run
(/proc/stat), and the CPU the app servers spent per vote (/proc/<pid>/stat). Other jobs share the machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import re
import shutil
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
PG_BIN = Path("/usr/lib/postgresql/15/bin")
RESULTS = ROOT / "bench" / "results"


# ---- setup ------------------------------------------------------------------------------------------------------

def fill(db: str, media: str, n: int) -> None:
    from PIL import Image

    from labeler.store import Store

    store, rng = Store(db, media=media), random.Random(0)
    rid = store.add_round("captioning", "bench-policy", 2)
    words = "a red green blue small large circle square triangle left right top bottom".split()
    for i in range(n):
        im = Image.new("RGB", (32, 32), tuple(rng.randrange(256) for _ in range(3)))
        store.add_comparison(rid, f"row-{i}", im, [" ".join(rng.sample(words, 5)) for _ in range(2)])
    store.close()


def start_server(db: str, media: str, port: int) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "labeler.app", "--db", db, "--media", media, "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the app did not start")


class Postgres:
    """A throw-away PostgreSQL 15 on loopback (as `postgres` when run as root), one fresh database per setup."""

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.base, "postgres")
        self.run(PG_BIN / "initdb", "-D", self.base / "data", "-U", "postgres", "-A", "trust", "--no-sync")
        # fsync on: a vote acknowledged is a vote on disk, as with SQLite's synchronous=FULL
        self.run(PG_BIN / "pg_ctl", "-D", self.base / "data", "-w", "-l", self.base / "log", "-o",
                 f"-h 127.0.0.1 -p {self.port} -k {self.base} -c max_connections=300", "start")
        self.n = 0

    def run(self, *cmd):
        subprocess.run(self.as_user + [str(c) for c in cmd], check=True, capture_output=True, cwd=self.base)

    def database(self) -> str:
        import sqlalchemy as sa

        self.n += 1
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}"
        admin = sa.create_engine(f"{url}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.exec_driver_sql(f"CREATE DATABASE bench{self.n}")
        admin.dispose()
        return f"{url}/bench{self.n}"

    def stop(self):
        self.run(PG_BIN / "pg_ctl", "-D", self.base / "data", "-m", "fast", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- clients ----------------------------------------------------------------------------------------------------

def some_marks(candidates: dict[str, int]) -> str:
    """The marks a vote "with marks" sends: two words of candidate B's caption (the bench's captions have 5)."""
    return json.dumps({str(candidates["B"]): {"words": [0, 3]}})


class Http:
    """One plain POST per call: `/gradio_api/run/<name>` with {"data": [...]} (the endpoints are off the queue);
    `marks`: every vote carries marks (some_marks)."""

    def __init__(self, url: str, name: str, marks: bool = False):
        self.http, self.name = httpx.Client(base_url=url + "gradio_api/run/", timeout=60), name
        self.marks = marks

    def first(self) -> dict | None:
        return self._call("next", self.name)["view"]

    def vote(self, view: dict, choice: str) -> dict | None:
        marks = some_marks({c["position"]: c["candidate_id"] for c in view["candidates"]}) if self.marks else ""
        return self._call("vote", view["comparison_id"], view["token"], choice, "", self.name, marks)["view"]

    def _call(self, endpoint: str, *args):
        r = self.http.post(endpoint, json={"data": list(args)})
        if r.status_code != 200:
            raise RuntimeError(r.text[:200])
        return r.json()["data"][0]


class Page:
    """The page's own events, as the browser sends them: one POST to /gradio_api/run/predict with the event's
    fn_index and the page's session (the labeler's page events are off Gradio's queue); `marks`: every vote carries
    marks, as the page's script sends those clicked on the comparison (some_marks)."""

    def __init__(self, url: str, name: str, marks: bool = False):
        self.http, self.name, self.marks = httpx.Client(base_url=url, timeout=60), name, marks
        self.session = f"bench-{name}-{random.randrange(1 << 30)}"
        config = self.http.get("config").json()
        elem = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
        self.fns = {}
        for i, dep in enumerate(config["dependencies"]):
            for target, _ in dep["targets"]:
                self.fns.setdefault(elem.get(target), dep.get("id", i))

    def first(self) -> dict | None:
        return self._view(self._event("vr-start", [self.name]))

    def vote(self, view: dict, choice: str) -> dict | None:
        button = {"a": "vr-a", "b": "vr-b"}[choice]
        marks = some_marks(view["candidates"]) if self.marks else ""
        return self._view(self._event(button, [view["token"], "", False, self.name, marks]))

    @staticmethod
    def _view(data: list) -> dict | None:
        """The lease token now on screen (the first output) and the candidates' ids read from the rendered view."""
        if not data[0]:
            return None
        view = data[2]["value"] if isinstance(data[2], dict) else data[2]
        return {"token": data[0], "candidates": dict(re.findall(r"data-position='(\w)' data-candidate='(\d+)'", view))}

    def _event(self, elem: str, data: list) -> list:
        r = self.http.post("gradio_api/run/predict", json={"data": data, "fn_index": self.fns[elem], "event_data": None,
                                                          "session_hash": self.session, "trigger_id": None})
        if r.status_code != 200:
            raise RuntimeError(r.text[:200])
        return r.json()["data"]


CLIENTS = {"http": ("HTTP API", Http), "page": ("page click", Page),
           "http-marks": ("HTTP API, vote with marks", functools.partial(Http, marks=True)),
           "page-marks": ("page click, vote with marks", functools.partial(Page, marks=True))}


def run(kind, urls: list[str], annotators: int, votes: int, prefix: str, think: float) -> list[float]:
    latencies: list[float] = []
    lock, errors = threading.Lock(), []
    barrier = threading.Barrier(annotators)

    def work(i: int):
        try:
            rng = random.Random(i)
            client = kind(urls[i % len(urls)], f"{prefix}{i}")
            view = client.first()
            barrier.wait()
            for _ in range(votes):
                if view is None:
                    raise RuntimeError("ran out of comparisons")
                time.sleep(think * rng.uniform(0.5, 1.5))  # looking at the comparison
                t = time.perf_counter()
                view = client.vote(view, rng.choice("ab"))
                with lock:
                    latencies.append(time.perf_counter() - t)
        except Exception as e:  # report, don't hide
            errors.append(repr(e))
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(annotators)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} annotators failed: {errors[0]}")
    return latencies


def stored_with_marks(db: str, media: str, prefix: str) -> int:
    """Votes of the annotators named `prefix`... that the database keeps with marks (a check that they arrived)."""
    from labeler.store import Store

    store = Store(db, media=media)
    try:
        return sum(v["marks"] is not None for v in store.votes() if v["annotator"].startswith(prefix))
    finally:
        store.close()


# ---- load -------------------------------------------------------------------------------------------------------

def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def process_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes have used."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (float(stat[11]) + float(stat[12])) / tick
    return total


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[int(q * 100) - 1] * 1000


# ---- main -------------------------------------------------------------------------------------------------------

def markdown(rows: list[dict], machine: str, annotators: int, votes: int) -> str:
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL, 1 server", "postgresql-2": "PostgreSQL, 2 servers"}
    lines = [f"`python bench/bench_labeler.py`: vote -> next comparison, {annotators} concurrent annotators x {votes} "
             f"votes per run, 127.0.0.1; {machine}.", "",
             "| setup | client | think s | votes | p50 ms | p95 ms | mean ms | votes/s | server CPU ms/vote | "
             "load avg | CPUs busy |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {names[r['setup']]} | {r['client']} | {r['think_s']:g} | {r['votes']} | {r['p50_ms']} | "
                     f"{r['p95_ms']} | {r['mean_ms']} | {r['votes_per_s']} | {r['server_cpu_ms_per_vote']} | "
                     f"{r['load_avg']} | {r['cpu_busy']:.0%} |")
    lines += ["", "*HTTP API*: one POST to /gradio_api/run/vote, answered with the next comparison. *page click*: the "
              "page's own button event (one POST to /gradio_api/run/predict), answered with the next comparison "
              "rendered, the progress line and the buttons. *vote with marks*: every vote carries marks (two words of "
              "a caption), checked against the comparison and stored with it (the run fails unless every one is). "
              "*think s*: mean seconds an annotator looks before voting "
              "(uniform 0.5x-1.5x; 0 = back-to-back, saturation). *server CPU ms/vote*: CPU time of the app server "
              "processes per vote. *load avg*: the 1-minute load average at the start and end of the run, averaged. "
              "*CPUs busy*: the share of the machine's CPUs busy during the run, every process counted (the app "
              "servers, PostgreSQL, the 20 client threads of this script and other people's jobs)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", nargs="+", default=["sqlite", "postgresql", "postgresql-2"],
                        choices=["sqlite", "postgresql", "postgresql-2"], help="database and number of app servers")
    parser.add_argument("--annotators", type=int, default=20, help="concurrent annotators (threads)")
    parser.add_argument("--votes", type=int, default=25, help="votes per annotator and run")
    parser.add_argument("--think", type=float, nargs="+", default=[1.0, 0.0],
                        help="mean seconds an annotator looks before voting (0: back-to-back, saturation)")
    parser.add_argument("--clients", nargs="+", default=["http", "page"], choices=list(CLIENTS),
                        help="http: the API's vote call; page: the page's click (one POST to run/predict); "
                             "-marks: every vote carries marks on two words of a caption")
    parser.add_argument("--pg", default=None, help="PostgreSQL server URL without a database name (default: start one)")
    parser.add_argument("--out", default=str(RESULTS / "labeler"), help="results file stem (.md and .json); '' = none")
    args = parser.parse_args(argv)

    pg = None
    rows = []
    runs = len(args.think) * len(args.clients)
    try:
        for setup in args.setups:
            tmp = Path(tempfile.mkdtemp(prefix="bench-labeler-"))
            if setup == "sqlite":
                db = str(tmp / "labels.sqlite")
            elif args.pg:
                import sqlalchemy as sa

                name = f"bench{int(time.time())}{setup.replace('-', '')}"
                with sa.create_engine(f"{args.pg}/postgres", isolation_level="AUTOCOMMIT").connect() as c:
                    c.exec_driver_sql(f"CREATE DATABASE {name}")
                db = f"{args.pg}/{name}"
            else:
                pg = pg or Postgres()
                db = pg.database()
            media = str(tmp / "media")
            fill(db, media, runs * (args.annotators * (args.votes + 3) + 2 * 3 * 3) + 50)
            ports = [free_port() for _ in range(2 if setup.endswith("-2") else 1)]
            servers = [start_server(db, media, port) for port in ports]
            urls = [f"http://127.0.0.1:{port}/" for port in ports]
            try:
                for think in args.think:
                    for key in args.clients:
                        label, kind = CLIENTS[key]
                        prefix = f"{key}-{think}-"
                        run(kind, urls, 3, 3, f"warm-{prefix}", 0.0)  # warm up imports, caches, connection pools
                        load0, cpu0, served0 = os.getloadavg()[0], cpu_times(), process_cpu([s.pid for s in servers])
                        t0 = time.perf_counter()
                        lat = run(kind, urls, args.annotators, args.votes, prefix, think)
                        wall = time.perf_counter() - t0
                        cpu1, served1 = cpu_times(), process_cpu([s.pid for s in servers])
                        busy = (cpu1[0] - cpu0[0]) / max(1.0, cpu1[1] - cpu0[1])
                        marked = stored_with_marks(db, media, prefix)
                        if key.endswith("-marks") and marked != len(lat):
                            raise SystemExit(f"{key}: {len(lat)} votes sent with marks, {marked} stored with them")
                        row = {"setup": setup, "client": label, "think_s": think, "votes": len(lat),
                               "p50_ms": round(pct(lat, 0.5)), "p95_ms": round(pct(lat, 0.95)),
                               "mean_ms": round(statistics.mean(lat) * 1000), "votes_per_s": round(len(lat) / wall, 1),
                               "server_cpu_ms_per_vote": round((served1 - served0) * 1000 / len(lat), 1),
                               "load_avg": round((load0 + os.getloadavg()[0]) / 2, 1),
                               "cpu_busy": round(busy, 2), "stored_with_marks": marked}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
            finally:
                for s in servers:
                    s.kill()
                    s.wait()
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if pg is not None:
            pg.stop()

    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, Python "
               f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}")
    table = markdown(rows, machine, args.annotators, args.votes)
    print("\n" + table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out + ".md").write_text(table + "\n")
        Path(args.out + ".json").write_text(json.dumps({"machine": machine, "annotators": args.annotators,
                                                        "votes_per_annotator": args.votes, "rows": rows},
                                                       indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
