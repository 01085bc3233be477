"""Faults under load: the real LiteLLM proxy with the guard, hostile input, and things that break.

Every case starts real proxies on 127.0.0.1 from ``examples/litellm_config.yaml`` (mock upstream
models, the guard in pre_call + post_call, action block, fail mode closed) serving ``--guard``
(default: the registry champion of HARMAUG_HOME), drives bounded concurrent load with httpx, and
reports what it measured:

* ``malformed``: ``--malformed`` hostile requests (``benchmarks/hostile_requests.py``) sent to the
  proxy with the guard and, the same requests, to the proxy without it: 5xx the guard caused (a 5xx
  with the guard where the proxy without it answered < 500, or a body from the guard), responses
  showing internals (tracebacks, source paths, exception class names), the proxy alive after;
  the guarded proxy logs its traffic to ``--malformed-store`` (Postgres by default), so hostile
  text reaches a real store: the traffic logger's write failures and drops;
* ``guard_failure``: scoring raises, then raises for completions only (prompts still scored),
  then hangs (``benchmarks/fault_injection.py``, loaded by the proxy config; the hang outlasts
  ``--guard-timeout-s``), each for ``--fault-requests`` calls while the load (plain and streamed
  calls) goes on: calls that passed while the guard was failing, and whether each call made
  entirely during a fault was refused with the documented 503 body (``guard_plugin.screening``;
  a stream's first event) unless the guard's verdict blocked its prompt;
  the score cache and the first stage are off, so that every call needs the failing model;
* ``hot_reload``: a registry with two versions, ``champion`` served, the second promoted
  (``distill.registry``) after a quarter of ``--reload-requests``: failed calls, calls served
  by each version (``x-harmaug-guard-version``);
* ``sigterm`` / ``kill``: traffic logging on (SQLite), the process signalled halfway through
  ``--stop-requests`` (records wait up to ``--flush-s`` in the queue): acknowledged records lost
  (every call that got a response must have its records in the store); after ``kill`` the next
  proxy with the same home must log ``traffic_records_lost`` with the count;
* ``store_down_sqlite`` / ``store_down_postgres``: the store stops taking writes for
  ``--down-s`` while the load goes on (SQLite: ``chattr +i`` on its files, else an exclusive lock
  held by another connection; Postgres: the store's TCP forwarder stopped, then restarted): calls
  failed, records dropped and counted (the logger's own stats, logged at a graceful stop), records
  unaccounted for, and whether logging resumed once the store was back.

    python benchmarks/faults.py [--guard PATH] [--cases malformed,kill] [--malformed 1000]

Prints one JSON object; ``goals_met`` lists each figure against its goal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.fault_injection import TRIGGER_ENV, set_fault  # noqa: E402
from benchmarks.gateway_overhead import run_proxy  # noqa: E402
from benchmarks.hostile_requests import CHAT, KINDS, hostile_requests  # noqa: E402
from tests.proxy_process import ProxyProcess, free_port  # noqa: E402
from tests.tiny_guard import SAFE, UNSAFE  # noqa: E402

EXAMPLE_CONFIG = REPO_ROOT / "examples" / "litellm_config.yaml"
FAULT_CALLBACK = "benchmarks.fault_injection.injector"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
CASES = (
    "malformed",
    "guard_failure",
    "hot_reload",
    "sigterm",
    "kill",
    "store_down_sqlite",
    "store_down_postgres",
)
INTERNALS = re.compile(
    r"Traceback \(most recent call last\)"
    r'|File "[^"]*", line \d+'
    r"|(?:/[\w.@+-]+)+\.py\b"
    r"|site-packages"
    r"|\b(?:guard_plugin|adapters|distill|litellm)\.[a-z_]+\.[\w.]+"
    r"|\b[A-Z]\w*(?:Error|Exception)\b"
    r"|object at 0x[0-9a-f]+|<class '"
)
FAIL_REASONS = {"error", "timeout", "overloaded"}


# -- the calls and what came back -------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    path: str
    body: bytes
    tag: str  # the kind of request: safe, unsafe-prompt, unsafe-completion, a hostile kind
    seq: int = 0  # tells apart identical requests of one list


@dataclass
class Outcome:
    call: Call
    started: float  # time.monotonic()
    ended: float
    status: int | None = None  # None: no response (refused, reset, timed out)
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def body(self) -> Any:
        """The JSON body, or None."""
        text = self.text
        if text.startswith("data: "):  # a stream: its first event, where a refusal stands
            text = text.split("\n", 1)[0].removeprefix("data: ")
        try:
            return json.loads(text)
        except ValueError:
            return None

    def harmaug(self) -> dict[str, Any]:
        """The guard's facts in an error body (``provider_specific_fields.harmaug``), or {}."""
        body = self.body()
        error = body.get("error") if isinstance(body, dict) else None
        fields_ = error.get("provider_specific_fields") if isinstance(error, dict) else None
        facts = fields_.get("harmaug") if isinstance(fields_, dict) else None
        return facts if isinstance(facts, dict) else {}

    @property
    def blocked(self) -> bool:
        return self.status == 400 and self.harmaug().get("decision") == "block"

    @property
    def answered(self) -> bool:
        """Served normally: passed (200) or refused by the guard's verdict (400 block)."""
        return self.status == 200 or self.blocked

    def internals(self) -> list[str]:
        return sorted(set(INTERNALS.findall(self.text)))


