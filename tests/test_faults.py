"""The fault benchmark's cases (``benchmarks/faults.py``), small: a few requests each against the
real proxy with the tiny guard, so that what the benchmark measures stays true.

* hostile requests: no 5xx caused by the guard, no internals in a body, the proxy alive after,
  every record of them written to the traffic store;
* the guard failing (scoring raises, raises for completions only, hangs) with fail mode closed:
  nothing passes, every call made during the fault gets the documented 503 (streams too) unless
  its prompt was blocked, and the guard recovers;
* hot reload of a new champion under load: no failed call, both versions served;
* SIGTERM under load with traffic logging on: no acknowledged record lost; SIGKILL: the next
  start reports at least the records the killed process lost;
* the traffic store down (SQLite made unwritable; Postgres behind a stopped TCP forwarder): no
  call fails, every record is written or counted as dropped, logging resumes.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from benchmarks.faults import (
    POSTGRES,
    Bench,
    guard_failure,
    hot_reload,
    malformed,
    stop_under_load,
    store_down,
)
from benchmarks.hostile_requests import KINDS

pytestmark = pytest.mark.integration


@pytest.fixture()
def bench(tiny_torch_bundle: Path, tmp_path: Path) -> Bench:
    return Bench(tiny_torch_bundle, tmp_path, concurrency=4, limit_s=90)


def test_hostile_requests_cause_no_5xx_and_show_no_internals(bench: Bench) -> None:
    bench.concurrency = 8  # the proxy without the guard retries some upstream errors for seconds
    store = str(bench.root / "traffic.sqlite")  # hostile text reaches the traffic store too
    found = malformed(bench, requests=len(KINDS), huge_bytes=100_000, store=store)
    assert found["guard_caused_5xx"] == 0, found
    assert found["internals_caused_by_guard"] == 0, found
    assert found["proxy_alive_after"]
    logged = found["traffic_log"]
    assert logged["logged"] > 0 and logged["written"] == logged["logged"], found
    assert logged["write_failures"] == 0, found


def test_a_failing_guard_refuses_every_call_during_the_fault_with_the_documented_503(
    bench: Bench,
) -> None:
    found = guard_failure(bench, requests_per_phase=8, timeout_s=0.5)
    phases = found["phases"]
    assert phases["raise"]["calls"] and phases["hang"]["calls"], found
    assert phases["raise"]["reasons"] == {"error": phases["raise"]["calls"]}
    assert phases["hang"]["reasons"] == {"timeout": phases["hang"]["calls"]}
    assert phases["raise_completion"]["documented_503"] > 0, found  # streams too
    assert found["passed_during_fault"] == found["unsafe_passed_during_fault"] == 0, found
    assert found["fault_calls_not_refused_as_documented"] == 0, found
    for name, phase in phases.items():
        if name == "healthy" or name.startswith("recovered"):
            assert phase["answered"] == phase["calls"], found
    assert found["proxy_alive_after"]


def test_hot_reload_under_load_fails_no_call(bench: Bench) -> None:
    found = hot_reload(bench, requests=40, min_new=5)
    assert found["failed_calls"] == 0, found
    assert {"faults-v1", "faults-v2"} <= set(found["served_by_version"]), found


def test_sigterm_under_load_loses_no_acknowledged_record(bench: Bench) -> None:
    found = stop_under_load(bench, signal.SIGTERM, requests=40)
    assert found["acknowledged_records"] > 0, found
    assert found["acknowledged_records_lost"] == 0, found


def test_kill_under_load_is_reported_at_the_next_start(bench: Bench) -> None:
    found = stop_under_load(bench, signal.SIGKILL, requests=30)
    assert found["acknowledged_records_lost"] > 0, found  # flushed every 2 s: still queued
    assert found["next_start_reports_lost"] >= found["acknowledged_records_lost"], found


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_store_down_fails_no_call_counts_every_drop_and_resumes(bench: Bench, backend: str) -> None:
    server = os.environ.get("HARMAUG_TEST_POSTGRES", POSTGRES)
    found = store_down(bench, backend, down_s=1.0, warm_calls=8, after_s=0.5, postgres=server)
    assert found["calls_failed"] == 0, found
    assert found["records_unaccounted"] == 0, found
    assert found["resumed"] and found["records_missing_of_calls_after_resume"] == 0, found
    if found["method"] != "exclusive lock from another connection":  # a lock only delays writes
        assert found["records_dropped_counted"] > 0, found
    assert found["answered_calls_records_missing"] <= found["records_dropped_counted"], found
