"""The transport of the OpenAI-compatible adapters: one POST with bounded concurrency, retries
with exponential backoff, and timeouts (``httpx``; the request shapes are the adapters' own).

Retried: timeouts, connection errors, HTTP 429 and 5xx, bodies that are not JSON, and bodies the
adapter's ``parse`` rejects with :class:`MalformedResponse`. Not retried: other 4xx (a request
the server will never accept). When the retries are spent, :class:`ServerError` says which URL,
how many attempts and the last reason; nothing is returned half-parsed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

import httpx
import structlog

from adapters.settings import AdapterSettings

log = structlog.get_logger("harmaug.adapters")
T = TypeVar("T")


class ServerError(RuntimeError):
    """A model server request that failed for good. ``status`` is the last HTTP status, if any."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MalformedResponse(ValueError):
    """A response body without the fields the adapter needs (retried like a 5xx)."""


class OpenAICompatClient:
    """POSTs JSON to ``<base_url>/<path>`` of one server; create it inside the running loop."""

    def __init__(self, base_url: str, settings: AdapterSettings | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.settings = settings or AdapterSettings()
        headers = {"Content-Type": "application/json"}
        if self.settings.openai_api_key is not None:
            headers["Authorization"] = f"Bearer {self.settings.openai_api_key.get_secret_value()}"
        self._http = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(self.settings.http_timeout_s)
        )
        self._slots = asyncio.Semaphore(self.settings.http_concurrency)

    async def __aenter__(self) -> OpenAICompatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def post(self, path: str, body: dict[str, Any], parse: Callable[[Any], T]) -> T:
        """POST ``body`` and return ``parse(json)``, retrying transient failures."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        attempts = self.settings.http_max_retries + 1
        reason, status = "", None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.settings.http_backoff_s * 2 ** (attempt - 1))
            try:
                async with self._slots:
                    response = await self._http.post(url, json=body)
            except httpx.TimeoutException:
                reason, status = f"timed out after {self.settings.http_timeout_s} s", None
            except httpx.TransportError as exc:
                reason, status = f"connection failed ({type(exc).__name__}: {exc})", None
            else:
                status = response.status_code
                if status == 429 or status >= 500:
                    reason = f"HTTP {status}: {response.text[:200]!r}"
                elif status >= 400:
                    raise ServerError(
                        f"{url}: HTTP {status}: {response.text[:500]!r}", status=status
                    )
                else:
                    try:
                        return parse(response.json())
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                        # JSONDecodeError and MalformedResponse are ValueErrors
                        reason = f"malformed response ({type(exc).__name__}: {exc})"
            log.warning("server_request_retry", url=url, attempt=attempt + 1, reason=reason)
        raise ServerError(f"{url}: gave up after {attempts} attempt(s): {reason}", status=status)


async def gather_or_cancel(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """``asyncio.gather`` that cancels (and awaits) the rest as soon as one fails."""
    tasks = [asyncio.ensure_future(item) for item in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def run_sync(factory: Callable[[], Coroutine[Any, Any, T] | Awaitable[T]]) -> T:
    """Run an adapter coroutine from synchronous code (a fresh event loop per call)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())  # type: ignore[arg-type]
    raise RuntimeError(
        "called the synchronous form inside a running event loop; await the async form instead"
    )
