"""Several app servers, one team: two `vrlhf label` processes on one real PostgreSQL server."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import httpx
from labfix import fill, free_port, start_server

from labeler.store import Store

N_ANNOTATORS, PER_ANNOTATOR = 20, 25
OVERLAP, FRACTION = 3, 0.3


def test_two_servers_on_one_postgresql_serve_one_team(pg_store_url, tmp_path):
    """20 annotators over plain HTTP, each sending its calls to the two servers in turn (a lease taken on one is voted
    on the other), 500 votes in all: every acknowledged vote stored once, nothing else stored, no comparison beyond
    its overlap, and both servers served."""
    media = tmp_path / "media"
    store = Store(pg_store_url, media=media, overlap=OVERLAP, overlap_fraction=FRACTION)
    fill(store, 420, k=2)
    flags = ("--media", str(media), "--overlap", str(OVERLAP), "--overlap-fraction", str(FRACTION))
    ports = [free_port(), free_port()]
    servers = [start_server(pg_store_url, port, *flags, log=tmp_path / f"server{port}.log") for port in ports]
    acked: list[dict] = []
    served: Counter = Counter()
    lock, errors = threading.Lock(), []

    def annotate(i: int):
        rng, name = random.Random(i), f"annotator{i}"
        clients = [httpx.Client(base_url=f"http://127.0.0.1:{port}/gradio_api/run/", timeout=60) for port in ports]
        calls = i  # which server the next call goes to

        def call(endpoint: str, *args):
            nonlocal calls
            calls += 1
            r = clients[calls % 2].post(endpoint, json={"data": list(args)})
            assert r.status_code == 200, (endpoint, r.status_code, r.text[:200])
            with lock:
                served[calls % 2] += 1
            return r.json()["data"][0]

        try:
            view = call("next", name)["view"]
            for _ in range(PER_ANNOTATOR):
                assert view is not None, f"{name} ran out of comparisons"
                choice = rng.choice(["a", "b", "tie", "both_bad", "skip"])
                r = call("vote", view["comparison_id"], view["token"], choice, "", name)
                assert (r["vote"]["annotator"], r["vote"]["comparison_id"]) == (name, view["comparison_id"])
                with lock:
                    acked.append(r["vote"])
                view = r["view"]
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(f"{name}: {e!r}")

    threads = [threading.Thread(target=annotate, args=(i,)) for i in range(N_ANNOTATORS)]
    t0 = time.time()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
    finally:
        for server in servers:
            server.kill()
            server.wait()
    seconds = time.time() - t0
    assert not errors, errors[:3]
    assert len(acked) == N_ANNOTATORS * PER_ANNOTATOR == 500
    print(f"{len(acked)} votes through 2 servers in {seconds:.1f}s; calls per server: {dict(served)}")
    assert min(served.values()) == (len(acked) + N_ANNOTATORS) // 2  # each server took half the calls

    stored = {v["vote_id"]: v for v in store.votes()}
    assert len({a["vote_id"] for a in acked}) == len(acked)  # none acknowledged twice
    assert set(stored) == {a["vote_id"] for a in acked}  # none lost, none extra
    for a in acked:
        v = stored[a["vote_id"]]
        assert (v["comparison_id"], v["annotator"], v["choice"]) == (a["comparison_id"], a["annotator"], a["choice"])
    assert max(Counter((v["comparison_id"], v["annotator"]) for v in stored.values()).values()) == 1
    counted = Counter(v["comparison_id"] for v in stored.values() if v["choice"] != "skip")
    assert all(n <= store.overlap_of(cid) for cid, n in counted.items())  # never beyond the overlap
    assert max(counted.values()) == OVERLAP  # and overlap did happen
