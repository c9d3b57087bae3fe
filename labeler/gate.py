"""The HTTP gate in front of Gradio: page sessions bound to their login, exact arguments, checked before Gradio.

Sessions: Gradio takes the page session id (`session_hash`) from the request itself, so anyone logged in could send
events, read the event stream or drop the heartbeat of another person's page. Under `--auth` the gate binds each
session id to the login that used it first and refuses (403, nothing reaches Gradio) any request that carries it
under another login: events (`queue/join`, `run`, `call`), `queue/data`, `heartbeat`, `cancel`.

Arguments: Gradio ignores extra arguments and fails with a bare 500 (logging what was sent) on missing ones. The
gate checks every call, API or page event, against its function: exactly as many arguments as it takes, each of
its type (integers, booleans, strings of at most MAX_TEXT characters or a text box's max_length, a dropdown's own
choices), and refuses anything else with 422 in Gradio's validation shape (`gradio_client` raises `ValidationError`
with the message) plus an "error" line for plain HTTP. A request on another login's session is refused (403) before
its arguments are looked at. By name, `run`/`call` serve only the public API (next, vote, undo); a page event is
called by its fn_index, through `run/predict` when it is off the queue (ours are: one POST, no event stream).

It also tells the login check (labeler.users) the client's address, for its per-address limit on failures, serves
our own login page (labeler/page.py: a sentence for every refusal) to anyone not logged in under `--auth`, and,
without `--auth`, refuses requests relayed by a proxy (X-Forwarded-For, Forwarded, X-Real-IP): a loopback-only
server behind a public proxy would otherwise serve everyone without a login.
An ASGI middleware (`launch(app_kwargs={"middleware": [Middleware(Gate)]})`), so it runs before Gradio parses
anything.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from urllib.parse import parse_qs

from gradio.utils import get_function_params

from labeler.page import login_page
from labeler.users import CLIENT_ADDRESS

API = "/gradio_api/"
MAX_BODY = 64 * 1024  # an event or API call is a few hundred bytes; uploads have their own route
MAX_SESSIONS = 100_000  # bound sessions remembered (oldest forgotten first)
MAX_TEXT = 256  # longest string any argument may carry (a text box with a max_length: that)
FOREIGN = "this page session belongs to another login: reload the page"
PROXY_HEADERS = {b"x-forwarded-for", b"forwarded", b"x-real-ip"}
NO_LOGINS_BEHIND_A_PROXY = ("this labeling server has no logins, so it serves only its own machine, not requests "
                            "relayed by a proxy: start it with --auth users.json to serve people through one")


class Gate:
    """ASGI middleware; `app` is the Gradio app below it."""

    def __init__(self, app):
        self.app = app
        self.owners: OrderedDict[str, str] = OrderedDict()  # session_hash -> login
        self.signatures: dict[int, list[tuple[str, object]]] = {}  # fn id -> [(argument name, check)]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        auth = getattr(scope.get("app"), "auth", None) is not None
        if not auth and any(name in PROXY_HEADERS for name, _ in scope.get("headers", [])):
            return await respond(send, 403, NO_LOGINS_BEHIND_A_PROXY)  # loopback-only must not mean "the world"
        if API not in scope["path"]:
            if (scope["path"] in ("", "/") and scope["method"] in ("GET", "HEAD") and auth
                    and login_of(scope) is None):
                expired = "expired=1" in scope.get("query_string", b"").decode()
                return await respond_html(send, login_page(expired), head=scope["method"] == "HEAD")
            address = CLIENT_ADDRESS.set((scope.get("client") or (None,))[0])  # for the login check's limits
            try:
                return await self.app(scope, receive, send)
            finally:
                CLIENT_ADDRESS.reset(address)
        route = scope["path"].split(API, 1)[1].strip("/")
        user = login_of(scope)
        if user is None and getattr(scope.get("app"), "auth", None) is not None:
            return await self.app(scope, receive, send)  # not logged in: Gradio answers 401 and runs nothing
        session = None
        if route == "queue/data":
            session = parse_qs(scope.get("query_string", b"").decode()).get("session_hash", [None])[0]
        elif route.startswith(("heartbeat/", "stream/")):
            session = route.split("/")[1]
        elif scope["method"] == "POST" and route.split("/")[0] in ("queue", "run", "api", "call", "cancel"):
            body = await read_body(receive)
            if body is None:
                return await respond(send, 413, f"request body over {MAX_BODY} bytes")
            receive = replay(body, receive)
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
                refusal = self.check_call(scope["app"].get_blocks(), route, payload)
                if refusal is not None:
                    return await respond(send, *refusal)
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
            self.signatures[fn._id] = [(names[i], value_check(block, optional[i])) for i, block in enumerate(fn.inputs)]
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


def value_check(block, optional: bool):
    """A check of one argument for the input component `block`: returns what is wrong, or None."""
    kind = type(block).__name__
    if kind == "Api":  # gr.api: the JSON schema Gradio derived from the type hint
        kind = {"integer": "int", "string": "str"}.get(getattr(block, "_api_info", {}).get("type"), "any")
    choices = [value for _, value in getattr(block, "choices", None) or []]
    longest = getattr(block, "max_length", None) or MAX_TEXT  # a text box may allow more (a comment)

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
