"""One-time downloads: a file the app made for one person (an export zip), served once and then deleted.

The export handler puts its zip in a folder of its own and registers it (`Downloads.add`); the page gets a link
`labeler/download/<token>`. The first GET of that link by the same login opens the file, removes it and its folder
from disk, and streams it from the open handle (the bytes go when the handle closes); a second GET, another login,
or a link older than `lifetime` seconds gets 404 and a sentence. Unfetched files are deleted when their time is up
and when the server stops, so exports never pile up on the server. An ASGI middleware (like labeler/gate.py), so
the file never passes through Gradio's cache.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import quote

from labeler.gate import login_of

ROUTE = "/labeler/download/"
CHUNK = 1 << 20


class Downloads:
    """Registered files: token -> (path, owner login or None, deadline)."""

    def __init__(self, lifetime: float = 600.0):
        self.lifetime = lifetime
        self.files: dict[str, tuple[Path, str | None, float]] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        threading.Thread(target=self._sweeper, daemon=True, name="downloads-sweeper").start()
        atexit.register(self.close)

    def add(self, path: Path, owner: str | None) -> str:
        """Register `path` (alone in its folder, which goes with it) for one download by `owner`; returns a token."""
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.files[token] = (Path(path), owner, time.monotonic() + self.lifetime)
        return token

    def take(self, token: str, login: str | None) -> Path | None:
        """The file of `token` if `login` may fetch it (once), else None."""
        with self.lock:
            entry = self.files.get(token)
            if entry is None or entry[1] != login or entry[2] < time.monotonic():
                return None
            del self.files[token]
            return entry[0]

    def sweep(self, everything: bool = False) -> None:
        now = time.monotonic()
        with self.lock:
            gone = [t for t, (_, _, deadline) in self.files.items() if everything or deadline < now]
            paths = [self.files.pop(t)[0] for t in gone]
        for path in paths:
            remove(path)

    def _sweeper(self) -> None:
        while not self.stopped.wait(min(30.0, max(0.5, self.lifetime / 4))):
            self.sweep()

    def close(self) -> None:
        self.stopped.set()
        self.sweep(everything=True)


def remove(path: Path) -> None:
    """Delete a served or expired file and the folder it was made in."""
    shutil.rmtree(path.parent, ignore_errors=True)


class DownloadRoute:
    """ASGI middleware serving `ROUTE<token>` from `downloads`; every other request passes on to `app`."""

    def __init__(self, app, downloads: Downloads):
        self.app, self.downloads = app, downloads

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(ROUTE) or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        auth = getattr(scope.get("app"), "auth", None) is not None
        path = self.downloads.take(scope["path"][len(ROUTE):], login_of(scope) if auth else None)
        if path is None or not path.is_file():
            body = b"This download link was already used or has expired: export again from the Stats tab.\n"
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            return await send({"type": "http.response.body", "body": body})
        with open(path, "rb") as f:  # opened, then unlinked: its name is gone at once, its bytes when we close it
            size = os.fstat(f.fileno()).st_size
            remove(path)
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/zip"), (b"content-length", str(size).encode()),
                (b"content-disposition", f"attachment; filename*=UTF-8''{quote(path.name)}".encode()),
                (b"cache-control", b"no-store")]})
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
