"""Annotator logins for `vrlhf label --auth FILE`: a JSON file of bcrypt password hashes and roles, and the login check.

    vrlhf annotators add alice --file users.json            # prompts for the password
    echo s3cret | vrlhf annotators add bob --password-stdin
    vrlhf annotators add lead --admin                       # an admin also sees Stats and exports
    vrlhf annotators list --file users.json

The file: {"users": {"alice": {"hash": "$2b$12$..."}, "lead": {"hash": "...", "admin": true}}}.

The check (`authenticator`) is what Gradio's login route awaits. Gradio calls it on the server's event loop, so
bcrypt runs in a one-thread pool of its own: a flood of wrong passwords takes at most one core and never stalls
the votes. Unknown names are checked against a dummy hash of the same cost, every failed login answers
`fail_seconds` after it arrived, and failures are limited per client address and per name (`LoginPolicy`). The
limit on a name never locks its owner out: it shuts the name only to the addresses that failed on it, so wrong
passwords from elsewhere cannot keep a colleague from logging in.
"""

from __future__ import annotations

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
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from labeler.store import LabelError, check_name
from vrlhf.config import parse_config

# The client address of the request being served, set by labeler.gate (Gradio hands the check only name and password).
CLIENT_ADDRESS: ContextVar[str | None] = ContextVar("client_address", default=None)


@dataclass
class LoginPolicy:
    """How failed logins are slowed and limited; a failure counts for `window` seconds.

    A name with `per_user` recent failures is refused only to the addresses that failed on it: its owner, from an
    address that has not, still gets a password check (an attacker cannot lock a colleague out), while a guesser
    gets `per_user` tries from one address and then one more from each new address, each address also capped at
    `per_address` failures on all names."""

    fail_seconds: float = 1.0  # every failed or refused login answers this long after it arrived (no timing oracle)
    per_user: int = 5  # failures on one name before the addresses that failed on it are refused that name
    per_address: int = 30  # failures from one client address, on any names, before that address is refused
    window: float = 300.0  # seconds a failure counts toward the limits


class FailedLogins:
    """Recent failures per key ("user:NAME" or "address:IP"), each a (time, source) entry (the source: the address
    a name's failure came from), forgotten after `window` seconds."""

    def __init__(self, window: float, max_keys: int = 100_000):
        self.window, self.max_keys = window, max_keys
        self.entries: dict[str, deque] = {}

    def count(self, key: str, now: float, source: str | None = None) -> int:
        """Failures on `key` in the window (only those from `source`, when it is given)."""
        entries = self.entries.get(key)
        while entries and entries[0][0] <= now - self.window:
            entries.popleft()
        if entries is not None and not entries:
            del self.entries[key]
        return sum(1 for _, s in entries or () if source is None or s == source)

    def add(self, key: str, now: float, source: str | None = None) -> None:
        self.entries.setdefault(key, deque()).append((now, source))
        while len(self.entries) > self.max_keys:  # a spray of names: memory stays bounded, the oldest keys go first
            del self.entries[next(iter(self.entries))]

    def remove(self, key: str, when: float, source: str | None = None) -> None:
        entries = self.entries.get(key)
        if entries and (when, source) in entries:
            entries.remove((when, source))

    def forget(self, key: str, source: str | None) -> None:
        """Drop the failures on `key` from `source` (a login's own typos, once it succeeds)."""
        if key in self.entries:
            self.entries[key] = deque(e for e in self.entries[key] if e[1] != source)


def read_users(path: str | os.PathLike) -> dict[str, dict]:
    """{name: {"hash": bcrypt hash, "admin": bool}} from a users file; a missing or malformed file is an error
    naming the file (and the user whose entry is malformed)."""
    try:
        users = json.loads(Path(path).read_text())["users"]
        if not isinstance(users, dict):
            raise TypeError("'users' is not a mapping of names to entries")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LabelError(f"cannot read users file {path}: {e}") from None
    out = {}
    for name, entry in users.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("hash"), str):
            raise LabelError(f"users file {path}: user {name!r} has no password hash (add them again)")
        if not isinstance(entry.get("admin", False), bool):
            raise LabelError(f"users file {path}: user {name!r}: 'admin' must be true or false")
        out[name] = {"hash": entry["hash"], "admin": entry.get("admin", False)}
    return out


def load_users(path: str | os.PathLike) -> dict[str, str]:
    """{name: bcrypt hash} from a users file; a missing or malformed file is an error."""
    return {name: entry["hash"] for name, entry in read_users(path).items()}


