"""Where provider calls may go: the endpoint policy (https only, SSRF guard, allowlists).

A mapping's `api_endpoint` is written by a person and followed by a process that holds the
mapping's credential, inside the network of the machine running it. Without a policy a row can
point that process at the cloud metadata service, an internal admin port or a database, and the
credential goes with it. So:

- `api_endpoint` is https. Plain http, and loopback at all, only in sandbox mode
  (`ESM_ALLOW_LOOPBACK=1`, which the demo, the tests and the emulator instructions set): the local
  emulators are the only legitimate loopback peers, and production never needs one.
- A name is resolved and every address it resolves to is checked: private, loopback, link-local,
  shared (CGNAT), unspecified, multicast and reserved addresses are refused unless the host (or a
  network holding the address) is allowlisted: per mapping in `sync_config.allowed_hosts`, for
  the whole installation in `ESM_ALLOWED_HOSTS` (comma separated names, IPs or CIDR networks).
  The cloud metadata addresses are refused even when allowlisted: nothing a mapping syncs lives
  there, and they hand out the machine's own credentials.
- The check happens where the socket is opened (`transport.client`), on the very address
  connected to, so a DNS answer that changes between check and connect (rebinding) cannot slip
  through; a redirect (not followed anyway) or a next-page URL meets the same check.

Every refusal is reported through `security.audit_hook` as well as raised.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from esm_dagster.security.audit_hook import audit_event

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
ALLOW_LOOPBACK_ENV = "ESM_ALLOW_LOOPBACK"
ALLOWED_HOSTS_ENV = "ESM_ALLOWED_HOSTS"
CA_BUNDLE_ENV = "ESM_CA_BUNDLE"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses to connect to, in order; the seam tests point at a fake answer.
Resolver = Callable[[str, int], list[str]]

# AWS/GCP/Azure/OpenStack (IPv4), AWS (IPv6), Alibaba: instance metadata and its credentials.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not private, not global


class EndpointRefused(ValueError):
    """An endpoint the policy does not let a credential go to; the message says why and how to allow it."""


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answer for `host`, each address once, in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def address_kind(address: IPAddress) -> str | None:
    """Why `address` is not a public internet address ("private", "loopback", ...), or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    for kind, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    ):
        if flag:
            return kind
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "shared (CGNAT)"
    if not address.is_global:
        return "non-global"
    return None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def parse_allowed_hosts(
    entries: Iterable[str], *, source: str
) -> tuple[tuple[str, ...], tuple[IPNetwork, ...]]:
    """(lower-case host names, networks) of an allowlist; an entry that is neither is refused."""
    names: list[str] = []
    networks: list[IPNetwork] = []
    for raw in entries:
        entry = raw.strip().strip("[]").lower().rstrip(".")
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        labels = entry.split(".")
        if not all(label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels):
            raise EndpointRefused(f"{source}: {raw!r} is not a host name, an IP address or a CIDR network")
        names.append(entry)
    return tuple(names), tuple(networks)


