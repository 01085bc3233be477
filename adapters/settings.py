"""Every knob of the adapters package, in one settings model (env prefix ``HARMAUG_``).

``AdapterSettings`` is the ONE settings model of ``adapters``: the transport of the
OpenAI-compatible adapters (vLLM or any server that speaks the OpenAI API) and the compute of the
local (transformers) ones. Each field is set from the environment as ``HARMAUG_<FIELD>``, e.g.
``HARMAUG_HTTP_CONCURRENCY=32``. Names do not collide with the runtime's ``GuardSettings`` or the
pipeline's ``DistillSettings``, which read the same prefix.

Per-adapter choices that depend on the model (temperature of a teacher, top-p of a generator,
the endpoint form) are options of the adapter SPEC instead (see ``adapters.spec``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AdapterSettings(BaseSettings):
    """Transport and compute settings shared by all teachers and generators."""

    model_config = SettingsConfigDict(env_prefix="HARMAUG_", extra="ignore")

    openai_api_key: SecretStr | None = Field(
        default=None,
        description="Bearer token sent to OpenAI-compatible servers (none for a local vLLM).",
    )
    http_timeout_s: float = Field(
        default=60.0, gt=0, description="Wall-clock limit of one HTTP request to a model server."
    )
    http_max_retries: int = Field(
        default=3,
        ge=0,
        description="Retries of a request that timed out, failed to connect, got a 429/5xx or a "
        "malformed body (other 4xx are not retried).",
    )
    http_backoff_s: float = Field(
        default=0.5, ge=0, description="First retry delay; doubles at every further retry."
    )
    http_concurrency: int = Field(
        default=8, ge=1, description="Requests in flight at once, per adapter call."
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="CPU threads of the local transformers adapters."
    )
    device: str = Field(
        default="cpu", description="torch device of the local adapters ('cpu', 'cuda', 'cuda:1')."
    )
    attn_implementation: Literal["auto", "eager", "sdpa"] = Field(
        default="auto",
        description="Attention kernel of the local adapters; 'auto' is 'eager' on CPU (measured "
        "4x faster than 'sdpa' for batched decoding with left padding), the default elsewhere.",
    )
    local_batch_size: int = Field(
        default=8, ge=1, description="Sequences per forward pass of the local adapters."
    )
    seed: int = Field(default=0, description="Seeds sampling of the local generators.")

    def model_kwargs(self) -> dict[str, Any]:
        """``from_pretrained`` arguments of a local causal LM for these settings."""
        if self.attn_implementation != "auto":
            return {"attn_implementation": self.attn_implementation}
        return {"attn_implementation": "eager"} if self.device == "cpu" else {}
