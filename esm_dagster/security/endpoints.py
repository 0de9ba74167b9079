"""Where provider calls may go: https anywhere, plain http only to loopback (the emulators).

The full policy (DNS pinning, private ranges, allowlists) is the security issue's; this keeps
the one rule every request already needs: a credential is never sent in clear text over a network.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


class EndpointRefused(ValueError):
    pass


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str, *, mapping: str = "?") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise EndpointRefused(f"mapping {mapping}: api_endpoint {url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise EndpointRefused(f"mapping {mapping}: api_endpoint must not carry credentials; use the vault")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise EndpointRefused(
            f"mapping {mapping}: api_endpoint {parts.scheme}://{parts.hostname} must use https "
            "(plain http is allowed only to loopback, for the local emulators)"
        )
    return url.rstrip("/")
