"""One retraining cycle over 10,000 logged records with a tiny teacher, stage by stage wall time.

Builds everything in a temporary HARMAUG_HOME: the tiny guard of ``tests.tiny_guard`` (a 2-layer
BERT) is the champion and, as a classifier teacher, the teacher; ``--records`` screened calls are
logged through the gateway's ``TrafficLogger`` into SQLite (blocked, uncertain and allowed ones,
as the student scored them); then ``distill.loop.run_cycle`` runs with the default selection
(budget ``--budget``) and a ``--steps`` fine-tune. Prints one JSON object::

    python benchmarks/retrain_cycle.py [--records 10000] [--budget 2000] [--steps 100]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
for name, value in (
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("TOKENIZERS_PARALLELISM", "false"),
):
    os.environ.setdefault(name, value)


def logged_calls(count: int, seed: int) -> list[tuple[str, str | None, float, str]]:
    """(prompt, completion, student p_unsafe, decision) of ``count`` distinct screened calls."""
    from tests.tiny_guard import FILLER, SAFE, UNSAFE

    rng = random.Random(seed)
    words = FILLER.split()
    calls = []
    for i in range(count):
        unsafe = rng.random() < 0.2
        text = rng.choice(UNSAFE if unsafe else SAFE)
        prompt = f"{text} {' '.join(rng.choices(words, k=rng.randint(0, 12)))} #{i}"
        completion = "sure, here is how" if rng.random() < 0.3 else None
        p = rng.uniform(0.6, 1.0) if unsafe else rng.betavariate(1, 12)
        calls.append((prompt, completion, p, "block" if p >= 0.5 else "allow"))
    return calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--int8", action="store_true", help="also export int8 (slower)")
    args = parser.parse_args()

    from distill.export import write_bundle
    from distill.loop import run_cycle
    from distill.records import Example, write_jsonl
    from distill.registry import Registry
    from distill.settings import DistillSettings, LoopSettings, TrainRecipe
    from guard_plugin.settings import GuardSettings
    from guard_plugin.traffic_log import Screened, TrafficLogger
    from tests.tiny_guard import SAFE, UNSAFE, build_tiny_guard

    results: dict[str, Any] = {"records": args.records, "budget": args.budget}
    with tempfile.TemporaryDirectory(prefix="harmaug-cycle-") as tmp:
        home = Path(tmp) / "home"
        started = time.perf_counter()
        hf_dir = build_tiny_guard(Path(tmp) / "tiny")
        pairs: list[tuple[str, str | None]] = [(t, None) for t in SAFE + UNSAFE]
        bundle = write_bundle(
            hf_dir,
            Path(tmp) / "bundle",
            version="tiny-1",
            base_model="tiny-bert",
            max_length=64,
            window_stride=16,
            max_windows=8,
            threshold=0.5,
            calibration_pairs=pairs,
            validation_pairs=pairs,
            training_data={},
            metrics={},
            int8=False,
        ).path
        registry = Registry(home / "registry")
        registry.register(bundle)
        registry.promote("tiny-1")
        gate = write_jsonl(
            home / "gate.jsonl",
            [Example(prompt=t, label=0, source="toy") for t in SAFE]
            + [Example(prompt=t, label=1, source="toy") for t in UNSAFE],
        )
        results["setup_s"] = round(time.perf_counter() - started, 2)

        guard_settings = GuardSettings(home=home, traffic_log=True, traffic_queue_size=20_000)
        logger = TrafficLogger.from_settings(guard_settings)
        started = time.perf_counter()
        for i, (prompt, completion, p, decision) in enumerate(logged_calls(args.records, 0)):
            logger.log(
                Screened(
                    prompt=prompt,
                    completion=completion,
                    p_unsafe=p,
                    decision=decision,
                    guard_version="tiny-1",
                    request_id=f"req-{i}",
                    key="sk-bench",
                    meta={"part": "completion" if completion else "prompt"},
                )
            )
        enqueue_s = time.perf_counter() - started
        logger.flush(120)
        logger.close()
        results["logging"] = {
            "enqueue_us_per_record": round(enqueue_s / args.records * 1e6, 2),
            "written": logger.stats.written,
            "dropped": logger.stats.dropped,
            "wall_s": round(time.perf_counter() - started, 2),
        }

        settings = DistillSettings(
            home=home,
            loop=LoopSettings(
                teacher=f"classifier:{hf_dir}",
                budget=args.budget,
                seeds=False,
                gate_set=gate,
                validation_set=gate,
                int8=args.int8,
                recipe=TrainRecipe(max_steps=args.steps, batch_size=32, max_windows=2),
            ),
        )
        started = time.perf_counter()
        report = run_cycle(settings)
        results["cycle_wall_s"] = round(time.perf_counter() - started, 2)
        results["stage_seconds"] = report["stage_seconds"]
        results["selection"] = report["selection"]["selected"]
        results["read"] = report["selection"]["read"]
        results["teacher_student_agreement"] = report["labelling"]["agreement"]
        results["dataset"] = {
            k: report["dataset"][k] for k in ("train", "holdout", "duplicates_removed")
        }
        results["train_steps"] = report["train"]["steps"]
        results["decision"] = report["decision"]
        results["cpu_count"] = os.cpu_count()
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
