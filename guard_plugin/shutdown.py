"""A graceful stop of the gateway finishes the guard's work: ``at_shutdown(close)``.

How the LiteLLM proxy stops on SIGTERM or SIGINT: uvicorn stops accepting connections, waits for
the open ones, runs the ASGI lifespan's shutdown, and then re-raises the signal with the handler
that was in place before it started. For SIGTERM that is the default handler, which ends the
process at once: no ``atexit`` handler runs, so whatever a background thread still held was lost.
LiteLLM's lifespan shutdown drains in-flight requests (``GracefulShutdownManager``) and ends with
``proxy_shutdown_event`` (``litellm/proxy/proxy_server.py``).

The first ``at_shutdown`` call in a proxy process wraps that function, once, so that the
registered closers run right after LiteLLM's own shutdown: after the last request, before the
signal is re-raised. Every closer is also registered with ``atexit`` (a plain script, the tests,
SIGINT); whichever comes first runs it, and it runs once. A closer that raises is logged and the
others still run. A LiteLLM without that function logs ``shutdown_hook_unavailable`` at start-up
(the range in ``pyproject.toml`` is tested to have it).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import sys
import threading
from collections.abc import Callable
from typing import Any

from guard_plugin.logs import get_logger

log = get_logger("guard_plugin.shutdown")

PROXY_SERVER_MODULE = "litellm.proxy.proxy_server"
PROXY_SHUTDOWN_FUNCTION = "proxy_shutdown_event"
WRAPPED_MARK = "__harmaug_shutdown__"

_closers: list[Callable[[], Any]] = []
_lock = threading.Lock()
_atexit_registered = False


def at_shutdown(closer: Callable[[], Any]) -> None:
    """Run ``closer`` once when the gateway stops gracefully (or, failing that, at exit)."""
    global _atexit_registered
    with _lock:
        _closers.append(closer)
        if not _atexit_registered:
            atexit.register(run_closers)
            _atexit_registered = True
        hook_proxy_shutdown()


def run_closers() -> None:
    """Run (and forget) every registered closer, in registration order."""
    with _lock:
        closers = list(_closers)
        _closers.clear()
    for closer in closers:
        try:
            closer()
        except Exception as exc:  # one failing closer must not keep the others from running
            log.error("shutdown_step_failed", step=_name(closer), error=type(exc).__name__)


def hook_proxy_shutdown() -> bool:
    """Wrap LiteLLM's ``proxy_shutdown_event`` (once) when this process is a LiteLLM proxy.

    Returns whether the closers will run at the proxy's shutdown. Does nothing (False) outside
    the proxy: the module is looked up, never imported here.
    """
    server = sys.modules.get(PROXY_SERVER_MODULE)
    if server is None:
        return False
    original = getattr(server, PROXY_SHUTDOWN_FUNCTION, None)
    if getattr(original, WRAPPED_MARK, False):
        return True
    if original is None or not asyncio.iscoroutinefunction(original):
        log.warning(
            "shutdown_hook_unavailable",
            missing=f"{PROXY_SERVER_MODULE}.{PROXY_SHUTDOWN_FUNCTION}",
            consequence="traffic records still queued at a SIGTERM are lost",
        )
        return False

    @functools.wraps(original)
    async def proxy_shutdown_event(*args: Any, **kwargs: Any) -> Any:
        try:
            return await original(*args, **kwargs)
        finally:
            await asyncio.to_thread(run_closers)  # closers block (a flush): off the event loop

    setattr(proxy_shutdown_event, WRAPPED_MARK, True)
    setattr(server, PROXY_SHUTDOWN_FUNCTION, proxy_shutdown_event)
    return True


def _name(closer: Callable[[], Any]) -> str:
    return getattr(closer, "__qualname__", type(closer).__name__)
