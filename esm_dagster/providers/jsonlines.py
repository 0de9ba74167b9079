"""Large JSON-lines answers read as a stream: Mixpanel's raw export, SendGrid's contact export files.

Such an answer can hold a week of events or every contact of an account; read whole it would make
memory grow with the size of the sync. Here it is read line by line while pages are handed out:
only the answer's headers go through the transport policy (a 429 or 5xx before any data is retried
as usual); a connection lost mid-body is a retryable `network` error, so the run checkpoints and
resumes from its last cursor instead of half-reading silently.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpx
import orjson

from esm_dagster.providers.base import ProviderError
from esm_dagster.providers.http import JsonHttpProvider, QueryValue

T = TypeVar("T")
_GZIP_MAGIC = b"\x1f\x8b"


def batches(items: Iterable[T], size: int) -> Iterator[tuple[list[T], bool]]:
    """`items` in lists of `size`, each with whether it is the last; at least one (maybe empty) list."""
    pending: list[T] | None = None
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            if pending is not None:
                yield pending, False
            pending, batch = batch, []
    if pending is None:
        yield batch, True
    elif batch:
        yield pending, False
        yield batch, True
    else:
        yield pending, True


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines of a byte stream, gunzipped on the fly when it starts with the gzip magic."""
    inflate: Any = None
    buffer = b""
    first = True
    for chunk in chunks:
        if first and chunk:
            first = False
            if chunk[:2] == _GZIP_MAGIC:
                inflate = zlib.decompressobj(wbits=31)
        if inflate is not None:
            chunk = inflate.decompress(chunk)
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from complete
    if inflate is not None:
        buffer += inflate.flush()
    if buffer:
        yield from buffer.split(b"\n")


class JsonLinesProvider(JsonHttpProvider):
    """A JSON provider that also reads JSON-lines answers as a stream (`stream_json_lines`)."""

    def stream_json_lines(
        self,
        url: str,
        *,
        params: Mapping[str, QueryValue] | None = None,
        authenticated: bool = True,
        what: str,
    ) -> tuple[Iterator[dict[str, Any]], float]:
        """The objects of the JSON-lines answer at `url` (absolute), and the seconds to its headers.

        `authenticated=False` sends no credential (a presigned download link on another host).
        """
        response, seconds = self.policy.call(lambda: self._open(url, params, authenticated), what=what)
        return self._objects(response, url), seconds

    def _open(
        self, url: str, params: Mapping[str, QueryValue] | None, authenticated: bool
    ) -> tuple[httpx.Response, float]:
        headers = dict(self._headers) if authenticated else {"User-Agent": self._headers["User-Agent"]}
        request = self._client.build_request("GET", url, params=_flat(params), headers=headers)
        started = time.perf_counter()
        failure: ProviderError | None = None
        response: httpx.Response | None = None
        try:
            if authenticated and self._auth is not None:
                response = self._client.send(request, auth=self._auth, stream=True)
            else:
                response = self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            failure = self.transport_error(
                f"no answer within {self.timeout_seconds:g} s ({type(exc).__name__})",
                "timeout",
                True,
                "GET",
                url,
            )
        except httpx.TransportError as exc:
            failure = self.transport_error(f"{type(exc).__name__}: {exc}", "network", True, "GET", url)
        if failure is not None:
            raise failure
        assert response is not None
        seconds = time.perf_counter() - started
        if response.status_code != 200:
            failure = self._read_error(response, url)
            raise failure
        return response, seconds

    def _read_error(self, response: httpx.Response, url: str) -> ProviderError:
        try:
            response.read()
        except httpx.TransportError:
            pass
        finally:
            response.close()
        return self.http_error(response, "GET", url)

    def _objects(self, response: httpx.Response, url: str) -> Iterator[dict[str, Any]]:
        failure: ProviderError | None = None
        try:
            for line in _lines(response.iter_bytes()):
                if not line.strip():
                    continue
                try:
                    value = orjson.loads(line)
                except orjson.JSONDecodeError:
                    failure = self.protocol_error("a line of the answer is not JSON", "invalid_json", url=url)
                    break
                if not isinstance(value, dict):
                    failure = self.protocol_error(
                        "a line of the answer is not an object", "unexpected_response", url=url
                    )
                    break
                yield value
        except httpx.TransportError as exc:
            failure = self.transport_error(
                f"the answer broke off after it began ({type(exc).__name__})", "network", True, "GET", url
            )
        except zlib.error:
            failure = self.protocol_error("the answer is not valid gzip", "invalid_gzip", url=url)
        finally:
            response.close()
        if failure is not None:
            raise failure


def _flat(
    params: Mapping[str, QueryValue] | None,
) -> list[tuple[str, str | int | float | bool | None]] | None:
    if params is None:
        return None
    flat: list[tuple[str, str | int | float | bool | None]] = []
    for key, value in params.items():
        if isinstance(value, (list, tuple)):
            flat.extend((key, str(item)) for item in value)
        else:
            flat.append((key, str(value)))
    return flat
