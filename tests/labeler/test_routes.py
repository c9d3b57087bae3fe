"""Every route Gradio serves is classified by the gate, and none gives one login another login's page session.

The routes come from the real app's router, so a route that a Gradio upgrade adds fails
`test_every_gradio_route_is_classified` until labeler/gate.py's ROUTES says what it may touch (and the gate refuses
it meanwhile). The attacker is a logged-in annotator who has learned the admin's page session id.
"""

from __future__ import annotations

import json
import re
import secrets
import time

import httpx
import pytest
from labfix import fill, free_port, http_login, ui_event, ui_fns

from labeler.app import serve
from labeler.downloads import ROUTE
from labeler.gate import FOREIGN, LOG_IN, NOT_SERVED, OFF, OPEN, ROUTES, SESSION_BOUND
from labeler.store import Store
from labeler.users import add_user

NOTE = "lead-only-note-" + secrets.token_hex(4)  # a comment only the admin's Stats table shows


def gradio_routes(routes, prefix: str = ""):
    """("METHOD", template) of every route under `routes`, as the gate's table spells them (no trailing "/")."""
    for route in routes:
        if hasattr(route, "original_router"):  # FastAPI's include_router (Gradio's /gradio_api routes)
            yield from gradio_routes(route.original_router.routes, prefix + route.include_context.prefix)
            continue
        path = prefix + getattr(route, "path", "?")
        path = path.rstrip("/") or "/"
        methods = getattr(route, "methods", None)
        for method in sorted(methods) if methods else [type(route).__name__]:  # a Mount or WebSocketRoute: by type
            yield method, path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """lead (admin) has a page open on the Stats tab, with a note of theirs in it; bob is an annotator."""
    tmp = tmp_path_factory.mktemp("routes")
    users = tmp / "users.json"
    add_user(users, "lead", "lead-pw", rounds=4, admin=True)
    add_user(users, "bob", "bob-pw", rounds=4)
    store = Store(tmp / "labels.sqlite")
    fill(store, 6, k=2)
    demo, url = serve(store, port=free_port(), auth_file=str(users), block=False, quiet=True)
    lead = http_login(url, "lead")
    fns = ui_fns(lead)
    page = "lead-page-" + secrets.token_hex(6)
    token = ui_event(lead, fns["load"], [], page)["output"]["data"][0]
    voted = ui_event(lead, fns["vr-a"], [token, NOTE, True, ""], page)  # a vote with a comment, flagged
    token = voted["output"]["data"][0]
    stats = ui_event(lead, fns["vr-refresh"], [], page)
    assert NOTE in json.dumps(stats) and "lead" in json.dumps(stats)  # the admin's page now shows the note
    yield {"demo": demo, "url": url, "store": store, "lead": lead, "fns": fns, "page": page, "token": token}
    demo.close()


def real_routes(demo) -> list[tuple[str, str]]:
    return sorted(set(gradio_routes(demo.app.router.routes)))


def test_every_gradio_route_is_classified(served):
    routes = real_routes(served["demo"])
    assert len(routes) > 60  # the whole router, /gradio_api included
    unclassified = [f"{m} {p}" for m, p in routes if f"{m} {p}" not in ROUTES]
    assert not unclassified, f"routes the gate does not classify (add them to labeler/gate.py ROUTES): {unclassified}"
    ours = {f"GET {ROUTE}{{token}}"}  # labeler.downloads serves it, in front of Gradio
    stale = set(ROUTES) - {f"{m} {p}" for m, p in routes} - ours
    assert not stale, f"ROUTES lists routes Gradio no longer has: {stale}"
    assert {"GET /gradio_api/deep_link", "GET /monitoring/summary"} <= {k for k, v in ROUTES.items() if v == OFF}


def concrete(template: str, session: str) -> str:
    """A path for `template` whose parameters name the admin's session wherever one may go."""
    values = {"session_hash": session, "event_id": session, "api_name": "predict", "size": "32"}
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values.get(m.group(1), "1"), template)


