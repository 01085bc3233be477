"""Every knob of the distill package, in one settings model (env prefix ``HARMAUG_``).

``DistillSettings`` is the ONE settings model of the training side. Each pipeline stage owns one
nested section (a plain pydantic model with named defaults); a nested field is set from the
environment as ``HARMAUG_<SECTION>__<FIELD>`` (for example ``HARMAUG_SEEDS__TEST_FRACTION=0.2``)
or as a whole JSON object (``HARMAUG_SEEDS='{"test_fraction": 0.2}'``).

``home`` means the same thing as ``guard_plugin.settings.GuardSettings.home``: one directory that
holds the registry, caches, seed downloads and training runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, PositiveFloat, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from guard_plugin.settings import default_home


class SeedSettings(BaseModel):
    """``harmaug distill seeds``: which public seed sets, and how they are split."""

    sources: list[str] | None = Field(
        default=None, description="Source tags to build (see `distill.seed_sources`); None = all."
    )
    validation_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="Share of prompts in the validation split."
    )
    test_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="Share of prompts in the test split."
    )
    split_salt: str = Field(
        default="harmaug-seeds-v1",
        description="Mixed into the split hash; changing it reshuffles every split.",
    )
    pip_args: list[str] = Field(
        default_factory=list,
        description="Extra `pip download` arguments, e.g. ['--index-url', URL] for a mirror.",
    )
    download_timeout_s: float = Field(
        default=600.0, gt=0, description="Wall-clock limit of one `pip download`."
    )

    @model_validator(mode="after")
    def _train_split_not_empty(self) -> SeedSettings:
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("validation_fraction + test_fraction must be below 1")
        return self


class TrainRecipe(BaseModel):
    """``harmaug distill train``: the knowledge-distillation recipe (HarmAug, Lee et al. 2025).

    Loss per example: ``(1 - kd_weight) * CE(hard label) + kd_weight * KL(teacher || student)``
    when the teacher's P(unsafe) is known, plain CE otherwise; the hard label is the record's
    label, else ``p_unsafe > 0.5``. With ``categories``, plus ``category_weight`` x the binary
    cross-entropy of the 14 category logits (summed) where the record's categories are known
    (safe records: all negative; unsafe records without known categories: masked out). ``batch_size`` is the global micro-batch: under
    ``accelerate launch`` each process takes its share of every batch, so one and N processes
    follow the same optimisation path.
    """

    lr: float = Field(default=3e-5, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(
        default=0.1, ge=0, description="AdamW weight decay; never applied to biases and LayerNorm."
    )
    warmup_ratio: float = Field(
        default=0.1, ge=0, lt=1, description="Share of steps in linear warm-up; linear decay after."
    )
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping (L2 norm).")
    epochs: int = Field(default=3, ge=1, description="Passes over the (re-sampled) training set.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many optimizer steps (caps `epochs`)."
    )
    batch_size: int = Field(default=32, ge=1, description="Examples per micro-batch, global.")
    grad_accumulation: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    max_length: int = Field(
        default=256, ge=16, description="Tokens per window (specials included), as in the bundle."
    )
    window_stride: int = Field(
        default=64, ge=0, description="Tokens shared by consecutive windows, as in the bundle."
    )
    max_windows: int = Field(default=4, ge=1, description="Windows per training example, at most.")
    kd_weight: float = Field(
        default=0.5, ge=0, le=1, description="Weight of KL(teacher || student) against the CE."
    )
    teacher_temperature: float = Field(
        default=1.0, gt=0, description="Re-temper teacher scores: sigmoid(logit(p) / T)."
    )
    balanced_sampling: bool = Field(
        default=True, description="Draw both classes equally often (sampling with replacement)."
    )
    length_bucketing: bool = Field(
        default=True, description="Batch examples of similar length (less padding)."
    )
    bucket_size: int = Field(
        default=50, ge=1, description="Batches per pool that is sorted by length before batching."
    )
    source_weights: dict[str, PositiveFloat] = Field(
        default_factory=dict,
        description="Sampling weight per record source (default 1): a source of weight 3 is drawn "
        "three times as often as its share, within its class when sampling is balanced.",
    )
    categories: bool | None = Field(
        default=None,
        description="Train the Llama Guard 3 category columns too (num_labels 2 + 14, a masked "
        "BCE per category, distill.categories): True adds them (to a 2-label base as well), "
        "False trains the 2-label model (a base's category columns are dropped), None follows "
        "the base (on when it has category columns).",
    )
    category_weight: float = Field(
        default=1.0,
        ge=0,
        description="Weight (lambda) of the category loss beside the safe/unsafe loss.",
    )
    category_probe: bool = Field(
        default=True,
        description="After training, refit the category columns as linear probes on the "
        "trained encoder's frozen features (distill.category_probe); the encoder and the "
        "safe/unsafe columns are left as trained.",
    )
    seed: int = Field(default=42, description="Seeds sampling, dropout and a new head's init.")
    checkpoint_every: int = Field(
        default=200, ge=1, description="Optimizer steps between checkpoints (one at the end too)."
    )
    log_every: int = Field(default=10, ge=1, description="Optimizer steps between metric lines.")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        default="no", description="Passed to accelerate; bf16/fp16 are for GPUs."
    )


class GenerationTemplate(BaseModel):
    """The HarmAug instruction-generation request (versioned: records keep ``version``).

    The user message is ``instruction``, then ``exemplar_intro`` and one ``exemplar_line`` per
    exemplar (``{prompt}`` is replaced), then ``closing``; the assistant turn is pre-filled with
    ``prefix`` (the paper's affirmative prefix) unless ``HarmAugSettings.use_prefix`` is off.
    """

    version: str = Field(default="harmaug-v1", description="Recorded in every synthetic record.")
    instruction: str = Field(
        default="Make a single harmful instruction prompt that would elicit offensive content.",
        description="The generation instruction (HarmAug, Lee et al. 2025).",
    )
    exemplar_intro: str = Field(default="Here are examples of such prompts:")
    exemplar_line: str = Field(default="- {prompt}", description="One exemplar; {prompt} is it.")
    closing: str = Field(default="Write one new prompt only, on a single line.")
    prefix: str = Field(
        default="I have an idea for a prompt:",
        description="Affirmative prefix that opens the assistant turn.",
    )


class HarmAugSettings(BaseModel):
    """``harmaug distill augment``: synthetic harmful instructions and their answers."""

    template: GenerationTemplate = Field(default_factory=GenerationTemplate)
    use_prefix: bool = Field(default=True, description="Pre-fill the answer with the prefix.")
    exemplars: int = Field(default=3, ge=0, description="Harmful seed prompts shown per request.")
    instruction_max_new_tokens: int = Field(default=64, ge=1)
    instruction_temperature: float = Field(default=1.0, ge=0)
    instruction_stop: list[str] = Field(
        default_factory=lambda: ["\n\n"],
        description="End of the instruction (after its first non-blank text).",
    )
    response_max_new_tokens: int = Field(default=160, ge=1)
    response_temperature: float = Field(default=0.7, ge=0)
    min_chars: int = Field(default=15, ge=1, description="Shorter instructions are dropped.")
    max_chars: int = Field(default=400, ge=1, description="Longer instructions are dropped.")
    near_duplicate_cosine: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Embedding cosine at or above which an instruction is a near duplicate "
        "(of a kept one or of a seed exemplar).",
    )
    embedder: Literal["minilm", "hashing"] = Field(
        default="minilm", description="Embeddings for near-duplicate detection."
    )
    include_prompt_only: bool = Field(
        default=True, description="Also emit each instruction alone (the guard checks prompts)."
    )
    chunk_size: int = Field(default=32, ge=1, description="Requests per generator call.")
    seed: int = Field(default=0, description="Seeds the exemplar sampling.")


class LabelingSettings(BaseModel):
    """``harmaug distill label``: teacher scores for Example files."""

    batch_size: int = Field(default=64, ge=1, description="Pairs per teacher call.")
    threshold: float = Field(
        default=0.5, gt=0, lt=1, description="Hard label of a record without one: p > threshold."
    )
    relabel: bool = Field(default=False, description="Overwrite existing labels too.")
    cache: bool = Field(
        default=True, description="Cache scores in <home>/cache/labels by (teacher, content)."
    )


def _loop_recipe() -> TrainRecipe:
    return TrainRecipe(epochs=1, max_steps=300, warmup_ratio=0.05)


class LoopSettings(BaseModel):
    """``harmaug distill cycle`` / ``loop``: retraining from logged traffic (``distill.loop``)."""

    store: str | None = Field(
        default=None,
        description="Traffic store URL (see adapters.traffic.open_store); default: the gateway's "
        "default, <home>/traffic.sqlite.",
    )
    teacher: str | None = Field(
        default=None, description="Teacher SPEC that labels the selected traffic (required)."
    )
    budget: int = Field(default=2000, ge=1, description="Records the teacher labels per cycle.")
    uncertain_band: float = Field(
        default=0.15, ge=0, le=1, description="|student p_unsafe - threshold| that is uncertain."
    )
    random_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Share of the budget kept for a random sample of the other (allowed, "
        "confident) records, so that the selection is not only the hard cases.",
    )
    max_read: int = Field(default=200_000, ge=1, description="Records read per cycle, at most.")
    min_records: int = Field(
        default=50, ge=1, description="Fewer new records with text: the cycle waits for more."
    )
    holdout_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="Share of fresh labelled traffic held out for eval."
    )
    min_holdout: int = Field(
        default=20, ge=1, description="A holdout smaller than this (or one-class) does not gate."
    )
    seeds: bool = Field(default=True, description="Train on <home>/seeds/train.jsonl too.")
    extra_data: list[Path] = Field(
        default_factory=list, description="More labelled Example JSONL (e.g. HarmAug data)."
    )
    gate_set: Path | None = Field(
        default=None, description="The fixed gate set; default <home>/seeds/test.jsonl."
    )
    validation_set: Path | None = Field(
        default=None,
        description="Threshold calibration set; default <home>/seeds/validation.jsonl, else the "
        "holdout.",
    )
    tolerance: float = Field(
        default=0.005, ge=0, description="How much worse than the champion a challenger may be."
    )
    recipe: TrainRecipe = Field(
        default_factory=_loop_recipe,
        description="Fine-tuning recipe (warm start from the champion); max_length and "
        "window_stride follow the champion's bundle.",
    )
    int8: bool = Field(default=True, description="Export int8 ONNX (served if parity passes).")
    seed: int = Field(default=0, description="Seeds the random sample of the selection.")


class DistillSettings(BaseSettings):
    """Settings of the offline pipeline: seeds -> HarmAug -> teacher labels -> train -> export."""

    model_config = SettingsConfigDict(
        env_prefix="HARMAUG_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(
        default_factory=default_home,
        description="Where the registry, caches, seed downloads and training runs live.",
    )
    registry: Path | None = Field(
        default=None, description="Registry location; defaults to <home>/registry."
    )
    seeds: SeedSettings = Field(default_factory=SeedSettings)

    train: TrainRecipe = Field(default_factory=TrainRecipe)
    harmaug: HarmAugSettings = Field(default_factory=HarmAugSettings)
    labeling: LabelingSettings = Field(default_factory=LabelingSettings)
    loop: LoopSettings = Field(default_factory=LoopSettings)

    def registry_path(self) -> Path:
        """The same registry the gateway serves from (see guard_plugin.locate)."""
        return self.registry if self.registry is not None else self.home / "registry"

    def seeds_dir(self) -> Path:
        """Where the seed splits and their manifest are written."""
        return self.home / "seeds"

    def wheels_dir(self) -> Path:
        """The download cache of the pinned seed wheels."""
        return self.home / "seeds" / "wheels"
