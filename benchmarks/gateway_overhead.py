"""Gateway overhead of the guard: the LiteLLM proxy with the guard (pre_call + post_call) vs without.

Both proxies serve the same mock upstream model (``mock_response``, no network) on 127.0.0.1, run
side by side in one invocation and get the same load in ``--rounds`` interleaved rounds (the order
flips every round, so drift in a shared machine's load hits both alike):

* ``loaded``: ``--concurrency`` clients (32) send ``--requests`` chat completions in total;
  throughput and latency percentiles;
* ``unloaded``: one client, ``--sequential`` requests; latency percentiles.

Every prompt is unique (~64 tokens of everyday words), so no score comes from the guard's cache:
each call scores its prompt and its (prompt, completion) pair. Prints one JSON object::

    python benchmarks/gateway_overhead.py [--guard champion|VERSION|PATH] [--requests 2000]

Targets (issue): throughput with the guard >= 85% of without; p50 added latency <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.proxy_process import ProxyProcess, free_port, proxy_command  # noqa: E402

WORDS = [
    "garden",
    "bread",
    "morning",
    "coffee",
    "river",
    "bicycle",
    "window",
    "market",
    "recipe",
    "music",
    "teacher",
    "weekend",
    "mountain",
    "library",
    "kitchen",
    "summer",
    "friend",
    "letter",
    "holiday",
    "painting",
    "station",
    "village",
    "forest",
    "question",
    "answer",
    "travel",
    "train",
    "pocket",
    "blanket",
    "candle",
    "orange",
    "yellow",
    "quiet",
    "happy",
    "simple",
]
SAFE_ANSWER = "sure, here is a simple plan for a relaxed weekend with friends and good food"


def prompts(count: int, words: int, seed: int) -> list[str]:
    """Unique everyday prompts of ``words`` words (~64 tokens for 58 words with MiniLM)."""
    rng = random.Random(seed)
    return [f"request {i}: " + " ".join(rng.choices(WORDS, k=words)) for i in range(count)]


def write_config(path: Path, *, guard: bool, threshold: float | None) -> Path:
    config: dict[str, Any] = {
        "model_list": [
            {
                "model_name": "mock",
                "litellm_params": {
                    "model": "openai/mock",
                    "api_key": "not-used",
                    "mock_response": SAFE_ANSWER,
                },
            }
        ],
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    if guard:
        config["guardrails"] = [
            {
                "guardrail_name": "harmaug",
                "litellm_params": {
                    "guardrail": "guard_plugin.HarmAugGuardrail",
                    "mode": ["pre_call", "post_call"],
                    "default_on": True,
                    **({"harmaug_threshold": threshold} if threshold is not None else {}),
                },
            }
        ]
    path.write_text(yaml.safe_dump(config))
    return path


async def drive(
    proxy: ProxyProcess, texts: list[str], concurrency: int
) -> tuple[list[float], float, dict[str, int]]:
    """Send every text once with ``concurrency`` clients; latencies (ms), wall time (s), and
    how many answers were ``ok`` (200), ``blocked`` (400 from the guard) or ``errors``."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)
    latencies: list[float] = []
    outcomes = {"ok": 0, "blocked": 0, "errors": 0}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=proxy.url, headers=proxy.headers, timeout=120, limits=limits
    ) as client:

        async def worker() -> None:
            while not queue.empty():
                text = queue.get_nowait()
                body = {"model": "mock", "messages": [{"role": "user", "content": text}]}
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body)
                latencies.append((time.perf_counter() - started) * 1000.0)
                if response.status_code == 200:
                    outcomes["ok"] += 1
                elif response.status_code == 400 and "harmaug" in response.text:
                    outcomes["blocked"] += 1
                else:
                    outcomes["errors"] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return latencies, wall, outcomes


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of process group ``pgid``
    (the proxy and anything it started), from /proc; 0.0 where /proc is unavailable."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ... utime stime
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def percentiles(latencies: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p90_ms": round(cuts[89], 2),
        "p99_ms": round(cuts[98], 2),
    }


class Tally:
    """What one proxy did over all rounds."""

    def __init__(self) -> None:
        self.loaded: list[float] = []
        self.loaded_wall = 0.0
        self.unloaded: list[float] = []
        self.outcomes = {"ok": 0, "blocked": 0, "errors": 0}
        self.proxy_cpu_s = 0.0  # CPU of the proxy process group during the loaded bursts
        self.client_cpu_s = 0.0  # CPU of this (client) process during the loaded bursts

    def add(
        self, latencies: list[float], wall: float, outcomes: dict[str, int], loaded: bool
    ) -> None:
        (self.loaded if loaded else self.unloaded).extend(latencies)
        self.loaded_wall += wall if loaded else 0.0
        for key, count in outcomes.items():
            self.outcomes[key] += count

    def summary(self, concurrency: int) -> dict[str, Any]:
        return {
            "loaded": {
                "requests": len(self.loaded),
                "concurrency": concurrency,
                "throughput_rps": round(len(self.loaded) / self.loaded_wall, 1),
                **percentiles(self.loaded),
                "proxy_cpu_ms_per_request": round(1000 * self.proxy_cpu_s / len(self.loaded), 2),
                "client_cpu_ms_per_request": round(1000 * self.client_cpu_s / len(self.loaded), 2),
            },
            "unloaded": {"requests": len(self.unloaded), **percentiles(self.unloaded)},
            **self.outcomes,
        }


