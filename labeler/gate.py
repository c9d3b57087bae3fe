"""The HTTP gate in front of Gradio: every route classified, page sessions bound to their login, exact arguments.

Routes: `ROUTES` lists every route Gradio serves (method and path template) with what it may touch. OPEN routes
read no page session's state (the page, static files, the login, the caller's own login); session-bound routes
read or write a page session, and the session id they carry must belong to the caller's login; OFF routes are
Gradio features the labeler does not use (deep links, monitoring, uploads, streams, the component server, run
history, vibe editing, ...) and answer 404 to everyone. A route missing from the table is refused like an OFF one,
so a route a Gradio upgrade adds stays shut until someone classifies it (tests/labeler/test_routes.py fails on
it: the test lists the real app's router and tries every route as another login).

Sessions: Gradio takes the page session id (`session_hash`) from the request itself, so anyone logged in could
send events, read the event stream or drop the heartbeat of another person's page. Under `--auth` the gate binds
each session id to the login that used it first and refuses (403, nothing reaches Gradio) any request that carries
it under another login, wherever it carries it (body, query, path, or the event it names); a session-bound route
without a login gets 401.

Arguments: Gradio ignores extra arguments and fails with a bare 500 (logging what was sent) on missing ones. The
gate checks every call, API or page event, against its function: exactly as many arguments as it takes, each of
its type (integers, booleans, strings of at most MAX_TEXT characters or a text box's max_length, a dropdown's own
choices), and refuses anything else with 422 in Gradio's validation shape (`gradio_client` raises `ValidationError`
with the message) plus an "error" line for plain HTTP. A request on another login's session is refused (403) before
its arguments are looked at. By name, `run`/`call` serve only the public API (next, vote, undo); a page event is
called by its fn_index, through `run/predict` when it is off the queue (ours are: one POST, no event stream).
Gradio answers every failed call with 500; the gate passes on a refusal (an error whose title is an HTTP reason
phrase, e.g. "Conflict": labeler.app.guarded) with that 4xx status, so 500 means a real fault.

It also tells the login check (labeler.users) the client's address, for its limits on failures (uvicorn takes it
from X-Forwarded-For only when the peer is one of `--trusted_proxies`), serves our own login page
(labeler/page.py: a sentence for every refusal) to anyone not logged in under `--auth`, and, without `--auth`,
refuses requests relayed by a proxy (X-Forwarded-For, Forwarded, X-Real-IP): a loopback-only server behind a
public proxy would otherwise serve everyone without a login.
An ASGI middleware (`launch(app_kwargs={"middleware": [Middleware(Gate)]})`), so it runs before Gradio parses
anything.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from http import HTTPStatus
from urllib.parse import parse_qs

from gradio.utils import get_function_params
from starlette.routing import compile_path

from labeler.leases import MAX_MARKS
from labeler.page import login_page
from labeler.users import CLIENT_ADDRESS

API = "/gradio_api/"
MAX_BODY = 64 * 1024  # an event or API call is a few hundred bytes; uploads have their own route
MAX_SESSIONS = 100_000  # bound sessions remembered (oldest forgotten first)
MAX_TEXT = 256  # longest string any argument may carry (a text box with a max_length: that)
FOREIGN = "this page session belongs to another login: reload the page"
# API arguments added after clients were written (vote's marks): a call may leave them off at the end, and gets their
# default, so a call written for the older signature still works. Any other argument count is refused.
LATER_ARGUMENTS = {"marks": ""}
NOT_SERVED = "not served by the labeling server"
LOG_IN = "log in first"
PROXY_HEADERS = {b"x-forwarded-for", b"forwarded", b"x-real-ip"}
NO_LOGINS_BEHIND_A_PROXY = ("this labeling server has no logins, so it serves only its own machine, not requests "
                            "relayed by a proxy: start it with --auth users.json to serve people through one")

# What each route may touch. OPEN: no page session's state; OFF: refused (404) for everyone; the rest are bound to
# the caller's login through the page session id they carry, named by where they carry it.
OPEN, OFF = "open", "off"
IN_BODY, IN_QUERY, IN_PATH, OF_EVENT = "session in body", "session in query", "session in path", "session of event"
SESSION_BOUND = (IN_BODY, IN_QUERY, IN_PATH, OF_EVENT)
ROUTES: dict[str, str] = {  # "METHOD template" as Gradio's router lists it, a trailing "/" dropped
    # The page, its files and the login: the same for everyone.
    "GET /": OPEN, "HEAD /": OPEN, "GET /config": OPEN, "GET /assets/{path:path}": OPEN,
    "GET /static/{path:path}": OPEN, "GET /svelte/{path:path}": OPEN, "GET /favicon.ico": OPEN,
    "GET /theme.css": OPEN, "GET /gradio_api/theme.css": OPEN, "GET /robots.txt": OPEN, "GET /manifest.json": OPEN,
    "GET /pwa_icon": OPEN, "GET /pwa_icon/{size}": OPEN, "POST /login": OPEN, "GET /logout": OPEN,
    "GET /gradio_api/user": OPEN, "GET /gradio_api/login_check": OPEN, "GET /gradio_api/token": OPEN,  # one's own
    "GET /gradio_api/app_id": OPEN, "GET /gradio_api/info": OPEN, "GET /gradio_api/openapi.json": OPEN,
    "GET /gradio_api/startup-events": OPEN, "GET /gradio_api/queue/status": OPEN,  # queue-wide counts only
    "POST /gradio_api/reset": OPEN,  # a no-op in Gradio (cancelling is /cancel)
    "GET /labeler/download/{token}": OPEN,  # ours (labeler.downloads): a file only its owner may fetch, once
    # Page events, API calls and their streams: the session id must be the caller's.
    "POST /gradio_api/queue/join": IN_BODY, "POST /gradio_api/run/{api_name}": IN_BODY,
    "POST /gradio_api/api/{api_name}": IN_BODY, "POST /gradio_api/call/{api_name}": IN_BODY,
    "POST /gradio_api/cancel": IN_BODY, "GET /gradio_api/queue/data": IN_QUERY,
    "GET /gradio_api/heartbeat/{session_hash}": IN_PATH,  # hanging up unloads the page: only its owner may
    "GET /gradio_api/call/{api_name}/{event_id}": OF_EVENT,  # an unknown event id is read as a session id
    "GET /gradio_api/call/v2/{api_name}/{event_id}": OF_EVENT,
    # Off: nothing in the labeler uses them, and several read or write a page session's state.
    "GET /gradio_api/deep_link": OFF,  # saves any session's outputs (an admin's Stats) under a link
    "GET /monitoring": OFF, "GET /monitoring/summary": OFF, "GET /monitoring/{key}": OFF,  # event analytics
    "POST /gradio_api/call/v2/{api_name}": OFF,  # named arguments (our API takes a list: /call, /run)
    "POST /gradio_api/component_server": OFF,  # runs a component's server function in any session
    "POST /gradio_api/upload": OFF, "GET /gradio_api/upload_progress": OFF,  # the labeler takes no files
    "GET /gradio_api/file={path_or_url:path}": OFF, "HEAD /gradio_api/file={path_or_url:path}": OFF,
    "GET /gradio_api/file/{path:path}": OFF,  # images are inline; exports have their own route
    "POST /gradio_api/stream/{event_id}": OFF, "POST /gradio_api/stream/{event_id}/close": OFF,  # no login check
    "GET /gradio_api/stream/{session_hash}/{run}/{component_id}/playlist.m3u8": OFF,  # media streams
    "GET /gradio_api/stream/{session_hash}/{run}/{component_id}/{segment_id}.{ext}": OFF,
    "GET /gradio_api/stream/{session_hash}/{run}/{component_id}/playlist-file": OFF,
    "GET /gradio_api/proxy={url_path:path}": OFF, "HEAD /gradio_api/proxy={url_path:path}": OFF,  # Spaces
    "GET /gradio_api/custom_component/{id}/{environment}/{type}/{file_name}": OFF, "GET /gradio_api/dev/reload": OFF,
    "GET /openapi.json": OFF, "HEAD /openapi.json": OFF,  # FastAPI's, without Gradio's login check
    "POST /gradio_api/process_recording": OFF, "GET /gradio_api/runs": OFF,
    "POST /gradio_api/run-history/connect": OFF, "GET /gradio_api/run-history/buckets": OFF,
    "GET /gradio_api/run-history/records": OFF,
    "GET /gradio_api/run-history/records/{endpoint}/{record_id}/assets/{asset_id}": OFF,
    "POST /gradio_api/vibe-edit": OFF, "POST /gradio_api/undo-vibe-edit": OFF, "GET /gradio_api/vibe-code": OFF,
    "POST /gradio_api/vibe-code": OFF, "POST /gradio_api/vibe-starter-queries": OFF,
}
_MATCHERS = [(key.split(" ", 1)[0], compile_path(key.split(" ", 1)[1])[0], policy) for key, policy in ROUTES.items()]
# 4xx reason phrases ("Conflict") -> status: how a refusal's title asks for its status (labeler.app.guarded)
REFUSAL_TITLES = {s.phrase: s.value for s in HTTPStatus if 400 <= s.value < 500}


def route_policy(method: str, path: str) -> tuple[str, dict]:
    """(policy, path parameters) of the route a request reaches; OFF for a route not in ROUTES."""
    if path != "/":
        path = path.rstrip("/")  # Gradio registers most routes with and without the slash
    for wanted in (method, "GET") if method == "HEAD" else (method,):
        for route_method, pattern, policy in _MATCHERS:
            if route_method == wanted and (match := pattern.match(path)):
                return policy, match.groupdict()
    return OFF, {}


class Gate:
    """ASGI middleware; `app` is the Gradio app below it."""

    def __init__(self, app):
        self.app = app
        self.owners: OrderedDict[str, str] = OrderedDict()  # session_hash -> login
        self.signatures: dict[int, list[tuple[str, object]]] = {}  # fn id -> [(argument name, check)]

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":  # Gradio serves none: its queue speaks server-sent events
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        auth = getattr(scope.get("app"), "auth", None) is not None
        if not auth and any(name in PROXY_HEADERS for name, _ in scope.get("headers", [])):
            return await respond(send, 403, NO_LOGINS_BEHIND_A_PROXY)  # loopback-only must not mean "the world"
        policy, params = route_policy(scope["method"], scope["path"])
        if policy == OFF:
            return await respond(send, 404, NOT_SERVED)
        user = login_of(scope)
        if policy == OPEN:
            if scope["path"] in ("", "/") and scope["method"] in ("GET", "HEAD") and auth and user is None:
                expired = "expired=1" in scope.get("query_string", b"").decode()
                return await respond_html(send, login_page(expired), head=scope["method"] == "HEAD")
            address = CLIENT_ADDRESS.set((scope.get("client") or (None,))[0])  # for the login check's limits
            try:
                return await self.app(scope, receive, send)
            finally:
                CLIENT_ADDRESS.reset(address)
        if auth and user is None:
            return await respond(send, 401, LOG_IN)  # heartbeat and cancel have no login check of their own
        route = scope["path"].split(API, 1)[1].strip("/")
        session = None
        if policy == IN_QUERY:
            session = parse_qs(scope.get("query_string", b"").decode()).get("session_hash", [None])[0]
        elif policy == IN_PATH:
            session = params["session_hash"]
        elif policy == OF_EVENT:
            session = event_session(scope["app"], params["event_id"])
        else:  # IN_BODY
            body = await read_body(receive)
            if body is None:
                return await respond(send, 413, f"request body over {MAX_BODY} bytes")
            receive, unread = replay(body, receive), receive
            try:
                payload = json.loads(body) if body else {}
            except ValueError:
                return await respond(send, 400, "the body is not JSON")
            if not isinstance(payload, dict):
                return await respond(send, 400, "the body must be a JSON object")
            session = payload.get("session_hash")
            if session is not None and not isinstance(session, str):
                return await respond(send, 400, "session_hash must be a string")
            if session is not None and user is not None and not self.bind(session, user):
                return await respond(send, 403, FOREIGN)  # whatever it carries: not this login's page
            if route == "queue/join" or route.split("/")[0] in ("run", "api", "call"):
                sent = len(payload.get("data") or []) if isinstance(payload.get("data"), list) else None
                refusal = self.check_call(scope["app"].get_blocks(), route, payload)
                if refusal is not None:
                    return await respond(send, *refusal)
                if sent is not None and len(payload["data"]) != sent:  # later arguments filled in: Gradio reads that
                    body = json.dumps(payload).encode()
                    receive = replay(body, unread)
                    headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
                    scope = dict(scope, headers=headers + [(b"content-length", str(len(body)).encode())])
            if route.split("/")[0] in ("run", "api"):
                send = refusals_as_4xx(send)
            return await self.app(scope, receive, send)
        if session is not None and user is not None and not self.bind(str(session), user):
            return await respond(send, 403, FOREIGN)
        return await self.app(scope, receive, send)

    def check_call(self, blocks, route: str, payload: dict) -> tuple | None:
        """None when `payload` calls an existing function with exactly its arguments, else (status, error, field)."""
        fn_index = payload.get("fn_index")
        direct = route != "queue/join"
        if route == "queue/join" or fn_index is not None:
            if not isinstance(fn_index, int) or isinstance(fn_index, bool):
                return 422, "fn_index must be an integer", "fn_index"
            if fn_index not in blocks.fns:
                return 404, f"no event with fn_index {fn_index}", "fn_index"
            fn = blocks.fns[fn_index]
            # A page event off the queue is one POST to run/predict (how Gradio's page sends it); a queued one only
            # goes through queue/join.
            allowed = fn.api_visibility == "public" or not (direct and fn.queue)
        else:  # by name: the public API only
            name = route.split("/", 1)[1] if "/" in route else ""
            fn = next((f for f in blocks.fns.values() if f.api_name == name), None)
            allowed = fn is not None and fn.api_visibility == "public"
        if fn is None or not allowed:
            return 404, f"no API endpoint {route.split('/', 1)[-1][:40]!r}: use next, vote or undo", "api_name"
        data = payload.get("data")
        if not isinstance(data, list):
            return 422, "data must be a list of the arguments", "data"
        signature = self.signature(fn)
        left_off = [name for name, _ in signature[len(data):]]
        if data and left_off and all(name in LATER_ARGUMENTS for name in left_off):
            data += [LATER_ARGUMENTS[name] for name in left_off]
        if len(data) != len(signature):
            names = ", ".join(name for name, _ in signature) or "none"
            return (422, f"{fn.api_name or fn.name} takes {len(signature)} argument(s) ({names}), got {len(data)}",
                    "data")
        for (name, check), value in zip(signature, data):
            problem = check(value)
            if problem:
                return 422, f"{fn.api_name or fn.name}: {name} {problem}", name
        return None

    def signature(self, fn) -> list[tuple[str, object]]:
        """[(argument name, check)] for a Gradio function: names from the Python function, types from its inputs."""
        if fn._id not in self.signatures:
            params = get_function_params(fn.fn) if fn.fn is not None else []
            names = [p[0] for p in params] + [f"argument {i + 1}" for i in range(len(params), len(fn.inputs))]
            optional = [p[1] for p in params] + [True] * len(fn.inputs)
            # a vote's marks are JSON text, longer than any other argument
            self.signatures[fn._id] = [(names[i], value_check(block, optional[i], MAX_MARKS if names[i] == "marks"
                                                              else None)) for i, block in enumerate(fn.inputs)]
        return self.signatures[fn._id]

    def bind(self, session: str, user: str) -> bool:
        """True when `session` is (now) bound to `user`; False when another login holds it."""
        owner = self.owners.get(session)
        if owner is None:
            self.owners[session] = user
            if len(self.owners) > MAX_SESSIONS:
                self.owners.popitem(last=False)
            return True
        return owner == user


def value_check(block, optional: bool, longest: int | None = None):
    """A check of one argument for the input component `block`: returns what is wrong, or None."""
    kind = type(block).__name__
    if kind == "Api":  # gr.api: the JSON schema Gradio derived from the type hint
        kind = {"integer": "int", "string": "str"}.get(getattr(block, "_api_info", {}).get("type"), "any")
    choices = [value for _, value in getattr(block, "choices", None) or []]
    longest = longest or getattr(block, "max_length", None) or MAX_TEXT  # a text box may allow more (a comment)

    def check(value) -> str | None:
        if kind == "int":
            return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
        if kind == "Checkbox":
            return None if value is None or isinstance(value, bool) else "must be true or false"
        if kind in ("str", "Textbox") or choices:
            if value is None and (optional or kind == "Textbox"):
                return None
            if not isinstance(value, str):
                return "must be a string"
            if len(value) > longest:
                return f"is too long (over {longest} characters)"
            if choices and value not in choices:
                return f"must be one of {', '.join(map(str, choices))}"
        return None

    return check


def event_session(app, event_id: str) -> str:
    """The page session whose stream `GET call/<name>/<event_id>` reads, found as Gradio finds it: the event's
    session, or, for an event id it does not hold, the id itself taken as a session id."""
    queue = app.get_blocks()._queue
    event = queue.event_ids_to_events.get(event_id)
    if event is not None:
        return event.session_hash
    return next((s for s, ids in queue.pending_event_ids_session.items() if event_id in ids), event_id)


def refusals_as_4xx(send):
    """A `send` that turns Gradio's 500 for a refused call into the 4xx its title names ("Not Found": 404).
    A real fault's title is not a reason phrase, and stays 500."""
    held = None

    async def relay(message):
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] == 500:
            held = message  # sent with the body, once we know what it says
            return
        if held is not None and message["type"] == "http.response.body":
            try:
                title = json.loads(message.get("body", b"")).get("title")
            except (ValueError, AttributeError):
                title = None
            await send({**held, "status": REFUSAL_TITLES.get(title, 500)})
            held = None
        await send(message)

    return relay


def login_of(scope) -> str | None:
    """The login behind a request: Gradio's access-token cookie looked up in the app's tokens (None: no login)."""
    app = scope.get("app")
    tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
    if not tokens or cookie_id is None:
        return None
    cookies = {}
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                cookies[key] = val
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    return tokens.get(token) if token else None


async def read_body(receive) -> bytes | None:
    """The whole request body, or None when it is over MAX_BODY."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_BODY:
            return None
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def replay(body: bytes, receive):
    """A `receive` that hands Gradio the body we already read, then passes on to the real one."""
    sent = False

    async def again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def respond_html(send, body: bytes, head: bool = False) -> None:
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def respond(send, status: int, message: str, field: str | None = None) -> None:
    """A refusal in Gradio's own error shape, {"error": "one line"}; a 422 also in its validation shape."""
    content: dict = {"error": message}
    if field is not None and status == 422:
        content["detail"] = [{"__type__": "validate", "is_valid": False, "parameter_name": field, "message": message}]
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
