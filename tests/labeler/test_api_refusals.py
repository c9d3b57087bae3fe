"""API refusals answer 4xx with their sentence; only a real fault inside the server answers 500."""

from __future__ import annotations

import sqlite3

import httpx
from gradio_client import Client
from labfix import fill, free_port, http_login

from labeler.app import serve
from labeler.store import Store
from labeler.users import add_user


def test_refusals_are_4xx_and_faults_are_500(tmp_path, caplog):
    users = tmp_path / "users.json"
    for name in ("alice", "bob"):
        add_user(users, name, f"{name}-pw", rounds=4)
    db = tmp_path / "labels.sqlite"
    store = Store(db)
    fill(store, 6, k=2)
    demo, url = serve(store, port=free_port(), auth_file=str(users), block=False, quiet=True)
    try:
        alice, bob = http_login(url, "alice"), http_login(url, "bob")

        def vote(client, *args) -> httpx.Response:
            return client.post("gradio_api/run/vote", json={"data": list(args)})

        va = alice.post("gradio_api/run/next", json={"data": [""]}).json()["data"][0]["view"]
        vb = bob.post("gradio_api/run/next", json={"data": [""]}).json()["data"][0]["view"]
        cases = [
            (vote(alice, 10_000, va["token"], "a", "", ""), 404, "unknown comparison or lease token"),
            (vote(alice, va["comparison_id"], "no-such-token-0000", "a", "", ""), 404, "unknown comparison"),
            (vote(alice, va["comparison_id"], va["token"], "a", "", "bob"), 403, "you cannot act as another annotator"),
            (alice.post("gradio_api/run/undo", json={"data": ["bob"]}), 403, "you cannot act as another annotator"),
            (vote(alice, vb["comparison_id"], vb["token"], "a", "", ""), 403, "not leased to you"),
            (vote(alice, va["comparison_id"], va["token"], "maybe", "", ""), 422, "unknown choice"),
            (vote(alice, va["comparison_id"], va["token"], "rank", "BA", ""), 422, "takes one of"),
        ]
        assert vote(alice, va["comparison_id"], va["token"], "a", "", "").status_code == 200
        cases.append((vote(alice, va["comparison_id"], va["token"], "a", "", ""), 409, "no longer open (voted)"))
        for r, status, sentence in cases:
            assert (r.status_code, sentence in r.json()["error"]) == (status, True), (status, sentence, r.text)
        # gradio_client still raises with the sentence.
        client = Client(url, auth=("alice", "alice-pw"), verbose=False, analytics_enabled=False)
        try:
            client.predict(10_000, va["token"], "a", "", "", api_name="/vote")
            raise AssertionError("the refused vote went through")
        except Exception as e:  # noqa: BLE001  (gradio_client's error type varies by version)
            assert "unknown comparison or lease token" in str(e)
        # A real fault (the votes table gone from under the server) stays 500, with a line and nothing leaked.
        vb = bob.post("gradio_api/run/next", json={"data": [""]}).json()["data"][0]["view"]
        with sqlite3.connect(db) as con:
            con.execute("PRAGMA foreign_keys = OFF")
            con.execute("DROP TABLE votes")
        r = vote(bob, vb["comparison_id"], vb["token"], "b", "", "")
        assert r.status_code == 500 and r.json()["error"].startswith("internal error (OperationalError)"), r.text
        assert vb["token"] not in r.text and vb["token"] not in caplog.text
    finally:
        demo.close()
