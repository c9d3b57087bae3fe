"""Who may vote: logins under --auth, leases bound to their annotator, malformed payloads refused unwritten."""

from __future__ import annotations

import httpx
import pytest
from gradio_client import Client
from labfix import fill, free_port

from labeler.app import serve
from labeler.store import LabelError, Store
from labeler.users import add_user
from labeler.users import main as users_main


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sec")
    users = tmp / "users.json"
    for name in ("alice", "bob"):
        add_user(users, name, f"{name}-pw", rounds=4)
    store = Store(tmp / "labels.sqlite")
    fill(store, 10, k=2)
    demo, url = serve(store, port=free_port(), auth_file=str(users), block=False, quiet=True)
    yield store, url
    demo.close()


def login(url, name):
    return Client(url, auth=(name, f"{name}-pw"), verbose=False, analytics_enabled=False, download_files=False)


def test_nothing_served_without_credentials(served):
    _, url = served
    from gradio_client.exceptions import AuthenticationError

    with pytest.raises(AuthenticationError):
        Client(url, verbose=False, analytics_enabled=False)
    with pytest.raises(Exception):  # noqa: B017  (gradio_client's type for a refused login varies by version)
        Client(url, auth=("alice", "wrong"), verbose=False, analytics_enabled=False)
    for path in ("config", "gradio_api/info", "gradio_api/call/next"):
        r = httpx.get(url + path)
        assert r.status_code in (401, 403, 404, 405) or "login" in r.text.lower(), (path, r.status_code)
    for path in ("gradio_api/call/next", "gradio_api/run/next", "gradio_api/run/vote"):
        r = httpx.post(url + path, json={"data": ["alice"]})
        assert r.status_code in (401, 403), (path, r.status_code)
    page = httpx.get(url)
    assert "vr-view" not in page.text  # the login page, not the app


def test_votes_bound_to_login(served):
    store, url = served
    alice, bob = login(url, "alice"), login(url, "bob")
    va = alice.predict("", api_name="/next")["view"]
    vb = bob.predict("", api_name="/next")["view"]
    assert va["comparison_id"] != vb["comparison_id"]
    before = store.counts()["votes"]
    cases = [
        ((vb["comparison_id"], vb["token"], "a", "", ""), "not leased to you"),  # bob's lease, alice's login
        ((va["comparison_id"], va["token"], "a", "", "bob"), "another annotator"),  # name in the payload
        ((10_000, va["token"], "a", "", ""), "unknown comparison"),
        ((va["comparison_id"], "no-such-token-0000", "a", "", ""), "unknown comparison"),
        ((va["comparison_id"], va["token"], "x" * 300_000, "", ""), "413"),  # refused unread by the gate
        ((va["comparison_id"], va["token"], "a", "AB" * 1000, ""), "too long"),
        ((va["comparison_id"], va["token"], "maybe", "", ""), "unknown choice"),
        ((va["comparison_id"], va["token"], "rank", "BA", ""), "takes one of"),
        ((-1, va["token"], "a", "", ""), "positive integer"),
        (("1; DROP TABLE votes", va["token"], "a", "", ""), "comparison_id must be an integer"),
    ]
    for args, msg in cases:
        with pytest.raises(Exception, match=msg):
            alice.predict(*args, api_name="/vote")
    with pytest.raises(Exception, match="another annotator"):
        alice.predict("bob", api_name="/undo")
    assert store.counts()["votes"] == before  # nothing written
    r = alice.predict(va["comparison_id"], va["token"], "b", "", "", api_name="/vote")
    assert r["vote"]["annotator"] == "alice" and store.counts()["votes"] == before + 1
    with pytest.raises(Exception, match="no longer open"):  # a replay does not count twice
        alice.predict(va["comparison_id"], va["token"], "b", "", "", api_name="/vote")
    assert bob.predict("", api_name="/undo")["retracted"] is None  # bob cannot undo alice's vote
    assert alice.predict("", api_name="/undo")["retracted"] == r["vote"]["vote_id"]


