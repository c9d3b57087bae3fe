"""Every endpoint takes exactly its arguments: a wrong count or type is a clear refusal that writes nothing, no
answer is a bare 500, and the server log never shows a lease token or a password (read from its real output)."""

from __future__ import annotations

import sqlite3

from labfix import fill, free_port, http_login, start_server, ui_fns

from labeler.store import Store
from labeler.users import add_user


def test_wrong_arguments_are_refused_and_nothing_secret_is_logged(tmp_path):
    users = tmp_path / "users.json"
    add_user(users, "alice", "alice-pw", rounds=4)
    db = str(tmp_path / "labels.sqlite")
    store = Store(db)
    fill(store, 6, k=2)
    port = free_port()
    log = tmp_path / "server.log"
    server = start_server(db, port, "--auth", str(users), log=log)
    try:
        url = f"http://127.0.0.1:{port}/"
        c = http_login(url, "alice")
        view = c.post("gradio_api/run/next", json={"data": [""]}).json()["data"][0]["view"]
        cid, token = view["comparison_id"], view["token"]
        fns = ui_fns(c)
        page = "alice-page-0001"

        def join(fn, data):
            return c.post("gradio_api/queue/join", json={"data": data, "fn_index": fn, "session_hash": page,
                                                          "event_data": None, "trigger_id": None})

        bad = {
            "vote, 2 arguments": lambda: c.post("gradio_api/run/vote", json={"data": [cid, token]}),
            "vote, 7 arguments": lambda: c.post("gradio_api/run/vote", json={"data": [cid, token, "a", "", "", "", 1]}),
            "vote, id as text": lambda: c.post("gradio_api/run/vote", json={"data": [str(cid), token, "a", "", ""]}),
            "vote, token a number": lambda: c.post("gradio_api/run/vote", json={"data": [cid, 1234, "a", "", ""]}),
            "vote, no choice": lambda: c.post("gradio_api/run/vote", json={"data": [cid, token, None, "", ""]}),
            "vote, ranking a list": lambda: c.post("gradio_api/run/vote", json={"data": [cid, token, "a", ["A"], ""]}),
            "vote, id a bool": lambda: c.post("gradio_api/run/vote", json={"data": [True, token, "a", "", ""]}),
            "vote, data not a list": lambda: c.post("gradio_api/run/vote", json={"data": token}),
            "vote, not JSON": lambda: c.post("gradio_api/run/vote", content=b"{" + token.encode(),
                                             headers={"content-type": "application/json"}),
            "next, no argument": lambda: c.post("gradio_api/run/next", json={"data": []}),
            "next, 2 arguments": lambda: c.post("gradio_api/run/next", json={"data": ["", token]}),
            "next, a dict": lambda: c.post("gradio_api/run/next", json={"data": [{"name": token}]}),
            "undo, no argument": lambda: c.post("gradio_api/run/undo", json={"data": []}),
            "undo, 2 arguments": lambda: c.post("gradio_api/run/undo", json={"data": [None, None]}),
            "no such endpoint": lambda: c.post("gradio_api/run/nope", json={"data": [token]}),
            "a page event by name": lambda: c.post("gradio_api/run/on_load", json={"data": []}),
            "vote via another fn_index": lambda: c.post("gradio_api/run/vote", json={"data": [token], "fn_index": 999}),
            "click, no argument": lambda: join(fns["vr-a"], []),
            "click, 2 arguments": lambda: join(fns["vr-a"], [token, "x"]),
            "click, a number": lambda: join(fns["vr-a"], [5]),
            "load, an argument": lambda: join(fns["load"], [token]),
            "export, unknown format": lambda: join(fns["vr-export"], [token]),
            "unknown fn_index": lambda: join(10_000, [token]),
            "click as the page sends it, 1 argument": lambda: c.post("gradio_api/run/predict", json={
                "data": [token], "fn_index": fns["vr-a"], "session_hash": page}),
            "click as the page sends it, a number as the flag": lambda: c.post("gradio_api/run/predict", json={
                "data": [token, "", 3, ""], "fn_index": fns["vr-a"], "session_hash": page}),
            "fn_index as text": lambda: join(str(fns["vr-a"]), [token]),
        }
        for what, send in bad.items():
            r = send()
            assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
            error = r.json().get("error")
            assert isinstance(error, str) and error and "\n" not in error, (what, r.text)
        assert store.counts()["votes"] == 0 and store.counts()["retractions"] == 0  # nothing written

        r = c.post("gradio_api/run/vote", json={"data": [cid, token, "a", "", ""]})  # the right call still works
        assert r.status_code == 200 and store.counts()["votes"] == 1
        tokens = [token, r.json()["data"][0]["view"]["token"]]
        assert c.post("login", data={"username": "alice", "password": "hunter2-secret"}).status_code == 400

        # A fault inside the store: its SQL error carries the lease token; the client gets one line, the log no token.
        with sqlite3.connect(db) as con:
            con.execute("ALTER TABLE assignments RENAME TO assignments_gone")
        view = r.json()["data"][0]["view"]
        r = c.post("gradio_api/run/vote", json={"data": [view["comparison_id"], view["token"], "b", "", ""]})
        assert r.status_code == 500 and "internal error" in (r.json().get("error") or ""), r.text
    finally:
        server.kill()
        server.wait()
    text = log.read_text()
    assert "OperationalError" in text  # the failure is logged ...
    for secret in tokens + ["alice-pw", "hunter2-secret"]:  # ... without any token or password
        assert secret not in text, secret
