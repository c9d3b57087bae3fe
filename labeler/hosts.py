"""Where the labeling app may listen and whose forwarded addresses it believes: the rules that `vrlhf label`'s flag
check (labeler/cli.py, before Gradio loads) and `serve` (labeler/app.py, for callers that skip the CLI) both apply."""

from __future__ import annotations

import ipaddress

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
