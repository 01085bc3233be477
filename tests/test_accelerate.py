"""Data-parallel training: two CPU processes (gloo) under `accelerate launch` == one process.

accelerate's multi-process launcher (torchrun underneath) with ACCELERATE_USE_CPU=true makes
every process a CPU rank of a gloo process group; each takes its share of every global batch.
Dropout is off in this student so that the two runs can be compared number for number.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from distill.records import Example, write_jsonl
from distill.settings import TrainRecipe
from distill.trainer import train
from tests.tiny_guard import FILLER, SAFE, UNSAFE

REPO = Path(__file__).resolve().parents[1]
RECIPE = TrainRecipe(
    lr=2e-3,
    epochs=3,
    batch_size=16,
    grad_accumulation=2,
    max_length=32,
    window_stride=8,
    max_windows=3,
    checkpoint_every=5,
    log_every=2,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def student_without_dropout(tiny_encoder_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "student"
    shutil.copytree(tiny_encoder_dir, root)
    config = json.loads((root / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (root / "config.json").write_text(json.dumps(config))
    return root


def mixed_records() -> list[Example]:
    """Hard labels, teacher scores, and long pairs that need several windows."""
    records = [Example(prompt=t, label=0, source="safe", p_unsafe=0.1) for t in SAFE]
    records += [
        Example(prompt=f"{FILLER} {t}", response="ok " * 30, label=1, source="unsafe")
        for t in UNSAFE
    ]
    return records


@pytest.mark.usefixtures("one_torch_thread")  # as each of the two processes
def test_two_processes_follow_the_one_process_path(student_without_dropout, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", mixed_records())
    single = train(
        mixed_records(),
        base_model=student_without_dropout,
        out_dir=tmp_path / "one",
        recipe=RECIPE,
        progress=False,
    )

    flags = {
        "--epochs": RECIPE.epochs,
        "--batch-size": RECIPE.batch_size,
        "--grad-accumulation": RECIPE.grad_accumulation,
        "--lr": RECIPE.lr,
        "--max-length": RECIPE.max_length,
        "--max-windows": RECIPE.max_windows,
        "--checkpoint-every": RECIPE.checkpoint_every,
    }
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "true",
        "PYTHONPATH": str(REPO),
        "HF_HOME": str(tmp_path / "hf_home"),  # no user accelerate config
        "HARMAUG_TRAIN__WINDOW_STRIDE": str(RECIPE.window_stride),
        "HARMAUG_TRAIN__LOG_EVERY": str(RECIPE.log_every),
    }
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--num_cpu_threads_per_process", "1",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()),
        "-m", "distill.trainer",
        "--data", str(data), "--base", str(student_without_dropout), "--out", str(tmp_path / "two"),
        *[str(item) for flag, value in flags.items() for item in (flag, value)],
    ]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    config = json.loads((tmp_path / "two/config.json").read_text())
    assert config["world_size"] == 2
    assert config["recipe"] == json.loads((tmp_path / "one/config.json").read_text())["recipe"]
    checkpoint = json.loads((tmp_path / "two/checkpoints/latest.json").read_text())
    assert {p.name for p in (tmp_path / "two/checkpoints" / checkpoint["dir"]).glob("rng-*")} == {
        "rng-0.safetensors",
        "rng-1.safetensors",
    }
    one = load_file(single.model_dir / "model.safetensors")
    two = load_file(tmp_path / "two/model/model.safetensors")
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-5
    start = load_file(student_without_dropout / "model.safetensors")
    assert max(float((one[f"bert.{k}"] - v).abs().max()) for k, v in start.items()) > 1e-3

    def losses(run: str) -> list[float]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines]

    assert losses("two") == pytest.approx(losses("one"), abs=1e-5)
