"""HTTP to vendor clouds with the retry policy both vendors document.

429: wait what ``Retry-After`` says (seconds, fractions allowed, e.g. ``0.40235`` from Samsara)
and retry. 5xx and network errors: exponential backoff with full jitter, capped. Other 4xx:
no retry, a `VendorError` carrying the status and body for the caller to interpret.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from api.integrations.config import IntegrationsSettings
from api.integrations.errors import VendorError, VendorUnavailableError

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class RetryStats:
    """Counters of what the retry loop saw (exposed for metrics and tests)."""

    requests: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    network_errors: int = 0
    waits_s: list[float] = field(default_factory=list)
    """The most recent waits, newest last (bounded: only the last 100 are kept)."""

    def record_wait(self, wait_s: float) -> None:
        """Remember one wait, dropping the oldest beyond 100."""
        self.waits_s.append(wait_s)
        del self.waits_s[:-100]


def parse_retry_after(value: str | None, default_s: float) -> float:
    """Seconds to wait from a Retry-After header: a (possibly fractional) number of seconds."""
    if not value:
        return default_s
    try:
        seconds = float(value.strip())
    except ValueError:
        # The HTTP-date form is allowed by RFC 9110 but neither vendor sends it.
        return default_s
    return max(0.0, seconds)


@dataclass(frozen=True)
class Response:
    """A successful (2xx) JSON answer."""

    status: int
    body: Any
    headers: Mapping[str, str]


class VendorHttp:
    """A retrying JSON client for one vendor; use as an async context manager."""

    def __init__(self, *, timeout_s: float, max_retries: int, backoff_base_s: float,
                 backoff_max_s: float, name: str, sleep: Sleep = asyncio.sleep,
                 rng: random.Random | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_retries = max_retries
        self._base_s = backoff_base_s
        self._max_s = backoff_max_s
        self._name = name
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._session: aiohttp.ClientSession | None = None
        self.stats = RetryStats()

    async def __aenter__(self) -> VendorHttp:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _backoff(self, attempt: int) -> float:
        return self._rng.uniform(0, min(self._max_s, self._base_s * 2 ** attempt))

    async def request(self, method: str, url: str, *, params: Mapping[str, str] | None = None,
                      headers: Mapping[str, str] | None = None, json: Any = None,
                      data: Mapping[str, str] | None = None) -> Response:
        """Send one request, retrying 429/5xx/network errors; returns the decoded 2xx JSON."""
        if self._session is None:
            raise RuntimeError("VendorHttp used outside its async context")
        last = ""
        for attempt in range(self._max_retries + 1):
            self.stats.requests += 1
            try:
                async with self._session.request(method, url, params=params, headers=headers,
                                                 json=json, data=data) as resp:
                    text = await resp.text()
                    if 200 <= resp.status < 300:
                        body = await resp.json(content_type=None) if text else None
                        return Response(resp.status, body, dict(resp.headers))
                    if resp.status == 429:
                        self.stats.rate_limited += 1
                        wait = parse_retry_after(resp.headers.get("Retry-After"),
                                                 self._backoff(attempt))
                        last = f"429 {text[:200]}"
                    elif resp.status >= 500:
                        self.stats.server_errors += 1
                        wait = self._backoff(attempt)
                        last = f"{resp.status} {text[:200]}"
                    else:
                        raise VendorError(f"{self._name} {method} {url}: HTTP {resp.status}",
                                          status=resp.status, body=text)
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                self.stats.network_errors += 1
                wait = self._backoff(attempt)
                last = f"network: {exc!r}"
            except aiohttp.ContentTypeError as exc:
                raise VendorError(f"{self._name} answered non-JSON", body=str(exc)) from exc
            if attempt == self._max_retries:
                break
            self.stats.record_wait(wait)
            log.info("%s %s %s: %s; retry %d in %.3f s", self._name, method, url, last,
                     attempt + 1, wait)
            await self._sleep(wait)
        raise VendorUnavailableError(f"{self._name} {method} {url} failed after "
                                f"{self._max_retries + 1} attempts: {last}")


def vendor_http(settings: IntegrationsSettings, name: str) -> VendorHttp:
    """The HTTP client of one vendor, with the settings' timeout and retries."""
    return VendorHttp(timeout_s=settings.http_timeout_s, max_retries=settings.http_max_retries,
                      backoff_base_s=settings.http_backoff_base_s,
                      backoff_max_s=settings.http_backoff_max_s, name=name)
