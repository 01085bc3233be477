"""A real LiteLLM proxy as a subprocess on 127.0.0.1, for integration tests and the benchmark."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proxy_command(config: Path, port: int) -> list[str]:
    """The ``litellm --config ... --host 127.0.0.1 --port ...`` command of this interpreter."""
    return [
        sys.executable,
        "-m",
        "litellm.proxy.proxy_cli",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def serve_command(config: Path, port: int, *extra: str) -> list[str]:
    """``harmaug serve`` of this interpreter (which execs the same proxy)."""
    return [
        sys.executable,
        "-m",
        "guard_plugin.cli",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        *extra,
    ]


class ProxyProcess:
    """One proxy subprocess; its stdout and stderr go to ``log_file``."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        port: int,
        log_file: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_file = log_file
        self.master_key = "sk-test-" + secrets.token_urlsafe(24)
        full_env = {
            **os.environ,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "LITELLM_MASTER_KEY": self.master_key,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
            **(env or {}),
        }
        self._log = log_file.open("wb")
        self.process = subprocess.Popen(
            list(command),
            cwd=REPO_ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.master_key}"}

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Until ``/health/liveliness`` answers; raises with the log tail if the proxy died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"proxy exited with {self.process.returncode}:\n{self.logs()[-4000:]}"
                )
            try:
                if httpx.get(f"{self.url}/health/liveliness", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"proxy not ready after {timeout_s:.0f} s:\n{self.logs()[-4000:]}")

    def wait_exit(self, timeout_s: float = 120.0) -> int:
        return self.process.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        self._log.close()
