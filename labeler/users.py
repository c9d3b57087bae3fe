"""Annotator logins for `vrlhf label --auth FILE`: a JSON file of bcrypt password hashes, and the login check.

    vrlhf annotators add alice --file users.json            # prompts for the password
    echo s3cret | vrlhf annotators add bob --password-stdin

The check (`authenticator`) is what Gradio's login route awaits. Gradio calls it on the server's event loop, so
bcrypt runs in a one-thread pool of its own: a flood of wrong passwords takes at most one core and never stalls
the votes. Unknown names are checked against a dummy hash of the same cost, every failed login answers
`fail_seconds` after it arrived, and failures are limited per name and per client address (`LoginPolicy`).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import secrets
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from labeler.store import LabelError, check_name

# The client address of the request being served, set by labeler.gate (Gradio hands the check only name and password).
CLIENT_ADDRESS: ContextVar[str | None] = ContextVar("client_address", default=None)


@dataclass
class LoginPolicy:
    """How failed logins are slowed and limited; a failure counts for `window` seconds."""

    fail_seconds: float = 1.0  # every failed or refused login answers this long after it arrived (no timing oracle)
    per_user: int = 5  # failures on one name, from any address, before that name is refused for the window
    per_address: int = 30  # failures from one client address, on any names, before that address is refused
    window: float = 300.0  # seconds a failure counts toward the limits


class FailedLogins:
    """Times of recent failures per key ("user:NAME" or "address:IP"), forgotten after `window` seconds."""

    def __init__(self, window: float, max_keys: int = 100_000):
        self.window, self.max_keys = window, max_keys
        self.times: dict[str, deque] = {}

    def count(self, key: str, now: float) -> int:
        times = self.times.get(key)
        while times and times[0] <= now - self.window:
            times.popleft()
        if times is not None and not times:
            del self.times[key]
        return len(times or ())

    def add(self, key: str, now: float) -> None:
        self.times.setdefault(key, deque()).append(now)
        while len(self.times) > self.max_keys:  # a spray of names: memory stays bounded, the oldest keys go first
            del self.times[next(iter(self.times))]

    def remove(self, key: str, when: float) -> None:
        times = self.times.get(key)
        if times and when in times:
            times.remove(when)

    def forget(self, key: str) -> None:
        self.times.pop(key, None)


def load_users(path: str | os.PathLike) -> dict[str, str]:
    """{name: bcrypt hash} from a users file; a missing or malformed file is an error."""
    try:
        users = json.loads(Path(path).read_text())["users"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LabelError(f"cannot read users file {path}: {e}") from None
    return {name: entry["hash"] for name, entry in users.items()}


def add_user(path: str | os.PathLike, name: str, password: str, rounds: int = 12) -> None:
    name = check_name(name)
    if len(password) < 4:
        raise LabelError("password must be at least 4 characters")
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {"users": {}}
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()
    data["users"][name] = {"hash": hashed}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, 0o600)  # hashes only, but still nobody else's business
    os.replace(tmp, path)


def authenticator(path: str | os.PathLike, policy: LoginPolicy | None = None):
    """The async `(username, password) -> bool` check for Gradio's `launch(auth=...)`.

    Re-reads the users file when it changes. A refused attempt (name or address over its limit) raises HTTP 429
    without a password check; a failed one returns False; both answer `policy.fail_seconds` after arrival.
    """
    from fastapi import HTTPException

    policy = policy or LoginPolicy()
    failures = FailedLogins(policy.window)
    checker = ThreadPoolExecutor(1, thread_name_prefix="bcrypt")  # one core at most, whatever arrives
    cache: dict = {"mtime": None, "users": {}, "dummy": {}}

    def users() -> dict[str, str]:
        mtime = Path(path).stat().st_mtime
        if mtime != cache["mtime"]:
            cache["users"], cache["mtime"] = load_users(path), mtime
        return cache["users"]

    def dummy_hash(known: dict[str, str]) -> bytes:
        """A hash of a random password at the users' (highest) cost: unknown names cost the same check."""
        costs = [h.split("$")[2] for h in known.values() if h.count("$") >= 3]
        cost = max((int(c) for c in costs if c.isdigit()), default=12)
        if cost not in cache["dummy"]:
            cache["dummy"][cost] = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))
        return cache["dummy"][cost]

    def verify(username: str, password: str) -> bool:
        known = users()
        hashed = known[username].encode() if username in known else dummy_hash(known)
        try:
            return bcrypt.checkpw(password.encode()[:72], hashed) and username in known
        except ValueError:  # a malformed hash in the users file: nobody logs in with it
            return False

    async def answer_after(start: float) -> None:
        await asyncio.sleep(max(0.0, start + policy.fail_seconds - time.monotonic()))

    async def check(username: str, password: str) -> bool:
        start = time.monotonic()
        address = CLIENT_ADDRESS.get()
        keys = [f"user:{username}"] + ([f"address:{address}"] if address else [])
        limits = [policy.per_user, policy.per_address]
        if any(failures.count(key, start) >= limit for key, limit in zip(keys, limits)):
            await answer_after(start)
            raise HTTPException(429, "too many failed logins: wait a few minutes and try again")
        for key in keys:  # counted as failed until it succeeds, so concurrent guesses cannot overrun the limit
            failures.add(key, start)
        ok = await asyncio.get_running_loop().run_in_executor(checker, verify, username, password)
        if ok:
            failures.forget(keys[0])  # the name's own failures; the address keeps its count
            failures.remove(keys[-1], start)
            return True
        await answer_after(start)
        return False

    users()
    checker.submit(dummy_hash, users())  # computed ahead, off the event loop
    return check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vrlhf annotators", description="Manage annotator logins.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="add an annotator or change their password")
    add.add_argument("name", help="the annotator's login name")
    add.add_argument("--file", default="users.json", help="users file to create or update (default users.json)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin, not a prompt")
    add.add_argument("--rounds", type=int, default=12, help="bcrypt cost factor (default 12)")
    ls = sub.add_parser("list", help="list annotator names")
    ls.add_argument("--file", default="users.json", help="users file to read (default users.json)")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        print("\n".join(sorted(load_users(args.file))))
        return 0
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if password != getpass.getpass("again: "):
            raise LabelError("passwords differ")
    add_user(args.file, args.name, password, args.rounds)
    print(f"added {args.name} to {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
