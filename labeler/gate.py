"""The HTTP gate in front of Gradio: page sessions bound to their login, checked before Gradio sees a request.

Gradio takes the page session id (`session_hash`) from the request itself, so anyone logged in could send events,
read the event stream or drop the heartbeat of another person's page. Under `--auth` the gate binds each session
id to the login that used it first and refuses (403, nothing reaches Gradio) any request that carries it under
another login: events (`queue/join`, `run`, `call`), `queue/data`, `heartbeat`, `cancel`.

It also tells the login check (labeler.users) the client's address, for its per-address limit on failures.
An ASGI middleware (`launch(app_kwargs={"middleware": [Middleware(Gate)]})`), so it runs before Gradio parses
anything.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from urllib.parse import parse_qs

from labeler.users import CLIENT_ADDRESS

API = "/gradio_api/"
MAX_BODY = 64 * 1024  # an event or API call is a few hundred bytes; uploads have their own route
MAX_SESSIONS = 100_000  # bound sessions remembered (oldest forgotten first)


class Gate:
    """ASGI middleware; `app` is the Gradio app below it."""

    def __init__(self, app):
        self.app = app
        self.owners: OrderedDict[str, str] = OrderedDict()  # session_hash -> login

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if API not in scope["path"]:
            address = CLIENT_ADDRESS.set((scope.get("client") or (None,))[0])  # for the login check's limits
            try:
                return await self.app(scope, receive, send)
            finally:
                CLIENT_ADDRESS.reset(address)
        route = scope["path"].split(API, 1)[1].strip("/")
        user = login_of(scope)
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
            session = payload.get("session_hash") if isinstance(payload, dict) else None
        if session is not None and user is not None and not self.bind(str(session), user):
            return await respond(send, 403, "this page session belongs to another login: reload the page")
        return await self.app(scope, receive, send)

    def bind(self, session: str, user: str) -> bool:
        """True when `session` is (now) bound to `user`; False when another login holds it."""
        owner = self.owners.get(session)
        if owner is None:
            self.owners[session] = user
            if len(self.owners) > MAX_SESSIONS:
                self.owners.popitem(last=False)
            return True
        return owner == user


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


async def respond(send, status: int, message: str) -> None:
    """A refusal in Gradio's own error shape: {"error": "one line"}."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
