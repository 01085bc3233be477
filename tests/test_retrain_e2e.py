"""End to end on tiny models: the real proxy logs the traffic it screens to SQLite; a retraining
cycle with a classifier teacher promotes a new version; the running proxy serves it (its version
header changes) with zero failed requests during the swap, under concurrent load."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from adapters.traffic import SQLiteTrafficStore, TrafficRecord
from distill.loop import run_cycle
from distill.records import Example, write_jsonl
from distill.registry import Registry
from distill.settings import DistillSettings, LoopSettings, TrainRecipe
from tests.proxy_process import ProxyProcess, free_port, proxy_command
from tests.tiny_guard import SAFE, UNSAFE

pytestmark = pytest.mark.integration

VERSION_HEADER = "x-harmaug-guard-version"
CONFIG = {
    "model_list": [
        {
            "model_name": "safe-model",
            "litellm_params": {
                "model": "openai/mock-safe",
                "api_key": "not-used",
                "mock_response": "sure, here is how to bake a loaf of bread at home",
            },
        }
    ],
    "guardrails": [
        {
            "guardrail_name": "harmaug",
            "litellm_params": {
                "guardrail": "guard_plugin.HarmAugGuardrail",
                "mode": ["pre_call", "post_call"],
                "default_on": True,
                "harmaug_action": "block",
            },
        }
    ],
    "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
}


@pytest.fixture()
def gateway(tmp_path: Path, tiny_onnx_bundle: Path) -> Iterator[tuple[ProxyProcess, Path]]:
    home = tmp_path / "home"
    registry = Registry(home / "registry")
    registry.register(tiny_onnx_bundle)
    registry.promote("tiny-onnx-1")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    port = free_port()
    proxy = ProxyProcess(
        proxy_command(config, port),
        port=port,
        log_file=tmp_path / "proxy.log",
        env={
            "HARMAUG_HOME": str(home),
            "HARMAUG_GUARD": "champion",
            "HARMAUG_TRAFFIC_LOG": "true",
            "HARMAUG_TRAFFIC_FLUSH_S": "0.1",
            "HARMAUG_RELOAD_INTERVAL_S": "0.5",
        },
    )
    try:
        proxy.wait_ready(timeout_s=300)
        yield proxy, home
    finally:
        proxy.stop()


def chat(text: str) -> dict[str, Any]:
    return {"model": "safe-model", "messages": [{"role": "user", "content": text}]}


def all_traffic(home: Path) -> list[TrafficRecord]:
    path = home / "traffic.sqlite"
    return SQLiteTrafficStore(path).read_since(0, 100_000)[0] if path.exists() else []


class Load:
    """Concurrent clients in a background thread; records every outcome and version header."""

    def __init__(self, proxy: ProxyProcess, clients: int = 8) -> None:
        self.proxy = proxy
        self.clients = clients
        self.stop = threading.Event()
        self.outcomes: list[tuple[int, str | None]] = []
        self.failures: list[str] = []
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()))

    async def _run(self) -> None:
        async with httpx.AsyncClient(
            base_url=self.proxy.url, headers=self.proxy.headers, timeout=60
        ) as client:

            async def one(k: int) -> None:
                i = 0
                while not self.stop.is_set():
                    text = SAFE[(k + i) % len(SAFE)]
                    try:
                        response = await client.post("/v1/chat/completions", json=chat(text))
                    except httpx.HTTPError as exc:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                        continue
                    self.outcomes.append(
                        (response.status_code, response.headers.get(VERSION_HEADER))
                    )
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code}: {response.text[:300]}")
                    i += 1

            await asyncio.gather(*(one(k) for k in range(self.clients)))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(120)


def test_logged_traffic_retrains_and_the_running_proxy_swaps_without_failures(
    gateway: tuple[ProxyProcess, Path], tiny_hf_dir: Path
) -> None:
    proxy, home = gateway
    texts = SAFE + UNSAFE
    with httpx.Client(base_url=proxy.url, headers=proxy.headers, timeout=60) as client:
        statuses = [client.post("/v1/chat/completions", json=chat(t)).status_code for t in texts]
    assert statuses.count(200) == len(SAFE) and statuses.count(400) == len(UNSAFE)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(all_traffic(home)) < len(texts) + len(SAFE):
        time.sleep(0.2)
    logged = all_traffic(home)
    prompts = [r for r in logged if r.meta.get("part") == "prompt"]
    completions = [r for r in logged if r.meta.get("part") == "completion"]
    assert len(prompts) == len(texts) and len(completions) == len(SAFE)
    blocked = {r.prompt for r in prompts if r.decision == "block"}
    assert blocked == set(UNSAFE)
    assert all(r.guard_version == "tiny-onnx-1" and r.key_hash and r.request_id for r in logged)
    assert all(proxy.master_key not in r.model_dump_json() for r in logged)

    gate = write_jsonl(
        home / "gate.jsonl",
        [Example(prompt=t, label=0, source="toy") for t in SAFE]
        + [Example(prompt=t, label=1, source="toy") for t in UNSAFE],
    )
    settings = DistillSettings(
        home=home,
        loop=LoopSettings(
            teacher=f"classifier:{tiny_hf_dir}",
            budget=200,
            min_records=10,
            min_holdout=5,
            seeds=False,
            gate_set=gate,
            validation_set=gate,
            int8=False,
            recipe=TrainRecipe(max_steps=4, batch_size=8, max_windows=1, warmup_ratio=0.0),
        ),
    )
    with Load(proxy) as load:
        time.sleep(1.0)
        report = run_cycle(settings)
        assert report["decision"]["promoted"], report["decision"]
        new = report["version"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(v == new for _, v in load.outcomes[-8:]):
            time.sleep(0.2)
        time.sleep(1.0)
    assert load.failures == []
    versions = [version for _, version in load.outcomes]
    assert "tiny-onnx-1" in versions and new in versions
    assert versions[-8:] == [new] * 8
    assert '"event": "guard_reloaded"' in proxy.logs()