def fetch(client: httpx.Client, method: str, path: str, session: str, fn_index: int) -> tuple[int, str]:
    """One request carrying `session` in its query, headers and body; (status, body). A stream still open after 3 s
    is cut there (status "streamed")."""
    body = {"session_hash": session, "fn_index": fn_index, "data": [], "event_id": session, "component_id": 1,
            "fn_name": "x", "trigger_id": None}
    kw = {"params": {"session_hash": session, "upload_id": session}, "headers": {"session_hash": session}}
    if method == "POST":
        kw["json"] = body
    text, deadline = b"", time.monotonic() + 3
    try:
        with client.stream(method, path.lstrip("/"), timeout=3, **kw) as r:
            for chunk in r.iter_bytes():
                text += chunk
                if time.monotonic() > deadline:
                    return "streamed", text.decode(errors="replace")
            return r.status_code, text.decode(errors="replace")
    except httpx.ReadTimeout:
        return "streamed", text.decode(errors="replace")


def test_another_logins_page_session_is_refused_on_every_route(served):
    """Bob, logged in as himself and knowing the admin's session id, tries every route Gradio has: session-bound
    routes refuse him (403), routes that are off refuse everyone (404), and nothing he gets shows the admin's page."""
    url, page, token, store = served["url"], served["page"], served["token"], served["store"]
    secrets_of_lead = [token, NOTE]
    bob = http_login(url, "bob")
    # The probe that found it: a deep link of the admin's page (outputs, Stats table and all) for anyone.
    r = bob.get("gradio_api/deep_link", params={"session_hash": page})
    assert r.status_code == 404 and r.json()["error"] == NOT_SERVED
    before = store.counts()
    routes = sorted(real_routes(served["demo"]), key=lambda mp: mp == ("GET", "/logout"))  # logging out: last
    outcomes = {}
    for method, template in routes:
        status, text = fetch(bob, method, concrete(template, page), page, served["fns"]["vr-refresh"])
        policy = ROUTES[f"{method} {template}"]
        outcomes[f"{method} {template}"] = status
        assert not any(s in text for s in secrets_of_lead), (method, template, status, text[:300])
        if policy in SESSION_BOUND:
            assert status == 403 and FOREIGN in text, (method, template, status, text[:300])
        elif policy == OFF:
            assert status == 404 and (NOT_SERVED in text or method == "HEAD"), (method, template, status, text[:300])
        else:
            assert policy == OPEN and status != "streamed", (method, template, status)
    assert sum(ROUTES[k] in SESSION_BOUND for k in outcomes) >= 8 and sum(ROUTES[k] == OFF for k in outcomes) >= 30
    # Without a login: the session-bound routes answer 401 (Gradio's heartbeat and cancel have no check of their own).
    with httpx.Client(base_url=url, timeout=5) as anonymous:
        for method, template in routes:
            if ROUTES[f"{method} {template}"] in SESSION_BOUND:
                status, text = fetch(anonymous, method, concrete(template, page), page, 0)
                assert status == 401 and LOG_IN in text, (method, template, status, text[:300])
    # Bob changed nothing and ended nothing: the admin's page votes on, as the admin.
    assert store.counts() == before
    voted = ui_event(served["lead"], served["fns"]["vr-b"], [token, "", False, ""], page)
    assert voted["success"] and store.votes()[-1]["annotator"] == "lead"
    served["token"] = voted["output"]["data"][0]


def test_monitoring_is_off_for_everyone(served):
    """Gradio's /monitoring/summary (every endpoint's traffic and timings) was readable by any annotator."""
    url = served["url"]
    bob = http_login(url, "bob")
    for client in (bob, served["lead"], httpx.Client(base_url=url)):
        for path in ("monitoring/summary", "monitoring", "monitoring/some-key", "monitoring/summary/"):
            r = client.get(path)
            assert r.status_code == 404 and r.json()["error"] == NOT_SERVED, (path, r.status_code, r.text[:200])


def test_a_route_gradio_adds_is_refused_and_reported(served):
    """A route added to the app (as a Gradio upgrade would) is refused by the gate and named by the check above."""
    app = served["demo"].app
    app.add_api_route("/gradio_api/session_peek", lambda session_hash: {"peek": session_hash}, methods=["GET"])
    try:
        added = [(m, p) for m, p in real_routes(served["demo"]) if f"{m} {p}" not in ROUTES]
        assert added == [("GET", "/gradio_api/session_peek")]
        r = http_login(served["url"], "bob").get("gradio_api/session_peek", params={"session_hash": served["page"]})
        assert r.status_code == 404 and r.json()["error"] == NOT_SERVED
    finally:
        app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", "") != "/gradio_api/session_peek"]
