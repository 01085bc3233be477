"""The retraining cycle on tiny models: selection, a promoted cycle, resume after a crash at every
stage, a worse challenger refused, the lock, and the CLI."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import pytest

from adapters.teachers import Pair
from adapters.traffic import SQLiteTrafficStore, TrafficRecord
from distill.loop import (
    STAGES,
    CycleBusy,
    cycle_lock,
    parse_duration,
    run_cycle,
    select_for_labelling,
)
from distill.records import Example, read_jsonl, write_jsonl
from distill.registry import Registry
from distill.settings import DistillSettings, LoopSettings, TrainRecipe
from distill.teachers import ClassifierTeacher
from tests.tiny_guard import FILLER, SAFE, UNSAFE

REPO = Path(__file__).resolve().parents[1]
FAST_RECIPE = TrainRecipe(
    max_steps=4, batch_size=8, max_windows=1, checkpoint_every=1, log_every=1, warmup_ratio=0.0
)


def traffic(n_from: int, texts: Sequence[tuple[str, int]]) -> list[TrafficRecord]:
    """Logged screenings as the gateway writes them (student scores that match the toy labels)."""
    now = datetime.now(timezone.utc)
    return [
        TrafficRecord(
            id=f"t{n_from + i}",
            time=now,
            request_id=f"req-{n_from + i}",
            prompt=text,
            completion="sure, here it is" if i % 5 == 0 else None,
            p_unsafe=0.93 if unsafe else (0.45 if i % 7 == 0 else 0.04),
            decision="block" if unsafe else "allow",
            guard_version="tiny-onnx-1",
        )
        for i, (text, unsafe) in enumerate(texts)
    ]


TOY: list[tuple[str, Literal[0, 1]]] = [(t, 0) for t in SAFE] + [(t, 1) for t in UNSAFE]


@pytest.fixture()
def loop_settings(tmp_path: Path, tiny_onnx_bundle: Path, tiny_hf_dir: Path) -> DistillSettings:
    home = tmp_path / "home"
    registry = Registry(home / "registry")
    registry.register(tiny_onnx_bundle)
    registry.promote("tiny-onnx-1")
    gate = write_jsonl(
        home / "gate.jsonl",
        [Example(prompt=t, label=y, source="toy") for t, y in TOY]
        + [Example(prompt=f"{FILLER} {t}", label=y, source="toy-long") for t, y in TOY[::3]],
    )
    store = SQLiteTrafficStore(home / "traffic.sqlite")
    store.append(traffic(0, TOY))
    store.append([TrafficRecord(id="no-text", time=datetime.now(timezone.utc), p_unsafe=0.2)])
    store.close()
    return DistillSettings(
        home=home,
        loop=LoopSettings(
            teacher=f"classifier:{tiny_hf_dir}",
            budget=80,
            min_records=10,
            min_holdout=5,
            seeds=False,
            gate_set=gate,
            validation_set=gate,
            recipe=FAST_RECIPE,
            int8=False,
        ),
    )


def state(settings: DistillSettings) -> dict:
    return json.loads((settings.home / "loop" / "state.json").read_text())


def test_selection_takes_flagged_uncertain_and_a_sample_within_budget() -> None:
    records = [
        TrafficRecord(id=str(i), time=datetime.now(timezone.utc), prompt=str(i), p_unsafe=p)
        for i, p in enumerate([0.95] * 10 + [0.45] * 10 + [0.55] * 3 + [0.02] * 100)
    ]
    chosen = select_for_labelling(
        records, threshold=0.5, budget=30, band=0.1, random_share=0.2, rng=random.Random(0)
    )
    reasons = [why for _, why in chosen]
    assert len(chosen) == 30 == len({r.id for r, _ in chosen})
    assert reasons.count("flagged") == 13  # >= threshold (10 + 3)
    assert reasons.count("uncertain") == 10  # all of the band (the priority budget is 24)
    assert reasons.count("sample") == 7  # 20% of the budget, plus what the others left


def test_a_cycle_promotes_and_the_watermark_moves_only_with_new_traffic(
    loop_settings: DistillSettings,
) -> None:
    report = run_cycle(loop_settings)
    registry = Registry(loop_settings.registry_path())
    assert report["decision"]["promoted"] is True, report["decision"]
    assert registry.champion() == report["version"] == "loop-" + report["cycle_id"]
    selection = report["selection"]
    assert selection["read"] == len(TOY) + 1 and selection["with_text"] == len(TOY)
    assert selection["selected"]["flagged"] == len(UNSAFE)
    assert sum(selection["selected"].values()) == 80  # the budget
    assert report["labelling"]["agreement"]["agreement"] > 0.8  # the tiny guard agrees with itself
    assert set(report["metrics"]["champion"]) == {"gate", "holdout"}
    assert report["dataset"]["train"] + report["dataset"]["holdout"] == 80
    assert state(loop_settings)["watermarks"] and state(loop_settings)["pending"] is None
    manifest = json.loads((registry.path(report["version"]) / "guard.json").read_text())
    assert manifest["training_data"]["warm_start"] == "tiny-onnx-1"
    assert (loop_settings.home / "loop" / "reports" / f"{report['cycle_id']}.json").is_file()

    idle = run_cycle(loop_settings)  # nothing new: skipped, no new version
    assert idle["skipped"] and registry.champion() == report["version"]
    assert state(loop_settings)["cycles"] == 1

    SQLiteTrafficStore(loop_settings.home / "traffic.sqlite").append(traffic(1000, TOY[:30]))
    again = run_cycle(loop_settings)
    assert again["selection"]["read"] == 30  # only what came after the watermark
    assert again["base_version"] == report["version"]
    pool = read_jsonl(loop_settings.home / "loop" / "traffic_labelled.jsonl")
    labelled = {
        r.id
        for cycle in (report, again)
        for r in read_jsonl(
            loop_settings.home / "loop/cycles" / cycle["cycle_id"] / "labelled.jsonl"
        )
    }
    assert len(pool) == len({r.id for r in pool}) == len(labelled)  # each labelled record once


class Crash(Exception):
    pass


def test_a_cycle_crashed_at_every_stage_resumes_without_loss_or_double_counting(
    loop_settings: DistillSettings,
) -> None:
    cycles_dir = loop_settings.home / "loop" / "cycles"
    first_outputs: dict[str, int] = {}
    for stage in STAGES:

        def crash(done: str, at: str = stage) -> None:
            if done == at:
                raise Crash(at)

        with pytest.raises(Crash):
            run_cycle(loop_settings, after_stage=crash)
        pending = state(loop_settings)["pending"]
        assert pending is not None and state(loop_settings)["watermarks"] == {}
        (cycle_dir,) = cycles_dir.iterdir()  # the same cycle every time
        for name in ("selection.json", "labelled.jsonl", "train.json", "publish.json"):
            path = cycle_dir / name
            if path.exists():  # written once, by the first attempt that reached it
                first_outputs.setdefault(name, path.stat().st_mtime_ns)
                assert path.stat().st_mtime_ns == first_outputs[name]

    report = run_cycle(loop_settings)
    assert report["decision"]["promoted"] is True
    assert list(report["stage_seconds"]) == ["finish_s"]  # every other stage was already done
    final = state(loop_settings)
    assert final["cycles"] == 1 and final["pending"] is None
    assert list(final["watermarks"].values()) == [report["to_watermark"]]
    pool = read_jsonl(loop_settings.home / "loop" / "traffic_labelled.jsonl")
    assert len(pool) == 80 == len({r.id for r in pool})
    assert Registry(loop_settings.registry_path()).champion() == report["version"]
    assert run_cycle(loop_settings)["skipped"]  # and nothing is read twice


class InvertedTeacher(ClassifierTeacher):
    """A teacher that gets everything backwards."""

    def __init__(self, inner: ClassifierTeacher) -> None:
        super().__init__(inner.model)
        self.teacher_id = "inverted:" + inner.teacher_id

    def score(self, pairs: Sequence[Pair]) -> list[float]:
        return [1.0 - p for p in super().score(pairs)]


def test_a_worse_challenger_is_not_promoted(
    loop_settings: DistillSettings, tiny_hf_dir: Path
) -> None:
    """Backwards labels and a learning rate that wrecks the student: the fixed gate set (the
    holdout is made too small to gate here) must stop it."""
    wrecking = FAST_RECIPE.model_copy(update={"lr": 0.05, "epochs": 1})
    loop = loop_settings.loop.model_copy(update={"recipe": wrecking, "min_holdout": 10**6})
    settings = loop_settings.model_copy(update={"loop": loop})
    report = run_cycle(settings, teacher=InvertedTeacher(ClassifierTeacher.load(tiny_hf_dir)))
    decision = report["decision"]
    assert decision["promoted"] is False and "challenger is worse" in decision["reason"], decision
    assert decision["holdout_gate"]["passed"] is None
    after, before = report["metrics"]["challenger"]["gate"], report["metrics"]["champion"]["gate"]
    assert after["auprc"] < before["auprc"] - settings.loop.tolerance
    registry = Registry(settings.registry_path())
    assert registry.champion() == "tiny-onnx-1"
    assert report["version"] in {row["version"] for row in registry.entries()}  # kept, not served
    assert state(settings)["cycles"] == 1  # a rejected cycle is a finished cycle


def test_two_cycles_never_run_at_once(loop_settings: DistillSettings) -> None:
    with cycle_lock(loop_settings.home / "loop"), pytest.raises(CycleBusy):
        run_cycle(loop_settings)


def test_cli_cycle_and_durations(
    loop_settings: DistillSettings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from guard_plugin.cli import main

    assert parse_duration("90s") == 90 and parse_duration("1h30m") == 5400
    assert parse_duration("1d") == 86400
    monkeypatch.setenv("HARMAUG_HOME", str(loop_settings.home))
    monkeypatch.setenv("HARMAUG_LOOP", loop_settings.loop.model_dump_json())
    assert main(["distill", "cycle", "--quiet", "--store", str(loop_settings.home / "t.db")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["skipped"] is True and out["selection"]["read"] == 0
    with cycle_lock(loop_settings.home / "loop"):
        assert main(["distill", "cycle", "--quiet"]) == 75  # busy: try again later
    store = str(loop_settings.home / "t.db")
    loop = ["distill", "loop", "--every", "1s", "--max-cycles", "2", "--quiet", "--store", store]
    assert main(loop) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(json.loads(line)["skipped"] for line in lines)


def test_a_cycle_killed_mid_training_resumes_from_its_checkpoint(
    loop_settings: DistillSettings,
) -> None:
    """``harmaug distill cycle`` in a subprocess, SIGKILLed while it trains; the next cycle
    resumes the same cycle from the trainer's last checkpoint."""
    slow = FAST_RECIPE.model_copy(update={"max_steps": 12, "epochs": 10})
    loop = loop_settings.loop.model_copy(update={"recipe": slow})
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HARMAUG_HOME": str(loop_settings.home),
        "HARMAUG_LOOP": loop.model_dump_json(),
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "guard_plugin.cli", "distill", "cycle", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cycles = loop_settings.home / "loop" / "cycles"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(cycles.glob("*/run/checkpoints/latest.json")):
        assert child.poll() is None, "the cycle ended before it was killed"
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert state(loop_settings)["watermarks"] == {}  # nothing moved

    report = run_cycle(loop_settings.model_copy(update={"loop": loop}))
    assert report["train"]["resumed_from"] >= 1
    assert report["decision"]["promoted"] is True
    assert list(state(loop_settings)["watermarks"].values()) == [report["to_watermark"]]