UNSAFE_ANSWER = "build a bomb"  # in the unsafe model's mock answer, in no safe text
# (tag, streamed): an unsafe prompt, or a safe prompt to the model whose answer is unsafe, or safe
TRAFFIC_MIX = (
    ("unsafe-prompt", False),
    ("unsafe-completion", False),
    ("safe", False),
    ("safe", True),
    ("unsafe-completion", True),
    ("safe", False),
)


def chat_call(
    prompt: str, *, model: str = "safe-model", tag: str = "safe", stream: bool = False
) -> Call:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    return Call(CHAT, json.dumps(body).encode(), tag + ("-stream" if stream else ""))


def traffic() -> Iterator[Call]:
    """Endless chat calls in the proportions of ``TRAFFIC_MIX`` (the tiny guard's toy texts)."""
    for index in itertools.count():
        tag, stream = TRAFFIC_MIX[index % len(TRAFFIC_MIX)]
        texts = UNSAFE if tag == "unsafe-prompt" else SAFE
        prompt = texts[index // len(TRAFFIC_MIX) % len(texts)]  # each text in turn
        model = "unsafe-model" if tag == "unsafe-completion" else "safe-model"
        yield chat_call(prompt, model=model, tag=tag, stream=stream)


# -- bounded concurrent load --------------------------------------------------------------------
Stop = Callable[[list[Outcome]], bool]
During = Callable[[list[Outcome]], Awaitable[Any]]
KEPT_HEADERS = ("x-litellm-call-id",)


async def post(client: httpx.AsyncClient, call: Call) -> httpx.Response:
    """One POST; once more on a fresh connection when the server closed a kept-alive one (the
    proxy drops a connection after some broken requests; the next request on it would fail)."""
    try:
        return await client.post(call.path, content=call.body)
    except (httpx.ReadError, httpx.RemoteProtocolError):
        return await client.post(call.path, content=call.body, headers={"connection": "close"})


async def send(client: httpx.AsyncClient, call: Call) -> Outcome:
    outcome = Outcome(call, started=time.monotonic(), ended=0.0)
    try:
        response = await post(client, call)
        outcome.status = response.status_code
        outcome.text = response.text[:65536]
        outcome.headers = {
            key: value
            for key, value in response.headers.items()
            if key.startswith("x-harmaug-") or key in KEPT_HEADERS
        }
    except httpx.HTTPError as exc:
        outcome.error = type(exc).__name__
    outcome.ended = time.monotonic()
    return outcome


async def drive(
    proxy: ProxyProcess,
    calls: Iterable[Call],
    *,
    concurrency: int,
    limit_s: float,
    during: During | None = None,
    stop: Stop | None = None,
) -> list[Outcome]:
    """Send ``calls`` with ``concurrency`` clients until they run out, ``stop`` says so, or
    ``limit_s`` passed; ``during`` runs beside the load (and, when given, the load ends with
    it). Outcomes in the order they completed."""
    source = iter(calls)
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + limit_s
    headers = {**proxy.headers, "content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=proxy.url, headers=headers, timeout=60, limits=limits
    ) as client:
        task = asyncio.ensure_future(during(outcomes)) if during else None

        def more() -> bool:
            if time.monotonic() >= deadline or (stop is not None and stop(outcomes)):
                return False
            return task is None or not task.done()

        async def worker() -> None:
            while more():
                call = next(source, None)
                if call is None:
                    return
                outcomes.append(await send(client, call))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if task is not None:
            await asyncio.wait_for(task, max(deadline - time.monotonic(), 1.0))
    return outcomes


async def until(condition: Callable[[], bool], limit_s: float, poll_s: float = 0.05) -> bool:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(poll_s)
    return True


def statuses(outcomes: Iterable[Outcome]) -> dict[str, int]:
    counts = Counter(str(o.status) if o.status is not None else f"none:{o.error}" for o in outcomes)
    return dict(sorted(counts.items()))


# -- proxies ------------------------------------------------------------------------------------
def proxy_config(path: Path, *, guarded: bool = True, faults: bool = False) -> Path:
    """The example config (fail mode closed), without its guardrail when not ``guarded``, with
    the fault-injection callback when ``faults``."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    if guarded:
        for entry in config["guardrails"]:
            entry["litellm_params"]["harmaug_fail_mode"] = "closed"
    else:
        del config["guardrails"]
    if faults:
        config["litellm_settings"] = {"callbacks": FAULT_CALLBACK}
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Bench:
    """Where a run's proxies live and what they serve."""

    guard: Path  # a bundle directory
    root: Path  # scratch folder
    concurrency: int = 16
    limit_s: float = 300.0  # the longest any one load runs

    @contextlib.contextmanager
    def proxy(
        self,
        name: str,
        *,
        guarded: bool = True,
        faults: bool = False,
        env: dict[str, str] | None = None,
    ) -> Iterator[ProxyProcess]:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        config = proxy_config(folder / "config.yaml", guarded=guarded, faults=faults)
        full_env = {
            "HARMAUG_HOME": str(folder / "home"),
            "HARMAUG_GUARD": str(self.guard),
            **(env or {}),
        }
        proxy = run_proxy(config, self.root / f"{name}.log", full_env)
        try:
            yield proxy
        finally:
            proxy.stop()

    def load(self, proxy: ProxyProcess, calls: Iterable[Call], **kwargs: Any) -> list[Outcome]:
        kwargs.setdefault("concurrency", self.concurrency)
        kwargs.setdefault("limit_s", self.limit_s)
        return asyncio.run(drive(proxy, calls, **kwargs))


def alive(proxy: ProxyProcess) -> bool:
    """The process runs, answers its liveliness probe, and serves a safe call."""
    if proxy.process.poll() is not None:
        return False
    try:
        live = httpx.get(f"{proxy.url}/health/liveliness", timeout=10).status_code == 200
        body = {"model": "safe-model", "messages": [{"role": "user", "content": SAFE[0]}]}
        served = httpx.post(
            f"{proxy.url}/v1/chat/completions", json=body, headers=proxy.headers, timeout=60
        )
    except httpx.HTTPError:
        return False
    return live and served.status_code == 200


def log_events(proxy: ProxyProcess, name: str) -> list[dict[str, Any]]:
    found = []
    for line in proxy.logs().splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == name:
                    found.append(event)
    return found


# -- malformed and hostile requests -------------------------------------------------------------
def malformed(
    bench: Bench, *, requests: int = 1000, huge_bytes: int = 1_000_000, store: str | None = None
) -> dict[str, Any]:
    """Hostile requests with and without the guard; with traffic logging into ``store`` (a
    traffic store URL) when given, so that hostile text reaches the store too."""
    hostile = hostile_requests(requests, huge_bytes=huge_bytes)
    calls = [Call(path, body, kind, seq) for seq, (kind, path, body) in enumerate(hostile)]
    home = bench.root / "malformed-guard" / "home"
    env = traffic_env(home, flush_s=0.2, store=store) if store else None
    with bench.proxy("malformed-guard", env=env) as guarded:
        with_guard = bench.load(guarded, calls)
        alive_after = alive(guarded)
        logged = traffic_stats(guarded) if store else None
    with bench.proxy("malformed-no-guard", guarded=False) as bare:
        without = {o.call: o for o in bench.load(bare, calls)}
    judged = [(o, *caused_by_guard(o, without.get(o.call))) for o in with_guard]
    server_errors = [(o, mine) for o, mine, _ in judged if (o.status or 0) >= 500]
    shown = [(o, mine) for o, _, mine in judged if o.internals()]
    return {
        "requests": len(with_guard),
        "kinds": len(KINDS),
        "huge_bytes": huge_bytes,
        "with_guard": statuses(with_guard),
        "without_guard": statuses(without.values()),
        "guard_caused_5xx": sum(mine for _, mine in server_errors),
        "guard_caused_5xx_by_kind": dict(Counter(o.call.tag for o, mine in server_errors if mine)),
        "litellm_own_5xx_by_kind": dict(
            Counter(o.call.tag for o, mine in server_errors if not mine)
        ),
        "responses_with_internals": len(shown),
        "responses_with_internals_without_guard": sum(
            bool(o.internals()) for o in without.values()
        ),
        "internals_caused_by_guard": sum(mine for _, mine in shown),
        "internals_by_kind_guard": {o.call.tag: o.internals() for o, mine in shown if mine},
        "internals_by_kind_litellm_own": {
            o.call.tag: o.internals() for o, mine in shown if not mine
        },
        "no_response": sum(o.status is None for o in with_guard),
        "slowest_kinds_s": {
            "with_guard": slowest_kinds(with_guard),
            "without_guard": slowest_kinds(without.values()),
        },
        "proxy_alive_after": alive_after,
        "traffic_log": logged,
    }


def caused_by_guard(outcome: Outcome, without: Outcome | None) -> tuple[bool, bool]:
    """Whether the guard caused (a 5xx, internals in the body) of a response with the guard: the
    body is the guard's, or the same request without the guard got none."""
    from_guard = "harmaug" in outcome.text
    server_error = (outcome.status or 0) >= 500
    other_error = without is not None and (without.status or 0) >= 500
    shown = set(outcome.internals())
    shown_without = set(without.internals()) if without is not None else set()
    return (
        server_error and (from_guard or not other_error),
        bool(shown) and (from_guard or not shown <= shown_without),
    )


def slowest_kinds(outcomes: Iterable[Outcome], top: int = 5) -> dict[str, float]:
    """The kinds of request that took longest (their slowest request, seconds)."""
    longest: dict[str, float] = {}
    for o in outcomes:
        longest[o.call.tag] = max(longest.get(o.call.tag, 0.0), o.ended - o.started)
    ranked = sorted(longest.items(), key=lambda item: -item[1])[:top]
    return {kind: round(seconds, 2) for kind, seconds in ranked}


# -- the guard failing mid-load -----------------------------------------------------------------
FAULT_PHASES: tuple[tuple[str, str | None], ...] = (
    ("healthy", None),
    ("raise", "raise"),
    ("recovered_after_raise", None),
    ("raise_completion", "raise-completion"),
    ("recovered_after_raise_completion", None),
    ("hang", "hang"),
    ("recovered_after_hang", None),
)


def documented_503(outcome: Outcome) -> bool:
    """The fail-closed refusal of ``Screening.error``: 503, its message, its facts, nothing else."""
    body = outcome.body()
    message = body.get("error", {}).get("message", "") if isinstance(body, dict) else ""
    facts = outcome.harmaug()
    return (
        outcome.status == 503
        and "could not screen" in str(message)
        and facts.get("decision") == "fail_closed"
        and facts.get("reason") in FAIL_REASONS
        and not outcome.internals()
    )


def guard_failure(
    bench: Bench, *, requests_per_phase: int = 100, timeout_s: float = 1.0
) -> dict[str, Any]:
    trigger = bench.root / "fault.trigger"
    env = {
        TRIGGER_ENV: str(trigger),
        "HARMAUG_TIMEOUT_S": str(timeout_s),
        "HARMAUG_CACHE_SIZE": "0",  # every call needs the model
        "HARMAUG_CASCADE": "false",  # no first stage clears a call on its own
    }
    windows: list[tuple[str, str | None, float, float]] = []

    async def phases(outcomes: list[Outcome]) -> None:
        try:
            for name, mode in FAULT_PHASES:
                set_fault(trigger, mode)
                start = time.monotonic()

                def filled(start: float = start) -> bool:
                    return sum(o.started >= start for o in outcomes) >= requests_per_phase

                await until(filled, bench.limit_s)
                windows.append((name, mode, start, time.monotonic()))
        finally:
            set_fault(trigger, None)

    with bench.proxy("guard-failure", faults=True, env=env) as proxy:
        outcomes = bench.load(proxy, traffic(), during=phases)
        alive_after = alive(proxy)
    report: dict[str, Any] = {"guard_timeout_s": timeout_s, "phases": {}}
    inside: set[int] = set()
    for name, mode, start, end in windows:
        calls = [o for o in outcomes if o.started >= start and o.ended <= end]
        inside.update(id(o) for o in calls)
        report["phases"][name] = phase_figures(calls, faulty=mode is not None)
    boundary = [o for o in outcomes if id(o) not in inside]
    report["boundary_calls"] = {"calls": len(boundary), "status": statuses(boundary)}
    faulty = [report["phases"][name] for name, mode in FAULT_PHASES if mode]
    report["passed_during_fault"] = sum(p["passed"] for p in faulty)
    report["unsafe_passed_during_fault"] = sum(p["unsafe_passed"] for p in faulty)
    report["fault_calls_not_refused_as_documented"] = sum(
        p["calls"] - p["documented_503"] - p["blocked_by_verdict"] for p in faulty
    )
    report["proxy_alive_after"] = alive_after
    return report


def phase_figures(calls: list[Outcome], *, faulty: bool) -> dict[str, Any]:
    unsafe = [o for o in calls if o.call.tag.startswith("unsafe")]
    figures: dict[str, Any] = {
        "calls": len(calls),
        "status": statuses(calls),
        "passed": sum(o.status == 200 for o in calls),
        "unsafe_calls": len(unsafe),
        "unsafe_passed": sum(o.status == 200 or UNSAFE_ANSWER in o.text for o in unsafe),
    }
    if faulty:
        figures["documented_503"] = sum(documented_503(o) for o in calls)
        figures["blocked_by_verdict"] = sum(o.blocked for o in calls)  # prompts still scored
        figures["reasons"] = dict(Counter(str(o.harmaug().get("reason")) for o in calls))
    else:
        figures["answered"] = sum(o.answered for o in calls)
    return figures


# -- hot reload under load ----------------------------------------------------------------------
def stamped(bundle: Path, out: Path, version: str) -> Path:
    """A copy of ``bundle`` that says it is ``version``."""
    from guard_plugin.bundle import GuardBundle, write_manifest

    shutil.copytree(bundle, out)
    manifest = GuardBundle.load(out).manifest
    write_manifest(out, manifest.model_copy(update={"version": version}))
    return out


def two_version_registry(bundle: Path, home: Path, versions: tuple[str, str]) -> Any:
    """A registry in ``home`` with both versions, the first one champion."""
    from distill.registry import Registry

    registry = Registry(home / "registry")
    for version in versions:
        registry.register(stamped(bundle, home / "incoming" / version, version), move=True)
    registry.promote(versions[0])
    return registry


def hot_reload(
    bench: Bench, *, requests: int = 400, interval_s: float = 0.5, min_new: int = 50
) -> dict[str, Any]:
    old, new = "faults-v1", "faults-v2"
    home = bench.root / "hot-reload" / "home"
    registry = two_version_registry(bench.guard, home, (old, new))
    env = {
        "HARMAUG_HOME": str(home),
        "HARMAUG_GUARD": "champion",
        "HARMAUG_RELOAD_INTERVAL_S": str(interval_s),
    }
    promoted: list[float] = []

    def served_by_new(outcomes: list[Outcome]) -> int:
        return sum(o.headers.get("x-harmaug-guard-version") == new for o in outcomes)

    async def promote(outcomes: list[Outcome]) -> None:
        await until(lambda: len(outcomes) >= requests // 4, bench.limit_s)
        promoted.append(time.monotonic())
        await asyncio.to_thread(registry.promote, new, force=True)
        await until(lambda: served_by_new(outcomes) >= min(min_new, requests // 4), bench.limit_s)
        await until(lambda: len(outcomes) >= requests, bench.limit_s)

    with bench.proxy("hot-reload", env=env) as proxy:
        outcomes = bench.load(proxy, traffic(), during=promote)
        alive_after = alive(proxy)
    served = [(o, o.headers.get("x-harmaug-guard-version", "none")) for o in outcomes]
    first_new = min((o.ended for o, version in served if version == new), default=None)
    return {
        "calls": len(outcomes),
        "status": statuses(outcomes),
        "failed_calls": sum(not o.answered for o in outcomes),
        "served_by_version": dict(Counter(version for _, version in served)),
        "promoted_after_calls": requests // 4,
        "first_new_version_answer_after_promote_s": (
            round(first_new - promoted[0], 2) if first_new is not None and promoted else None
        ),
        "old_version_after_first_new": sum(
            version == old and first_new is not None and o.started > first_new
            for o, version in served
        ),
        "reload_interval_s": interval_s,
        "proxy_alive_after": alive_after,
    }


# -- stopping the gateway under load with traffic logging on -------------------------------------
def expected_parts(outcome: Outcome) -> set[tuple[str, str]]:
    """The (request id, part) records a call that got a response must leave in the store."""
    call_id = outcome.headers.get("x-litellm-call-id")
    if not call_id or not outcome.answered:
        return set()
    if outcome.blocked and outcome.harmaug().get("part") == "prompt":
        return {(call_id, "prompt")}
    return {(call_id, "prompt"), (call_id, "completion")}


def records_missing(
    outcomes: list[Outcome], stored: set[tuple[str, str]], *, since: float = 0.0
) -> int:
    """Records of the calls (started after ``since``) that got a response, not in ``stored``."""
    expected = set().union(*(expected_parts(o) for o in outcomes if o.started > since))
    return len(expected - stored)


def stored_parts(store: Any) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    mark = 0
    while True:
        records, mark_after = store.read_since(mark, 10_000)
        found.update((str(r.request_id), str(r.meta.get("part"))) for r in records)
        if not records or mark_after == mark:
            return found
        mark = mark_after


def sqlite_parts(path: Path) -> set[tuple[str, str]]:
    """What the SQLite store at ``path`` holds (nothing while it does not exist yet)."""
    from adapters.traffic import SQLiteTrafficStore, StoreUnavailable

    if not path.exists():
        return set()
    try:
        store = SQLiteTrafficStore(path)
    except StoreUnavailable:
        return set()
    try:
        return stored_parts(store)
    except StoreUnavailable:  # the table is not there yet
        return set()
    finally:
        store.close()


def traffic_env(home: Path, flush_s: float, store: str | None = None) -> dict[str, str]:
    env = {
        "HARMAUG_HOME": str(home),
        "HARMAUG_TRAFFIC_LOG": "true",
        "HARMAUG_TRAFFIC_FLUSH_S": str(flush_s),
    }
    if store is not None:
        env["HARMAUG_TRAFFIC_STORE"] = store
    return env


def stop_under_load(
    bench: Bench, sig: signal.Signals, *, requests: int = 300, flush_s: float = 2.0
) -> dict[str, Any]:
    name = sig.name.lower()
    home = bench.root / name / "home"
    env = traffic_env(home, flush_s)
    signalled: list[float] = []

    with bench.proxy(name, env=env) as proxy:

        async def stop_it(outcomes: list[Outcome]) -> None:
            await until(lambda: len(outcomes) >= requests // 2, bench.limit_s)
            signalled.append(len(outcomes))
            proxy.process.send_signal(sig)

        outcomes = bench.load(
            proxy,
            itertools.islice(traffic(), requests),
            during=stop_it,
            stop=lambda _: proxy.process.poll() is not None,
        )
        exit_code = proxy.wait_exit(120)
        flushed = log_events(proxy, "traffic_flushed")
    acknowledged = set().union(*map(expected_parts, outcomes))
    stored = sqlite_parts(home / "traffic.sqlite")
    report: dict[str, Any] = {
        "calls_sent": len(outcomes),
        "answered": sum(o.answered for o in outcomes),
        "status": statuses(outcomes),
        "signal_after_calls": signalled[0] if signalled else None,
        "exit_code": exit_code,
        "flush_s": flush_s,
        "acknowledged_records": len(acknowledged),
        "stored_records": len(stored),
        "acknowledged_records_lost": records_missing(outcomes, stored),
    }
    if sig == signal.SIGTERM:
        report["traffic_flushed"] = flushed[-1] if flushed else None
    else:
        report["next_start_reports_lost"] = reported_lost(bench, name, env)
    return report


def traffic_stats(proxy: ProxyProcess) -> dict[str, Any]:
    """Stop the proxy gracefully; the traffic logger's counts (logged at its close) and how
    often a write failed."""
    proxy.process.send_signal(signal.SIGTERM)
    proxy.wait_exit(120)
    flushed = (log_events(proxy, "traffic_flushed") or [{}])[-1]
    counts = ("logged", "written", "dropped_store", "dropped_full")
    return {
        **{key: flushed.get(key) for key in counts},
        "write_failures": sum(
            len(log_events(proxy, name))
            for name in ("traffic_store_unavailable", "traffic_write_failed")
        ),
    }


def reported_lost(bench: Bench, name: str, env: dict[str, str]) -> int | None:
    """``records`` of the ``traffic_records_lost`` events a new proxy with the same home logs
    at start-up (the traffic logger starts with the guardrail); None when it logs none."""
    with bench.proxy(f"{name}-next-start", env=env) as proxy:
        events = log_events(proxy, "traffic_records_lost")
    return sum(int(e["records"]) for e in events) if events else None


# -- the traffic store going down -----------------------------------------------------------------
def sqlite_files(path: Path) -> list[Path]:
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def chattr(flag: str, files: list[Path]) -> bool:
    if not files or shutil.which("chattr") is None:
        return False
    done = subprocess.run(["chattr", flag, *map(str, files)], capture_output=True)
    return done.returncode == 0


@contextlib.contextmanager
def sqlite_unwritable(path: Path) -> Iterator[str]:
    """No writes reach the SQLite store inside: its files made immutable (``chattr +i``: root
    writes to a mode-0444 file anyway) or, where that is refused, an exclusive write lock held
    by another connection (each write then fails after the store's busy timeout). Yields which."""
    files = sqlite_files(path)
    if chattr("+i", files):
        try:
            yield "chattr +i"
        finally:
            chattr("-i", files)
        return
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield "exclusive lock from another connection"
    finally:
        holder.execute("ROLLBACK")
        holder.close()


class TcpForwarder:
    """127.0.0.1:port -> target, which can be stopped (every connection cut, new ones refused)
    and started again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> TcpForwarder:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        for sock in [s for s in (listener, *sockets) if s is not None]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                return
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@dataclass
class StoreFault:
    """How one store goes down and comes back, and how to read what it holds."""

    url: str
    down: Callable[[], contextlib.AbstractContextManager[str]]
    parts: Callable[[], set[tuple[str, str]]]
    cleanup: Callable[[], None] = lambda: None


def sqlite_fault(folder: Path) -> StoreFault:
    path = folder / "store" / "traffic.sqlite"  # its own folder: the home stays writable
    return StoreFault(str(path), lambda: sqlite_unwritable(path), lambda: sqlite_parts(path))


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def traffic_store(kind: str, folder: Path, postgres: str) -> Iterator[str | None]:
    """A fresh traffic store URL: ``sqlite`` (a file in ``folder``), ``postgres`` (a schema of
    its own, dropped after), ``none`` (None: traffic logging off)."""
    if kind == "none":
        yield None
    elif kind == "sqlite":
        yield str(folder / "traffic.sqlite")
    else:
        schema = f"harmaug_faults_{secrets.token_hex(4)}"
        try:
            yield f"{postgres}?schema={schema}"
        finally:
            drop_schema(postgres, schema)


def postgres_fault(dsn: str) -> StoreFault:
    from urllib.parse import urlsplit

    from adapters.traffic.postgres import PostgresTrafficStore

    target = urlsplit(dsn)
    forwarder = TcpForwarder((target.hostname or "127.0.0.1", target.port or 5432)).start()
    schema = f"harmaug_faults_{secrets.token_hex(4)}"
    via = target._replace(netloc=f"{target.username or 'postgres'}@127.0.0.1:{forwarder.port}")

    @contextlib.contextmanager
    def down() -> Iterator[str]:
        forwarder.stop()
        try:
            yield "tcp forwarder stopped (connections cut, new ones refused)"
        finally:
            forwarder.start()

    def parts() -> set[tuple[str, str]]:
        store = PostgresTrafficStore(dsn, schema=schema)
        try:
            return stored_parts(store)
        finally:
            store.close()

    def cleanup() -> None:
        forwarder.stop()
        drop_schema(dsn, schema)

    return StoreFault(f"{via.geturl()}?schema={schema}", down, parts, cleanup)


def store_down(
    bench: Bench,
    backend: str,
    *,
    down_s: float = 5.0,
    warm_calls: int = 40,
    after_s: float = 2.0,
    flush_s: float = 0.2,
    postgres: str = POSTGRES,
) -> dict[str, Any]:
    name = f"store-down-{backend}"
    folder = bench.root / name
    fault = sqlite_fault(folder) if backend == "sqlite" else postgres_fault(postgres)
    timeline: dict[str, Any] = {}
    resumed_at: list[float] = []

    async def outage(outcomes: list[Outcome]) -> None:
        await until(lambda: len(outcomes) >= warm_calls, bench.limit_s)
        await until(lambda: bool(fault.parts()), bench.limit_s, poll_s=0.2)  # the store is open
        with fault.down() as how:
            timeline.update(method=how, down_s=down_s)
            await asyncio.sleep(down_s)
        back = time.monotonic()

        def resumed() -> bool:
            later = [o for o in outcomes if o.started > back]
            return bool(set().union(*map(expected_parts, later)) & fault.parts())

        timeline["resumed"] = await until(resumed, 60.0, poll_s=0.2)
        timeline["resumed_after_s"] = round(time.monotonic() - back, 2)
        resumed_at.append(time.monotonic())
        await asyncio.sleep(after_s)  # the load goes on with the store back

    try:
        with bench.proxy(name, env=traffic_env(folder / "home", flush_s, fault.url)) as proxy:
            outcomes = bench.load(proxy, traffic(), concurrency=4, during=outage)
            stats = traffic_stats(proxy)
            exited = proxy.process.poll()  # why calls failed, when they did: a dead proxy?
            log_tail = proxy.logs()[-2000:] if any(not o.answered for o in outcomes) else None
        stored = fault.parts()
    finally:
        fault.cleanup()
    logged, written = stats["logged"], stats["written"]
    dropped = (stats["dropped_store"] or 0) + (stats["dropped_full"] or 0)
    return {
        **timeline,
        "calls": len(outcomes),
        "status": statuses(outcomes),
        "calls_failed": sum(not o.answered for o in outcomes),
        "records_acknowledged": logged,
        "records_written": written,
        "records_dropped_counted": None if logged is None else dropped,
        "store_write_failures": stats["write_failures"],
        "records_in_store": len(stored),
        "records_unaccounted": None if logged is None else logged - (written or 0) - dropped,
        "answered_calls_records_missing": records_missing(outcomes, stored),
        "records_missing_of_calls_after_resume": (
            records_missing(outcomes, stored, since=resumed_at[0]) if resumed_at else None
        ),
        "proxy_exit_code": exited,
        "proxy_log_tail_if_calls_failed": log_tail,
    }


# -- the run --------------------------------------------------------------------------------------
def run_case(bench: Bench, case: str, args: argparse.Namespace) -> dict[str, Any]:
    if case == "malformed":
        with traffic_store(args.malformed_store, bench.root, args.postgres) as store:
            return malformed(
                bench, requests=args.malformed, huge_bytes=args.huge_bytes, store=store
            )
    if case == "guard_failure":
        return guard_failure(
            bench, requests_per_phase=args.fault_requests, timeout_s=args.guard_timeout_s
        )
    if case == "hot_reload":
        return hot_reload(bench, requests=args.reload_requests)
    if case in ("sigterm", "kill"):
        sig = signal.SIGTERM if case == "sigterm" else signal.SIGKILL
        return stop_under_load(bench, sig, requests=args.stop_requests, flush_s=args.flush_s)
    backend = case.removeprefix("store_down_")
    return store_down(bench, backend, down_s=args.down_s, postgres=args.postgres)


def goals(results: dict[str, Any]) -> dict[str, bool]:
    """Each measured figure against its goal (only for the cases that ran)."""
    checks: dict[str, Callable[[dict[str, Any]], bool]] = {
        "malformed": lambda r: (
            r["guard_caused_5xx"] == 0
            and r["internals_caused_by_guard"] == 0
            and r["proxy_alive_after"]
            and (r["traffic_log"] is None or r["traffic_log"]["write_failures"] == 0)
        ),
        "guard_failure": lambda r: (
            r["unsafe_passed_during_fault"] == 0
            and r["passed_during_fault"] == 0
            and r["fault_calls_not_refused_as_documented"] == 0
        ),
        "hot_reload": lambda r: r["failed_calls"] == 0 and len(r["served_by_version"]) >= 2,
        "sigterm": lambda r: r["acknowledged_records_lost"] == 0,
        "kill": lambda r: (r["next_start_reports_lost"] or 0) >= r["acknowledged_records_lost"],
        "store_down_sqlite": store_goal,
        "store_down_postgres": store_goal,
    }
    return {case: checks[case](found) for case, found in results.items() if "error" not in found}


def store_goal(found: dict[str, Any]) -> bool:
    return (
        found["calls_failed"] == 0
        and found["records_unaccounted"] == 0
        and found["records_missing_of_calls_after_resume"] == 0
    )


def guard_bundle(guard: str) -> Path:
    from guard_plugin.locate import resolve_guard_path
    from guard_plugin.settings import GuardSettings

    return resolve_guard_path(GuardSettings(guard=guard)).resolve()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guard", default=os.environ.get("HARMAUG_GUARD", "champion"))
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {CASES}")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--malformed", type=int, default=1000, help="hostile requests")
    parser.add_argument("--huge-bytes", type=int, default=1_000_000, help="huge body size")
    parser.add_argument(
        "--malformed-store",
        choices=("postgres", "sqlite", "none"),
        default="postgres",
        help="traffic store the hostile requests are logged to (none: logging off)",
    )
    parser.add_argument("--fault-requests", type=int, default=100, help="calls per fault phase")
    parser.add_argument("--guard-timeout-s", type=float, default=1.0)
    parser.add_argument("--reload-requests", type=int, default=400)
    parser.add_argument("--stop-requests", type=int, default=300)
    parser.add_argument("--flush-s", type=float, default=2.0, help="traffic flush interval")
    parser.add_argument("--down-s", type=float, default=5.0, help="store outage")
    parser.add_argument("--postgres", default=os.environ.get("HARMAUG_TEST_POSTGRES", POSTGRES))
    parser.add_argument("--limit-s", type=float, default=300.0, help="longest load of a case")
    args = parser.parse_args()
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {CASES}")

    from guard_plugin.logs import configure_logging

    configure_logging()  # log events (the registry's too) on stderr: stdout is the JSON
    guard = guard_bundle(args.guard)
    results: dict[str, Any] = {}
    started = time.monotonic()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="harmaug-faults-") as tmp:
        bench = Bench(guard, Path(tmp), concurrency=args.concurrency, limit_s=args.limit_s)
        for case in cases:
            case_started = time.monotonic()
            try:
                results[case] = run_case(bench, case, args)
            except Exception as exc:  # one broken case must not hide the others' figures
                results[case] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            results[case]["wall_s"] = round(time.monotonic() - case_started, 1)
    print(
        json.dumps(
            {
                "guard": str(guard),
                "cpu_count": os.cpu_count(),
                "load_average_at_start": load_at_start,
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                "wall_s": round(time.monotonic() - started, 1),
                **results,
                "goals_met": goals(results),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
