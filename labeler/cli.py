"""`vrlhf label`: its flags, checked before the app loads (Gradio takes seconds to import), so a mistyped flag is
refused in about a second. The app itself is labeler/app.py.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from labeler.guides import load_guidelines
from vrlhf.config import check_port, parse_config
from vrlhf.errors import LabelError

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, auth: bool) -> None:
    """Without logins only loopback hosts are served (the app's one local user is admin)."""
    if not auth and not is_loopback(host):
        raise LabelError(f"refusing to serve {host} without --auth: only loopback hosts may skip logins")


def check_proxies(proxies: list[str], auth: bool) -> str:
    """`--trusted_proxies` checked (addresses or networks; only with --auth: a server without logins refuses
    requests relayed by a proxy); the value of uvicorn's FORWARDED_ALLOW_IPS ("": trust nobody's header)."""
    if proxies and not auth:
        raise LabelError("--trusted_proxies needs --auth: a server without logins refuses requests a proxy relays")
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise LabelError(f"--trusted_proxies {proxy}: not an IP address or network (e.g. 10.0.0.2 or "
                             "10.0.0.0/24)") from None
    return ",".join(proxies)


@dataclass
class LabelConfig:
    db: str = field(metadata={"help": "database: a SQLite file path or a SQLAlchemy URL (postgresql://...: several "
                                      "app servers may share it)"})
    media: str | None = field(default=None, metadata={"help": "directory of rendered PNGs (default: beside the "
                                                              "SQLite file; needed with PostgreSQL)"})
    host: str = field(default="127.0.0.1", metadata={"help": "interface to bind; non-loopback needs --auth"})
    port: int = field(default=7860, metadata={"help": "port to serve on (0: any free port)"})
    auth: str | None = field(default=None, metadata={"help": "users file from `vrlhf annotators add`: require "
                                                             "logins (admins: --admin)"})
    guidelines: list[str] = field(default_factory=list, metadata={
        "help": "Markdown guidelines shown to annotators: FILE.md for every task, or TASK=FILE.md per task "
                "(repeat the flag or list several)"})
    overlap: int = field(default=1, metadata={"help": "distinct annotators per overlapped comparison (every server "
                                                      "on one database needs the same)"})
    overlap_fraction: float = field(default=1.0, metadata={"help": "fraction of comparisons that get --overlap "
                                                                   "annotators (the rest get one)"})
    lease_seconds: float = field(default=600.0, metadata={"help": "how long a shown comparison stays reserved "
                                                                  "before it returns to the queue"})
    poll_seconds: float = field(default=10.0, metadata={"help": "how often a page with nothing left checks for new "
                                                                "rounds and lapsed reservations"})
    idle_seconds: float = field(default=180.0, metadata={"help": "a page left this long without a key, click or "
                                                                 "scroll pauses and gives its reservations back "
                                                                 "(0: never)"})
    trusted_proxies: list[str] = field(default_factory=list, metadata={
        "help": "addresses or networks of your reverse proxies (e.g. 10.0.0.2): only requests from them may name "
                "the client in X-Forwarded-For, which the per-address login limit counts (default: none)"})


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(LabelConfig, argv, prog="vrlhf label")
    check_host(cfg.host, cfg.auth is not None)  # the rule first: a public host without --auth is never tried
    check_port(cfg.port, cfg.host)  # out of range, or taken: one line naming --port, before anything loads
    check_proxies(cfg.trusted_proxies, cfg.auth is not None)
    guidelines = load_guidelines(cfg.guidelines)  # a bad file fails before the database is touched
    from labeler.app import free_port, serve  # Gradio: seconds to import, so only once the flags are good
    from labeler.store import Store

    store = Store(cfg.db, media=cfg.media, overlap=cfg.overlap, overlap_fraction=cfg.overlap_fraction,
                  lease_seconds=cfg.lease_seconds)
    serve(store, cfg.host, cfg.port or free_port(cfg.host), cfg.auth, guidelines=guidelines,
          poll_seconds=cfg.poll_seconds, trusted_proxies=cfg.trusted_proxies, idle_seconds=cfg.idle_seconds)
    return 0