def measure(proxies: dict[str, ProxyProcess], args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved rounds (the order flips every round), so that drift in the machine's load
    hits both proxies alike: a loaded burst, then sequential calls, per proxy per round."""
    per_round = args.requests // args.rounds
    sequential = args.sequential // args.rounds
    tallies = {name: Tally() for name in proxies}
    for index, proxy in enumerate(proxies.values()):
        asyncio.run(drive(proxy, prompts(args.warmup, args.words, seed=1000 + index), 8))
    for round_ in range(args.rounds):
        order = list(proxies) if round_ % 2 == 0 else list(reversed(proxies))
        for name in order:
            seed = 10 * round_
            texts = prompts(per_round, args.words, seed)
            pgid = proxies[name].process.pid  # the proxy leads its own session / process group
            proxy_cpu, client_cpu = group_cpu_s(pgid), time.process_time()
            tallies[name].add(*asyncio.run(drive(proxies[name], texts, args.concurrency)), True)
            tallies[name].proxy_cpu_s += group_cpu_s(pgid) - proxy_cpu
            tallies[name].client_cpu_s += time.process_time() - client_cpu
            texts = prompts(sequential, args.words, seed + 1)
            tallies[name].add(*asyncio.run(drive(proxies[name], texts, 1)), False)
    return {name: tally.summary(args.concurrency) for name, tally in tallies.items()}


def run_proxy(config: Path, log_file: Path, env: dict[str, str]) -> ProxyProcess:
    port = free_port()
    proxy = ProxyProcess(proxy_command(config, port), port=port, log_file=log_file, env=env)
    proxy.wait_ready(timeout_s=300)
    return proxy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guard", default=os.environ.get("HARMAUG_GUARD", "champion"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per proxy")
    parser.add_argument("--words", type=int, default=58, help="words per prompt (58 ~ 64 tokens)")
    parser.add_argument(
        "--threshold", type=float, help="entry threshold (1.0: score every call, block none)"
    )
    args = parser.parse_args()

    from guard_plugin.locate import resolve_guard_path
    from guard_plugin.model import GuardModel
    from guard_plugin.settings import GuardSettings

    settings = GuardSettings(guard=args.guard)
    guard_path = resolve_guard_path(settings)  # GuardNotFound says how to build the default guard
    model = GuardModel.load(guard_path, settings)
    tokens = len(model.tokenizer(prompts(1, args.words, 0)[0])["input_ids"])

    env = {"HARMAUG_GUARD": str(guard_path)}
    results: dict[str, Any] = {
        "guard_version": model.version,
        "backend": model.backend_name,
        "onnx_variant": settings.onnx_variant or model.manifest.onnx_variant,
        "prompt_tokens": tokens,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    del model
    with tempfile.TemporaryDirectory(prefix="harmaug-bench-") as tmp:
        root = Path(tmp)
        proxies: dict[str, ProxyProcess] = {}
        try:
            for name, guard in (("without_guard", False), ("with_guard", True)):
                config = write_config(root / f"{name}.yaml", guard=guard, threshold=args.threshold)
                proxies[name] = run_proxy(config, root / f"{name}.log", env)
            results.update(measure(proxies, args))
        finally:
            for proxy in proxies.values():
                proxy.stop()
    without, with_guard = results["without_guard"], results["with_guard"]
    results["throughput_ratio"] = round(
        with_guard["loaded"]["throughput_rps"] / without["loaded"]["throughput_rps"], 3
    )
    results["added_p50_ms_loaded"] = round(
        with_guard["loaded"]["p50_ms"] - without["loaded"]["p50_ms"], 2
    )
    results["added_p50_ms_unloaded"] = round(
        with_guard["unloaded"]["p50_ms"] - without["unloaded"]["p50_ms"], 2
    )
    # Every request costs CPU in the proxy (and in this client); when the cores are the
    # bottleneck, throughput can be at most the inverse ratio of the CPU per request.
    loaded = {name: results[name]["loaded"] for name in ("without_guard", "with_guard")}
    cost = {
        name: row["proxy_cpu_ms_per_request"] + row["client_cpu_ms_per_request"]
        for name, row in loaded.items()
    }
    results["guard_cpu_ms_per_request"] = round(
        loaded["with_guard"]["proxy_cpu_ms_per_request"]
        - loaded["without_guard"]["proxy_cpu_ms_per_request"],
        2,
    )
    results["throughput_ratio_cpu_bound_ceiling"] = round(
        cost["without_guard"] / cost["with_guard"], 3
    )
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = {
        "throughput_ratio_min": 0.85,
        "added_p50_ms_max": 5.0,
        "throughput_met": results["throughput_ratio"] >= 0.85,
        "added_p50_met_unloaded": results["added_p50_ms_unloaded"] <= 5.0,
    }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