def test_no_auth_only_on_loopback(tmp_path, capsys):
    store = Store(tmp_path / "x.sqlite")
    with pytest.raises(LabelError, match="without --auth"):
        serve(store, host="0.0.0.0", block=False)
    fill(store, 1, k=2)
    demo, url = serve(store, port=free_port(), block=False, quiet=True)
    try:  # nor through a proxy on the same machine: relayed requests are refused, direct ones served
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            for r in (httpx.get(url, headers={header: "203.0.113.9"}),
                      httpx.post(url + "gradio_api/run/next", json={"data": ["eve"]}, headers={header: "for=x"})):
                assert r.status_code == 403 and "start it with --auth" in r.json()["error"], (header, r.text)
        assert store.counts()["assignments"] == 0
        assert httpx.post(url + "gradio_api/run/next", json={"data": ["kim"]}).json()["data"][0]["view"]
    finally:
        demo.close()
    from vrlhf.cli import main as vrlhf_main

    assert vrlhf_main(["label", "--db", str(tmp_path / "x.sqlite"), "--host", "192.168.1.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vrlhf label: refusing to serve 192.168.1.5 without --auth") and err.count("\n") == 1


def test_annotators_cli(tmp_path, monkeypatch, capsys):
    import io
    import json

    from vrlhf.cli import main as vrlhf_main

    users = tmp_path / "u.json"
    monkeypatch.setattr("sys.stdin", io.StringIO("hunter22\n"))
    assert users_main(["add", "carol", "--file", str(users), "--password-stdin", "--rounds", "4"]) == 0
    assert vrlhf_main(["annotators", "list", "--file", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vrlhf annotators: cannot read users file {tmp_path / 'none.json'}") and err.count("\n") == 1
    entry = json.loads(users.read_text())["users"]["carol"]
    assert entry["hash"].startswith("$2") and "hunter22" not in users.read_text()
    import asyncio

    from labeler.users import LoginPolicy, authenticator

    check = authenticator(users, LoginPolicy(fail_seconds=0))
    attempts = [("carol", "hunter22", True), ("carol", "hunter2", False), ("mallory", "hunter22", False)]
    for name, password, ok in attempts:
        assert asyncio.run(check(name, password)) is ok


def test_page_session_is_bound_to_its_login(served):
    """Bob, logged in as himself, replays Alice's page session id: every event is refused and changes nothing."""
    import json
    import secrets

    import httpx
    from labfix import http_login, ui_event, ui_fns

    store, url = served
    alice, bob = http_login(url, "alice"), http_login(url, "bob")
    fns = ui_fns(alice)
    page = "alice-page-" + secrets.token_hex(6)  # Alice's Gradio session_hash
    opened = ui_event(alice, fns["load"], [], page)
    token = opened["output"]["data"][0]
    assert len(token) > 8 and "alice" in json.dumps(opened)
    before = store.counts()
    for elem, data in [("vr-a", ["stale"]), ("vr-a", [token]), ("vr-skip", [token]), ("vr-undo", [token]),
                       ("load", []), ("vr-start", ["bob"])]:
        got = ui_event(bob, fns[elem], data, page)
        assert got.get("refused") == 403 and "another login" in got["text"], (elem, got)
        assert token not in json.dumps(got)
    # Nor may Bob read Alice's event stream, or end her page by opening and dropping its heartbeat.
    assert bob.get("gradio_api/queue/data", params={"session_hash": page}).status_code == 403
    try:  # a refusal answers at once; a heartbeat streams until Bob hangs up, which would unload Alice's page
        heartbeat = bob.get(f"gradio_api/heartbeat/{page}", timeout=3).status_code
    except httpx.ReadTimeout:
        heartbeat = "streamed"
    assert heartbeat == 403
    assert store.counts() == before  # nothing written: no vote, no lease
    voted = ui_event(alice, fns["vr-a"], [token, "", False, ""], page)  # Alice's page works on, as Alice
    # (a click sends the token on screen, the comment, the flag and, without logins, the name)
    assert voted["success"] and voted["output"]["data"][0] != token
    assert store.counts()["votes"] == before["votes"] + 1 and store.votes()[-1]["annotator"] == "alice"
