"""The API teacher's hot path: one POST per request over aiohttp, configured by the ``openai`` SDK client.

The SDK stays what users configure and what failures look like. The base URL, the auth headers, the
SDK's default headers (user agent, organization, project) and the timeout are read once from the
``AsyncOpenAI`` client. Every failure is raised as the SDK's own exception: a non-2xx answer becomes the
``APIStatusError`` subclass the SDK itself makes from it, a dropped or refused connection
``APIConnectionError``, a timeout ``APITimeoutError``. Retries and error messages are therefore the
same as through ``client.post``.

What is left out is the SDK's per-request machinery around the same aiohttp transport: request options,
header merging, URL parsing and an httpx request and response built and copied for every call, for bytes
that are the same every time but the body. In py-spy profiles of bench/generate_api.py (concurrency 64)
``client.post`` cost about three times this ``post``; with the export and plan changes of the same
round, client CPU went from 3.1 to 1.4 ms per request (BENCHMARKS.md, generate_api).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import openai

try:  # the SDK's HTTP library: httpx2 from openai 3, httpx before
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]


class Transport:
    """POSTs JSON bodies to one SDK client's base URL; the session opens on the first call (in the loop)."""

    def __init__(self, client: openai.AsyncOpenAI, connections: int):
        self.client = client
        self.base_url = str(client.base_url).rstrip("/")
        headers = {**client.auth_headers, **client.default_headers}
        self.headers = {
            **{name: value for name, value in headers.items() if isinstance(value, str)},  # Omit(): left out
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        timeout = client.timeout
        seconds = timeout.read if isinstance(timeout, httpx.Timeout) else timeout
        # the SDK's float timeout bounds connecting, and each wait for bytes, not the whole exchange
        self.timeout = aiohttp.ClientTimeout(total=None, connect=seconds, sock_connect=seconds, sock_read=seconds)
        self.connections = connections
        self.proxy = env_proxy(self.base_url)
        self._session: aiohttp.ClientSession | None = None

    async def post(self, path: str, body: bytes) -> bytes:
        """The reply body of a 2xx answer; the SDK's exception otherwise."""
        url = self.base_url + path
        try:
            async with self._open().post(
                url, data=body, headers=self.headers, timeout=self.timeout, proxy=self.proxy
            ) as response:
                raw = await response.read()
                if 200 <= response.status < 300:
                    return raw
                reply = httpx.Response(
                    response.status, headers=response.raw_headers, content=raw, request=httpx.Request("POST", url)
                )
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise openai.APITimeoutError(request=httpx.Request("POST", url)) from exc
        except aiohttp.ClientError as exc:
            message = f"{type(exc).__name__}: {exc}"
            raise openai.APIConnectionError(message=message, request=httpx.Request("POST", url)) from exc
        raise self.client._make_status_error_from_response(reply)  # the SDK's own mapping (openai 1.x to 3.x)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.connections, ssl=httpx.create_ssl_context())
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, as httpx reads
    them by default), looked up once: aiohttp's ``trust_env`` looks it up, and netrc, in a thread for
    every request, which cost more client CPU than the rest of the request."""
    parts = urlsplit(url)
    if proxy_bypass(parts.hostname or ""):
        return None
    return getproxies().get(parts.scheme)