class Roles:
    """Who is an admin, from the users file, re-read when it changes (promoting someone needs no restart).
    Without a users file (loopback-only, no logins) the one local user is admin."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = None if path is None else Path(path)
        self.mtime, self.admins = None, set()

    def is_admin(self, name: str | None) -> bool:
        if self.path is None:
            return True
        try:
            mtime = self.path.stat().st_mtime
            if mtime != self.mtime:
                self.admins = {n for n, e in read_users(self.path).items() if e["admin"]}
                self.mtime = mtime
        except (OSError, LabelError):  # unreadable right now (being replaced): keep what we knew
            pass
        return name in self.admins


def add_user(path: str | os.PathLike, name: str, password: str, rounds: int = 12, admin: bool = False) -> None:
    """Add `name` to the users file (or set their password and role): `admin` may see Stats and export."""
    name = check_name(name)
    if len(password) < 4:
        raise LabelError("password must be at least 4 characters")
    path = Path(path)
    data = {"users": {n: ({"hash": e["hash"], "admin": True} if e["admin"] else {"hash": e["hash"]})
                      for n, e in read_users(path).items()}} if path.exists() else {"users": {}}
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()
    data["users"][name] = {"hash": hashed} | ({"admin": True} if admin else {})
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

    def refused(name: str, address: str | None, now: float) -> bool:
        """The address is over its limit, or the name is and this address has failed on it."""
        if address and failures.count(f"address:{address}", now) >= policy.per_address:
            return True
        here = failures.count(f"user:{name}", now, address)
        return here >= policy.per_user or (here > 0 and failures.count(f"user:{name}", now) >= policy.per_user)

    async def check(username: str, password: str) -> bool:
        start = time.monotonic()
        address = CLIENT_ADDRESS.get()
        if refused(username, address, start):
            await answer_after(start)
            raise HTTPException(429, "too many failed logins: wait a few minutes and try again")
        # Counted as failed until it succeeds, so concurrent guesses cannot overrun the limits.
        failures.add(f"user:{username}", start, address)
        if address:
            failures.add(f"address:{address}", start)
        ok = await asyncio.get_running_loop().run_in_executor(checker, verify, username, password)
        if ok:
            failures.forget(f"user:{username}", address)  # this address's typos on the name; others' stay
            failures.remove(f"address:{address}", start)  # the address keeps its earlier failures
            return True
        await answer_after(start)
        return False

    users()
    checker.submit(dummy_hash, users())  # computed ahead, off the event loop
    return check


@dataclass
class AddConfig:
    name: str = field(metadata={"help": "the annotator's login name (given first: vrlhf annotators add NAME)"})
    file: str = field(default="users.json", metadata={"help": "users file to create or update"})
    admin: bool = field(default=False, metadata={"help": "an admin also sees Stats, agreement and disagreements, "
                                                         "and exports (without it: an annotator)"})
    password_stdin: bool = field(default=False, metadata={"help": "read the password from stdin, not a prompt"})
    rounds: int = field(default=12, metadata={"help": "bcrypt cost factor"})


@dataclass
class ListConfig:
    file: str = field(default="users.json", metadata={"help": "users file to read"})


USAGE = "usage: vrlhf annotators add NAME [--admin] [--file users.json] | vrlhf annotators list [--file users.json]"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command in ("-h", "--help"):
        print(USAGE)
        return 0
    if command == "list":
        cfg = parse_config(ListConfig, rest, prog="vrlhf annotators list")
        for name, entry in sorted(read_users(cfg.file).items()):
            print(f"{name} (admin)" if entry["admin"] else name)
        return 0
    if command != "add":
        raise LabelError(f"unknown sub-command {command!r}; {USAGE}" if command else USAGE)
    if rest and not rest[0].startswith("-"):  # the name comes first, as a positional
        rest = ["--name", rest[0], *rest[1:]]
    elif not any(a == "--name" or a.startswith("--name=") for a in rest) and not {"-h", "--help"} & set(rest):
        raise LabelError(f"give the annotator's name first; {USAGE}")
    cfg = parse_config(AddConfig, rest, prog="vrlhf annotators add")
    if cfg.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {cfg.name}: ")
        if password != getpass.getpass("again: "):
            raise LabelError("passwords differ")
    add_user(cfg.file, cfg.name, password, cfg.rounds, cfg.admin)
    print(f"added {cfg.name} to {cfg.file} as {'an admin' if cfg.admin else 'an annotator'}")
    return 0


if __name__ == "__main__":
    from vrlhf.errors import run_command

    sys.exit(run_command("vrlhf annotators", main))
