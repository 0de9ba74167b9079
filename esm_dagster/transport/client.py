"""The one place a provider's `httpx.Client` is built: endpoint policy, address pinning and TLS.

Every provider gets its client from `provider_client`, so the rules hold for all of them alike:

- each request's URL meets the mapping's `EndpointPolicy` (https, no user info, no refused
  literal address), redirects included should anyone ever follow one;
- each new connection resolves the host once, checks every address (`check_connect`) and connects
  to a checked address itself, while TLS still verifies the certificate against the *name* (SNI
  and the Host header stay the name). There is no second lookup between check and connect for a
  rebinding DNS server to answer differently;
- TLS verification is always on: the public CAs (certifi), or the mapping's / installation's CA
  bundle (`sync_config.ca_bundle`, `ESM_CA_BUNDLE`) instead; a certificate that does not verify
  is a non-retryable `client` error that says which setting to look at;
- no environment proxy (`trust_env=False`): a proxy mounted from `HTTPS_PROXY` would bypass the
  pinned transport.

A refusal surfaces as a `ProviderError` (`client`, code `endpoint_refused`, not retryable), raised
outside any `except` block so no httpx exception (whose request holds the credential) is chained.
"""

from __future__ import annotations

import functools
import os
import ssl
import typing
from collections.abc import Iterable

import certifi
import httpcore
import httpx

from esm_dagster.providers.base import ProviderError
from esm_dagster.security.endpoints import CA_BUNDLE_ENV, EndpointPolicy, EndpointRefused
from esm_dagster.security.secret import Secret

if typing.TYPE_CHECKING:
    from esm_dagster.transport.policy import TransportPolicy

DEFAULT_LIMITS = httpx.Limits(max_keepalive_connections=4, max_connections=8)


class TlsConfigError(ValueError):
    """The configured CA bundle cannot be used (missing, unreadable, not PEM)."""


def tls_context(ca_bundle: str | None, *, mapping: str = "?") -> ssl.SSLContext:
    """A verifying context: hostname checked, certificate required, TLS 1.2 or newer.

    Loading a CA bundle costs ~40 ms, once per client built (every run, probe and sensor tick):
    contexts are shared per bundle file, keyed by its path, size and modification time, so a
    replaced bundle is read again. A context is not changed after it is built, so sharing it
    between clients and threads is safe.
    """
    path = ca_bundle or certifi.where()
    try:
        stat = os.stat(path)
        return _context_for(path, stat.st_size, stat.st_mtime_ns)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"mapping {mapping}: CA bundle {ca_bundle!r} (sync_config.ca_bundle or {CA_BUNDLE_ENV}) "
            f"cannot be loaded ({type(exc).__name__})"
        ) from None


@functools.lru_cache(maxsize=32)
def _context_for(path: str, size: int, mtime_ns: int) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=path)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class PinningBackend(httpcore.NetworkBackend):
    """Opens TCP connections only to addresses the policy checked, resolving each name once."""

    def __init__(self, endpoints: EndpointPolicy) -> None:
        self.endpoints = endpoints
        self._tcp = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self.endpoints.check_connect(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                return self._tcp.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None  # check_connect returns at least one address
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise EndpointRefused("unix sockets are not provider endpoints")

    def sleep(self, seconds: float) -> None:
        self._tcp.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport on a `PinningBackend`, with every request URL checked first."""

    def __init__(
        self,
        endpoints: EndpointPolicy,
        *,
        provider: str,
        secrets: Iterable[Secret] = (),
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        context = tls_context(endpoints.ca_bundle, mapping=endpoints.mapping)
        super().__init__(verify=context, limits=limits, trust_env=False)
        # httpx builds its pool without a way to pass a network backend; this pool is configured
        # as httpx configures its own, plus the backend (tests prove the pin is in effect).
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinningBackend(endpoints),
        )
        self.endpoints = endpoints
        self.provider = provider
        self._secrets = tuple(secrets)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        failure: ProviderError | None = None
        try:
            self.endpoints.check_url(str(request.url), what="request URL")
            return super().handle_request(request)
        except EndpointRefused as exc:
            failure = self._error(str(exc), "endpoint_refused", request)
        except httpx.ConnectError as exc:
            reason = _certificate_problem(exc)
            if reason is None:
                raise
            failure = self._error(
                f"TLS certificate of {request.url.host} is not trusted ({reason}); verification "
                f"is always on: configure the issuing CA in sync_config.ca_bundle or {CA_BUNDLE_ENV}",
                "tls_untrusted",
                request,
            )
        raise failure

    def _error(self, message: str, code: str, request: httpx.Request) -> ProviderError:
        return ProviderError(
            message,
            provider=self.provider,
            error_class="client",
            code=code,
            retryable=False,
            method=request.method,
            url=str(request.url),
            secrets=self._secrets,
        )


def _certificate_problem(exc: BaseException) -> str | None:
    """The verification message when `exc` was caused by an untrusted certificate, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or "certificate verify failed"
        seen = seen.__cause__ or seen.__context__
    return None


def provider_client(
    provider: str,
    policy: TransportPolicy,
    *,
    secrets: Iterable[Secret] = (),
    limits: httpx.Limits = DEFAULT_LIMITS,
) -> httpx.Client:
    """The client a provider sends through: `policy.endpoints` (else the installation's settings)."""
    endpoints = policy.endpoints if policy.endpoints is not None else EndpointPolicy.from_env()
    return httpx.Client(
        transport=GuardedTransport(endpoints, provider=provider, secrets=secrets, limits=limits),
        timeout=httpx.Timeout(policy.timeout_seconds),
        follow_redirects=False,  # a redirect must not carry the credential anywhere
        trust_env=False,
    )


def followed_url_problem(policy: TransportPolicy, url: str) -> str | None:
    """Why an absolute URL a provider handed back (a next page) may not be followed, or None."""
    endpoints = policy.endpoints if policy.endpoints is not None else EndpointPolicy.from_env()
    try:
        endpoints.check_url(url, what="next-page URL")
    except EndpointRefused as exc:
        return str(exc)
    return None
