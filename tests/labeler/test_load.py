"""20 concurrent gradio_client annotators over real HTTP, with a SIGKILL of the server in the middle."""

from __future__ import annotations

import random
import signal
import threading
import time

from labfix import fill, free_port, start_server

from labeler.store import Store

N_CLIENTS, TARGET, KILL_AT = 20, 500, 200
OVERLAP, FRACTION = 3, 0.2


def client(url: str, up: threading.Event, deadline: float):
    from gradio_client import Client

    while True:
        up.wait(timeout=max(0.0, deadline - time.time()))  # while the server is down, wait instead of spinning
        try:
            return Client(url, verbose=False, analytics_enabled=False, download_files=False,
                          httpx_kwargs={"timeout": 20})
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def test_concurrent_votes_survive_sigkill(tmp_path):
    db = str(tmp_path / "labels.sqlite")
    store = Store(db, overlap=OVERLAP, overlap_fraction=FRACTION)
    fill(store, 300, k=2)
    fill(store, 40, k=3, seed=1)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    extra = ("--overlap", str(OVERLAP), "--overlap-fraction", str(FRACTION))
    server = start_server(db, port, *extra)
    acked: list[dict] = []
    lock, stop, up, errors = threading.Lock(), threading.Event(), threading.Event(), []
    up.set()
    deadline = time.time() + 150

    def annotate(i: int):
        rng, name = random.Random(i), f"annotator{i}"
        try:
            c, view = client(url, up, deadline), None
            while not stop.is_set() and time.time() < deadline:
                try:
                    if view is None:
                        view = c.predict(name, api_name="/next")["view"]
                        if view is None:
                            return
                    choice = "rank" if view["k"] > 2 and rng.random() < 0.8 else rng.choice(
                        ["a", "b", "tie", "both_bad", "skip"] if view["k"] == 2 else ["both_bad", "skip"])
                    ranking = "".join(rng.sample("ABC", 3)) if choice == "rank" else ""
                    r = c.predict(view["comparison_id"], view["token"], choice, ranking, name, api_name="/vote")
                    with lock:
                        acked.append(r["vote"] | {"ranking_sent": ranking})
                        if len(acked) >= TARGET:
                            stop.set()
                    view = r["view"]
                except Exception as e:  # server killed, or our lease went away with it: reconnect, ask again
                    if "no longer open" not in str(e):
                        c = client(url, up, deadline)
                    view = None
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=annotate, args=(i,)) for i in range(N_CLIENTS)]
    for t in threads:
        t.start()
    while len(acked) < KILL_AT and time.time() < deadline and not errors:
        time.sleep(0.05)
    up.clear()
    server.send_signal(signal.SIGKILL)
    server.wait()
    killed_with, t_kill = len(acked), time.time()
    server = start_server(db, port, *extra)  # same database, serves on
    up.set()
    print(f"killed after {killed_with} acks at {t_kill - deadline + 150:.1f}s; back in {time.time() - t_kill:.1f}s")
    t_back = time.time()
    try:
        for t in threads:
            t.join(timeout=max(1, deadline - time.time()))
    finally:
        stop.set()
        server.kill()
        server.wait()
    print(f"{len(acked) - killed_with} more acks in {time.time() - t_back:.1f}s")
    assert not errors, errors[:3]
    assert killed_with >= KILL_AT and len(acked) >= 500, (killed_with, len(acked))

    votes = {v["vote_id"]: v for v in Store(db).votes()}
    for a in acked:  # every acknowledged vote is there, exactly as acknowledged
        v = votes[a["vote_id"]]
        assert (v["comparison_id"], v["annotator"], v["choice"]) == (a["comparison_id"], a["annotator"], a["choice"])
    assert len({a["vote_id"] for a in acked}) == len(acked)
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
