"""20 logged-in annotators (--auth) voting over real HTTP, with a SIGKILL of the server in the middle."""

from __future__ import annotations

import random
import signal
import threading
import time

from labfix import fill, free_port, start_server

from labeler.store import Store
from labeler.users import add_user

N_CLIENTS, PER_CLIENT, KILL_AT = 20, 25, 200
OVERLAP, FRACTION = 3, 0.2


def client(url: str, name: str, up: threading.Event, deadline: float):
    """A gradio_client logged in as `name`; while the server is down, wait and retry."""
    from gradio_client import Client

    while True:
        up.wait(timeout=max(0.0, deadline - time.time()))  # while the server is down, wait instead of spinning
        try:
            return Client(url, auth=(name, f"{name}-pw"), verbose=False, analytics_enabled=False,
                          download_files=False, httpx_kwargs={"timeout": 20})
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def test_concurrent_votes_survive_sigkill(tmp_path):
    """20 annotators x 25 votes under --auth; the server is SIGKILLed at 200 acknowledgements and restarted; every
    acknowledged vote is stored exactly once and no comparison goes beyond its overlap."""
    db = str(tmp_path / "labels.sqlite")
    users = tmp_path / "users.json"
    for i in range(N_CLIENTS):
        add_user(users, f"annotator{i}", f"annotator{i}-pw", rounds=4)
    store = Store(db, overlap=OVERLAP, overlap_fraction=FRACTION)
    fill(store, 300, k=2)
    fill(store, 40, k=3, seed=1)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    extra = ("--auth", str(users), "--overlap", str(OVERLAP), "--overlap-fraction", str(FRACTION))
    server = start_server(db, port, *extra)
    acked: list[dict] = []
    lock, up, errors = threading.Lock(), threading.Event(), []
    up.set()
    t0 = time.time()
    deadline = t0 + 150

    def annotate(i: int):
        rng, name, mine = random.Random(i), f"annotator{i}", 0
        try:
            c, view = client(url, name, up, deadline), None
            while mine < PER_CLIENT and time.time() < deadline:
                try:
                    if view is None:
                        view = c.predict("", api_name="/next")["view"]  # the login decides who votes
                        if view is None:
                            return
                    choice = "rank" if view["k"] > 2 and rng.random() < 0.8 else rng.choice(
                        ["a", "b", "tie", "both_bad", "skip"] if view["k"] == 2 else ["both_bad", "skip"])
                    ranking = "".join(rng.sample("ABC", 3)) if choice == "rank" else ""
                    r = c.predict(view["comparison_id"], view["token"], choice, ranking, "", api_name="/vote")
                    assert r["vote"]["annotator"] == name
                    with lock:
                        acked.append(r["vote"])
                    mine += 1
                    view = r["view"]
                except Exception as e:  # server killed, or our lease went away with it: log in again, ask again
                    if "no longer open" not in str(e):
                        c = client(url, name, up, deadline)
                    view = None
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=annotate, args=(i,)) for i in range(N_CLIENTS)]
    for t in threads:
        t.start()
    while len(acked) < KILL_AT and time.time() < deadline and not errors:
        time.sleep(0.02)
    up.clear()
    server.send_signal(signal.SIGKILL)
    server.wait()
    killed_with, t_kill = len(acked), time.time()
    server = start_server(db, port, *extra)  # same database, serves on
    up.set()
    back = time.time() - t_kill
    try:
        for t in threads:
            t.join(timeout=max(1, deadline - time.time()))
    finally:
        server.kill()
        server.wait()
    votes = {v["vote_id"]: v for v in Store(db).votes()}
    print(f"killed after {killed_with} acks at {t_kill - t0:.1f}s, back in {back:.1f}s; {len(acked)} acknowledged, "
          f"{len(votes)} stored ({len(votes) - len(acked)} stored but never acknowledged: cut off by the kill), "
          f"{time.time() - t0:.1f}s in all")
    assert not errors, errors[:3]
    assert killed_with >= KILL_AT and len(acked) == N_CLIENTS * PER_CLIENT, (killed_with, len(acked))

    for a in acked:  # every acknowledged vote is there, exactly as acknowledged
        v = votes[a["vote_id"]]
        assert (v["comparison_id"], v["annotator"], v["choice"]) == (a["comparison_id"], a["annotator"], a["choice"])
    assert len({a["vote_id"] for a in acked}) == len(acked)
    assert len(votes) - len(acked) <= N_CLIENTS  # at most one vote per annotator was in flight at the kill
    # exactly once: one standing vote per (comparison, annotator), never beyond the overlap
    per_pair: dict = {}
    for v in votes.values():
        if v["retracted_at"] is None:
            per_pair[(v["comparison_id"], v["annotator"])] = per_pair.get((v["comparison_id"], v["annotator"]), 0) + 1
    assert max(per_pair.values()) == 1
    counted: dict[int, int] = {}
    for v in votes.values():
        if v["choice"] != "skip":
            counted[v["comparison_id"]] = counted.get(v["comparison_id"], 0) + 1
    assert all(n <= store.overlap_of(cid) for cid, n in counted.items())
    assert max(counted.values()) == OVERLAP  # overlap actually happened


def test_api_on_postgresql(pg_store_url, tmp_path):
    """The same HTTP path on a PostgreSQL store: 6 concurrent clients, overlap 2, every slot filled once."""
    from gradio_client import Client

    from labeler.app import serve

    store = Store(pg_store_url, media=tmp_path / "media", overlap=2)
    fill(store, 12, k=2)
    demo, url = serve(store, port=free_port(), block=False, quiet=True)
    acked, errors = [], []

    def annotate(i: int):
        try:
            c = Client(url, verbose=False, analytics_enabled=False, download_files=False)
            view = c.predict(f"pg{i}", api_name="/next")["view"]
            while view is not None:
                r = c.predict(view["comparison_id"], view["token"], "ab"[i % 2], "", f"pg{i}", api_name="/vote")
                acked.append(r["vote"])
                view = r["view"]
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=annotate, args=(i,)) for i in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        demo.close()
    assert not errors, errors[:3]
    votes = store.votes()
    assert sorted(v["vote_id"] for v in votes) == sorted(a["vote_id"] for a in acked)
    per: dict[int, set] = {}
    for v in votes:
        per.setdefault(v["comparison_id"], set()).add(v["annotator"])
    assert len(votes) == 24 and all(len(names) == 2 for names in per.values())
