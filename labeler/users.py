"""Annotator logins for `vrlhf label --auth FILE`: a JSON file of bcrypt password hashes.

    vrlhf annotators add alice --file users.json            # prompts for the password
    echo s3cret | vrlhf annotators add bob --password-stdin
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

import bcrypt

from labeler.store import LabelError, check_name


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


def authenticator(path: str | os.PathLike):
    """A `(username, password) -> bool` check for Gradio's `launch(auth=...)`; re-reads the file when it changes."""
    cache: dict = {"mtime": None, "users": {}}

    def check(username: str, password: str) -> bool:
        mtime = Path(path).stat().st_mtime
        if mtime != cache["mtime"]:
            cache["users"], cache["mtime"] = load_users(path), mtime
        hashed = cache["users"].get(username)
        return hashed is not None and bcrypt.checkpw(password.encode()[:72], hashed.encode())

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
