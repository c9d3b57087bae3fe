"""`vrlhf label`: its flags, checked before the app loads (Gradio takes seconds to import), so a mistyped flag is
refused in about a second. The app itself is labeler/app.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labeler.guides import load_guidelines
from labeler.hosts import check_host, check_proxies
from vrlhf.config import check_port, parse_config


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
