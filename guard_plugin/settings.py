"""Every knob of the runtime, in one settings model (env prefix ``HARMAUG_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from platformdirs import user_cache_dir
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    return Path(user_cache_dir("harmaug-guard", appauthor=False))


class GuardSettings(BaseSettings):
    """Runtime settings of the guard inside the gateway process.

    Every field can be set from the environment as ``HARMAUG_<FIELD>`` (upper case).
    """

    model_config = SettingsConfigDict(env_prefix="HARMAUG_", extra="ignore")

    home: Path = Field(
        default_factory=default_home,
        description="Where the registry, caches, seed downloads and training runs live.",
    )
    guard: str = Field(
        default="champion",
        description="The guard to load: 'champion' (the registry's champion alias), a version "
        "name in the registry, or a path to a bundle / Hugging Face directory.",
    )
    registry: Path | None = Field(
        default=None, description="Registry location; defaults to <home>/registry."
    )
    backend: Literal["onnx", "torch"] | None = Field(
        default=None, description="Override the bundle's backend (onnx is the default)."
    )
    onnx_variant: Literal["int8", "fp32"] | None = Field(
        default=None, description="Which ONNX file of the bundle to run; default: the bundle's."
    )
    threads: int = Field(
        default=2,
        ge=1,
        description="Intra-op threads of the model backend. 2 makes a long prompt ~1.6x faster; "
        "under 100 tokens it buys no latency and costs ~1.5x the CPU per forward "
        "(docs/experiments.md, stop 29).",
    )
    workers: int = Field(
        default=2,
        ge=1,
        description="Worker threads that run forward passes at the same time, each on its own "
        "batch, sharing the model's intra-op threads (inference never runs on the event loop). "
        "A lone call gets every intra-op thread; concurrent calls keep the cores busy without "
        "synchronising inside one small forward pass.",
    )
    window_stride: int | None = Field(
        default=None, ge=0, description="Token overlap between windows; default: the bundle's."
    )
    max_windows: int | None = Field(
        default=None, ge=1, description="Cap on windows per item; default: the bundle's."
    )
    max_batch_size: int = Field(
        default=8,
        ge=1,
        description="Windows per forward pass, at most (measured on 2 CPU cores: larger ONNX "
        "batches of long windows are slower per item).",
    )
    max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description="Extra wait to fill a batch. 0: no added latency; batches still form from "
        "calls that arrive while the worker is busy.",
    )
    max_queue: int = Field(default=2048, ge=1, description="Queued items before calls are refused.")
    timeout_s: float = Field(default=10.0, gt=0, description="Per-call scoring timeout.")
    cascade: bool = Field(
        default=True,
        description="Let the bundle's first stage (when it has one) clear easy items before the "
        "student; false: the student scores every item.",
    )
    gc_freeze: bool = Field(
        default=True,
        description="In the gateway, once the guard has loaded, exclude every object allocated so "
        "far (LiteLLM's and the guard's) from the garbage collector's full collections "
        "(gc.freeze). Measured on LiteLLM 1.103: a full collection of the proxy's ~740k "
        "start-up objects takes ~0.4 s and ran about every 300 requests under load.",
    )
    cache_size: int = Field(
        default=4096, ge=0, description="LRU cache entries of scores (0 = off)."
    )
    log_text: bool = Field(
        default=False, description="Log raw prompt and completion text (off: never logged)."
    )

    # -- escalation to the teacher (guard_plugin.escalation) ---------------------------------------
    escalate_teacher: str | None = Field(
        default=None,
        description="Off by default. A teacher SPEC 'openai:MODEL@URL' (a Llama Guard served by "
        "vLLM): student verdicts within escalate_band of the threshold are sent to it, and its "
        "verdict replaces the student's.",
    )
    escalate_band: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Escalate a student score p when |p - threshold| <= this.",
    )
    escalate_budget_ms: float = Field(
        default=250.0,
        gt=0,
        description="Longest a call waits for the teacher; past it the student's verdict stands.",
    )
    escalate_max_in_flight: int = Field(
        default=16,
        ge=1,
        description="Items at the teacher at once, at most; items over it keep the student's "
        "verdict (no queueing: a wait would spend the budget).",
    )
    escalate_threshold: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="The teacher's P(unsafe) at or above which it judges an item unsafe.",
    )

    # -- hot reload (guard_plugin.reload) ----------------------------------------------------------
    reload_interval_s: float = Field(
        default=30.0,
        ge=0,
        description="How often a gateway worker serving 'champion' polls the registry's champion "
        "pointer and swaps to a new version (0 = never).",
    )

    # -- traffic logging (guard_plugin.traffic_log) ------------------------------------------------
    traffic_log: bool = Field(
        default=False, description="Log each screened call to the traffic store (for retraining)."
    )
    traffic_store: str | None = Field(
        default=None,
        description="Traffic store URL: a SQLite path or sqlite:///PATH, or postgresql://...; "
        "default: <home>/traffic.sqlite.",
    )
    traffic_sample_rate: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Share of screened calls that are logged."
    )
    traffic_content: Literal["full", "prompt", "none"] = Field(
        default="full",
        description="Text stored: full (prompt and completion), prompt (no completion), "
        "none (scores and decisions only).",
    )
    traffic_redact: bool = Field(
        default=True,
        description="Replace e-mail addresses, phone and card numbers and API keys before storage.",
    )
    traffic_salt: SecretStr | None = Field(
        default=None,
        description="Secret salt of the key/team/user hashes; default: a random salt kept in "
        "<home>/traffic.salt (set the same value on every replica of a fleet).",
    )
    traffic_retention_days: float | None = Field(
        default=30.0, gt=0, description="Records older than this are purged (None: kept)."
    )
    traffic_queue_size: int = Field(
        default=10_000, ge=1, description="Records waiting for the writer; more are dropped."
    )
    traffic_batch_size: int = Field(default=256, ge=1, description="Records per store write.")
    traffic_flush_s: float = Field(
        default=0.5, gt=0, description="Longest a record waits in the queue before a write."
    )
    traffic_shutdown_s: float = Field(
        default=10.0,
        gt=0,
        description="On a graceful stop (SIGTERM/SIGINT), the longest the gateway waits, after "
        "its last request, for the queued records to be written (logged if exceeded).",
    )

    def registry_path(self) -> Path:
        return self.registry if self.registry is not None else self.home / "registry"

    def traffic_store_url(self) -> str:
        return self.traffic_store or str(self.home / "traffic.sqlite")
