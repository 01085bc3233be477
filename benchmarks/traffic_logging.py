"""Gateway throughput with traffic logging on vs off: two LiteLLM proxies with the guard, measured
in interleaved rounds in one run under the same load (``benchmarks/gateway_overhead.py``'s
driver and its benign traffic, about ``--tokens`` tokens a message).

Every prompt is unique (a request number is appended), so every call is scored and logged (prompt
and completion screenings: two traffic records per call, written to SQLite by the logger's
background thread). Prints one JSON object::

    python benchmarks/traffic_logging.py [--guard champion|VERSION|PATH] [--requests 2000]

Target (issue): throughput with logging on >= 95% of logging off.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from adapters.traffic import SQLiteTrafficStore  # noqa: E402
from benchmarks.gateway_overhead import (  # noqa: E402
    SAFE_ANSWER,
    measure,
    requests,
    run_proxy,
    traffic_pool,
    write_config,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guard", default=os.environ.get("HARMAUG_GUARD", "champion"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per user message, about")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per proxy")
    parser.add_argument("--threshold", type=float, default=1.0, help="1.0: block nothing")
    args = parser.parse_args()

    from guard_plugin.locate import resolve_guard_path
    from guard_plugin.model import GuardModel
    from guard_plugin.settings import GuardSettings

    settings = GuardSettings(guard=args.guard)
    guard_path = resolve_guard_path(settings)
    tokenizer = GuardModel.load(guard_path, settings).tokenizer
    benign = (traffic_pool(settings.home)[0], [])

    def traffic(count: int, seed: int) -> list[tuple[str, bool]]:
        texts = requests(
            benign,
            count,
            tokens=args.tokens,
            harmful_share=0.0,
            count_tokens=lambda text: len(tokenizer(text)["input_ids"]),
            seed=seed,
        )
        return [
            (f"{text} (request {seed}-{index})", False) for index, (text, _) in enumerate(texts)
        ]

    results: dict[str, Any] = {"guard": str(guard_path), "cpu_count": os.cpu_count()}
    stores = {}
    with tempfile.TemporaryDirectory(prefix="harmaug-bench-") as tmp:
        root = Path(tmp)
        config = write_config(
            root / "config.yaml", guard="harmaug", threshold=args.threshold, answers=[SAFE_ANSWER]
        )
        proxies = {}
        try:
            for name, logging_on in (("logging_off", False), ("logging_on", True)):
                stores[name] = root / f"{name}.sqlite"
                env = {
                    "HARMAUG_GUARD": str(guard_path),
                    "HARMAUG_TRAFFIC_LOG": str(logging_on).lower(),
                    "HARMAUG_TRAFFIC_STORE": str(stores[name]),
                    "HARMAUG_HOME": str(root / "home"),
                }
                proxies[name] = run_proxy(config, root / f"{name}.log", env)
            results.update(measure(proxies, args, traffic, 1))
        finally:
            for proxy in proxies.values():
                proxy.stop()
        records, _ = SQLiteTrafficStore(stores["logging_on"]).read_since(0, 10_000_000)
        results["logging_on"]["records_stored"] = len(records)
    ratio = (
        results["logging_on"]["loaded"]["throughput_rps"]
        / results["logging_off"]["loaded"]["throughput_rps"]
    )
    results["throughput_ratio"] = round(ratio, 3)
    results["targets"] = {"throughput_ratio_min": 0.95, "met": ratio >= 0.95}
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