@dataclass(frozen=True)
class EndpointPolicy:
    """The rules for one mapping's calls: built by `from_env` (installation settings + the mapping's)."""

    mapping: str = "?"
    allow_loopback: bool = False
    allowed_names: tuple[str, ...] = ()
    allowed_networks: tuple[IPNetwork, ...] = ()
    ca_bundle: str | None = None  # PEM file of the CAs to trust instead of the public ones
    resolver: Resolver = field(default=system_resolver, repr=False, compare=False)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        mapping: str = "?",
        allowed_hosts: Iterable[str] = (),
        ca_bundle: str | None = None,
        resolver: Resolver | None = None,
    ) -> EndpointPolicy:
        """`ESM_ALLOW_LOOPBACK`, `ESM_ALLOWED_HOSTS`, `ESM_CA_BUNDLE`, plus the mapping's own list and CA."""
        env = os.environ if environ is None else environ
        global_names, global_nets = parse_allowed_hosts(
            env.get(ALLOWED_HOSTS_ENV, "").split(","), source=ALLOWED_HOSTS_ENV
        )
        own_names, own_nets = parse_allowed_hosts(
            allowed_hosts, source=f"mapping {mapping}: sync_config.allowed_hosts"
        )
        return cls(
            mapping=mapping,
            allow_loopback=_truthy(env.get(ALLOW_LOOPBACK_ENV)),
            allowed_names=global_names + own_names,
            allowed_networks=global_nets + own_nets,
            ca_bundle=ca_bundle or env.get(CA_BUNDLE_ENV) or None,
            resolver=resolver or system_resolver,
        )

    # ---- checks ---------------------------------------------------------------------------------
    def refuse(self, problem: str, *, host: str | None = None) -> EndpointRefused:
        """The error for a refusal, reported to the audit hook on the way."""
        audit_event("endpoint_refused", mapping=self.mapping, outcome="refused", detail=problem, target=host)
        return EndpointRefused(f"mapping {self.mapping}: {problem}")

    def check_url(self, url: str, *, what: str = "api_endpoint") -> str:
        """`url` without a trailing slash if its form is allowed (scheme, no user info, literal
        addresses); names are resolved and checked when connecting (`check_connect`)."""
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise self.refuse(f"{what} {url!r} is not an http(s) URL")
        if parts.username or parts.password:
            raise self.refuse(f"{what} must not carry credentials; use the vault", host=parts.hostname)
        host = parts.hostname
        if parts.scheme == "http" and not (self.allow_loopback and is_loopback(host)):
            raise self.refuse(
                f"{what} http://{parts.netloc} must use https (plain http is allowed only to loopback, for the "
                f"local emulators, with {ALLOW_LOOPBACK_ENV}=1)",
                host=host,
            )
        if host.lower() in LOOPBACK_NAMES:
            self._check_address(host, ipaddress.ip_address("127.0.0.1"), what)
        else:
            try:
                literal = ipaddress.ip_address(host)
            except ValueError:
                literal = None
            if literal is not None:
                self._check_address(host, literal, what)
        return url.rstrip("/")

    def check_connect(self, host: str, port: int) -> list[str]:
        """The addresses of `host` a connection may use: all of them checked, or `EndpointRefused`.

        The caller connects to these addresses and no others (that is the pin).
        """
        host = host.strip("[]")
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                answer = self.resolver(host, port)
            except OSError as exc:
                raise self.refuse(f"{host} does not resolve ({type(exc).__name__})", host=host) from None
            addresses = self._parsed(host, answer)
        for address in addresses:
            self._check_address(host, address, "connection")
        return [str(a) for a in addresses]

    def _parsed(self, host: str, answer: list[str]) -> list[IPAddress]:
        addresses = []
        for text in answer:
            try:
                addresses.append(ipaddress.ip_address(text.split("%")[0]))
            except ValueError:
                raise self.refuse(f"{host} resolved to {text!r}, not an IP address", host=host) from None
        if not addresses:
            raise self.refuse(f"{host} resolves to no address", host=host)
        return addresses

    def _check_address(self, host: str, address: IPAddress, what: str) -> None:
        kind = address_kind(address)
        if kind is None:
            return
        shown = host if host.strip("[]") == str(address) else f"{host} ({address})"
        if kind == "cloud metadata":
            raise self.refuse(f"{what} to {shown}: cloud metadata addresses are always refused", host=host)
        if kind == "loopback" and self.allow_loopback:
            return
        if host.strip("[]").lower().rstrip(".") in self.allowed_names:
            return
        if any(address in network for network in self.allowed_networks):
            return
        hint = (
            f"set {ALLOW_LOOPBACK_ENV}=1 for the local emulators"
            if kind == "loopback"
            else f"allowlist the host in sync_config.allowed_hosts or {ALLOWED_HOSTS_ENV} if it is yours"
        )
        raise self.refuse(f"{what} to {shown} refused: {kind} address; {hint}", host=host)


def check_endpoint(url: str, *, mapping: str = "?", policy: EndpointPolicy | None = None) -> str:
    """`api_endpoint` checked for its form and literal addresses (no DNS: rows are written offline)."""
    return (policy or EndpointPolicy.from_env(mapping=mapping)).check_url(url)
