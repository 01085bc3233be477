"""A stopping gateway loses no acknowledged traffic record; a killed one says how many it lost.

* unit: ``guard_plugin.shutdown`` runs each closer once, after LiteLLM's shutdown function, and
  keeps going past a failing one; the traffic journal of a killed process is reported once;
* the real proxy: traffic logging on, records held in the queue (a long flush interval), then
  SIGTERM: every screened call is in the store after the exit; then SIGKILL: the next start logs
  ``traffic_records_lost`` with the count, and a graceful stop leaves no journal behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.faults import log_events, sqlite_parts, traffic_env
from guard_plugin import shutdown
from guard_plugin.traffic_journal import FOLDER, report_lost
from tests.proxy_process import REPO_ROOT, ProxyProcess, free_port, proxy_command
from tests.tiny_guard import SAFE, UNSAFE

EXAMPLE_CONFIG = REPO_ROOT / "examples" / "litellm_config.yaml"


# -- unit: the shutdown hook -----------------------------------------------------------------------
@pytest.fixture
def no_closers(monkeypatch: pytest.MonkeyPatch) -> list[Callable[[], Any]]:
    closers: list[Callable[[], Any]] = []
    monkeypatch.setattr(shutdown, "_closers", closers)
    return closers


async def test_closers_run_once_after_the_proxys_own_shutdown(
    no_closers: list[Callable[[], Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []

    async def proxy_shutdown_event(**kwargs: Any) -> None:
        order.append(f"litellm {kwargs}")

    server = types.ModuleType(shutdown.PROXY_SERVER_MODULE)
    server.proxy_shutdown_event = proxy_shutdown_event  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, shutdown.PROXY_SERVER_MODULE, server)

    def failing() -> None:
        order.append("failing")
        raise OSError("disk gone")

    shutdown.at_shutdown(failing)
    shutdown.at_shutdown(lambda: order.append("flush"))
    wrapped = server.proxy_shutdown_event  # type: ignore[attr-defined]
    assert wrapped is not proxy_shutdown_event
    assert shutdown.hook_proxy_shutdown()  # a second hook does not wrap twice
    assert server.proxy_shutdown_event is wrapped  # type: ignore[attr-defined]

    await wrapped(worker_heartbeat=None)
    assert order == ["litellm {'worker_heartbeat': None}", "failing", "flush"]
    shutdown.run_closers()  # atexit, later: nothing runs twice
    assert len(order) == 3


def test_outside_the_proxy_nothing_is_wrapped(
    no_closers: list[Callable[[], Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, shutdown.PROXY_SERVER_MODULE, raising=False)
    ran: list[int] = []
    shutdown.at_shutdown(lambda: ran.append(1))
    assert not shutdown.hook_proxy_shutdown()
    shutdown.run_closers()
    assert ran == [1]


# -- unit: the journal of a killed logger ----------------------------------------------------------
KILLED_LOGGER = """
import os, signal, sys
from pathlib import Path
from adapters.traffic import SQLiteTrafficStore
from guard_plugin.settings import GuardSettings
from guard_plugin.traffic_log import Screened, TrafficLogger
home = Path(sys.argv[1])
settings = GuardSettings(home=home, traffic_flush_s=60)
logger = TrafficLogger(lambda: SQLiteTrafficStore(home / "t.db"), settings)
for i in range(7):
    logger.log(Screened(prompt="p", completion=None, p_unsafe=0.1, decision="allow",
                        guard_version="v1", request_id=f"r{i}"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_loggers_queued_records_are_reported_once(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.run([sys.executable, "-c", KILLED_LOGGER, str(tmp_path)], env=env)
    assert child.returncode == -signal.SIGKILL
    assert len(list((tmp_path / FOLDER).iterdir())) == 1
    assert report_lost(tmp_path) == 7
    assert report_lost(tmp_path) == 0  # reported, then forgotten
    assert list((tmp_path / FOLDER).iterdir()) == []


# -- the real proxy --------------------------------------------------------------------------------
def start_proxy(home: Path, bundle: Path, log_file: Path) -> ProxyProcess:
    port = free_port()
    proxy = ProxyProcess(
        proxy_command(EXAMPLE_CONFIG, port),
        port=port,
        log_file=log_file,
        # records stay queued (30 s) until the stop writes them
        env={**traffic_env(home, flush_s=30), "HARMAUG_GUARD": str(bundle)},
    )
    proxy.wait_ready()
    return proxy


def screened_calls(proxy: ProxyProcess, n: int) -> set[str]:
    """``n`` chat calls (one in three unsafe); the LiteLLM call ids of the answered ones."""
    ids = set()
    with httpx.Client(timeout=60, headers=proxy.headers) as http:
        for i in range(n):
            prompt = UNSAFE[i % len(UNSAFE)] if i % 3 == 0 else SAFE[i % len(SAFE)]
            response = http.post(
                f"{proxy.url}/v1/chat/completions",
                json={"model": "safe-model", "messages": [{"role": "user", "content": prompt}]},
            )
            assert response.status_code in (200, 400), response.text
            ids.add(response.headers["x-litellm-call-id"])
    return ids


def stored_request_ids(home: Path) -> set[str]:
    return {request_id for request_id, _ in sqlite_parts(home / "traffic.sqlite")}


def run_and_stop(
    home: Path, bundle: Path, log_file: Path, *, calls: int, sig: signal.Signals
) -> tuple[ProxyProcess, set[str]]:
    """Start a proxy, make ``calls`` screened calls, stop it with ``sig``; its call ids."""
    proxy = start_proxy(home, bundle, log_file)
    try:
        answered = screened_calls(proxy, calls)
        proxy.process.send_signal(sig)
        proxy.wait_exit(60)
    finally:
        proxy.stop()
    return proxy, answered


@pytest.mark.integration
def test_sigterm_writes_every_queued_record_and_sigkill_is_reported_at_the_next_start(
    tiny_onnx_bundle: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    first, answered = run_and_stop(
        home, tiny_onnx_bundle, tmp_path / "first.log", calls=9, sig=signal.SIGTERM
    )
    assert stored_request_ids(home) == answered, first.logs()[-3000:]
    [flushed] = log_events(first, "traffic_flushed")
    assert flushed["written"] == flushed["logged"] == 15  # 6 safe calls x 2 parts + 3 prompts

    killed, lost = run_and_stop(
        home, tiny_onnx_bundle, tmp_path / "killed.log", calls=3, sig=signal.SIGKILL
    )
    assert not lost & stored_request_ids(home)

    after, _ = run_and_stop(
        home, tiny_onnx_bundle, tmp_path / "after.log", calls=0, sig=signal.SIGTERM
    )
    [report] = log_events(after, "traffic_records_lost")
    assert report["records"] == 5 and report["pid"] == killed.process.pid
    assert list((home / FOLDER).iterdir()) == []  # a graceful stop leaves no journal
