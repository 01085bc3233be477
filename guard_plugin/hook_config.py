"""The settings of one ``guardrails:`` entry of the LiteLLM config, and the guards they share.

LiteLLM constructs a guardrail with every ``LitellmParams`` field (~170, most of them other
vendors' defaults). Only the keys prefixed ``harmaug_`` belong to this hook; they are validated
into :class:`HookConfig`. The runtime itself (model, batching, cache, default timeout) is configured
once per process by :class:`~guard_plugin.settings.GuardSettings` (env ``HARMAUG_*``).

Every invalid value raises :class:`HookConfigError`, a RuntimeError: LiteLLM skips guardrails whose
constructor raises ValueError/TypeError and then serves unguarded, a RuntimeError stops it.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from guard_plugin.bundle import CATEGORY_CODES
from guard_plugin.guard import Guard
from guard_plugin.locate import resolve_guard_path
from guard_plugin.reload import watch_champion
from guard_plugin.screening import ACTION_SEVERITY, Action, CategoryAction, FailMode
from guard_plugin.settings import GuardSettings
from guard_plugin.traffic_log import TrafficLogger

PREFIX = "harmaug_"
ROLES = frozenset({"user", "tool", "system", "developer", "assistant"})


class HookConfigError(RuntimeError):
    """A guardrail entry that cannot work: the proxy must not start with it."""


class CategoryPolicy(BaseModel):
    """What an entry does when one category fires (``harmaug_categories``' values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: CategoryAction = Field(description="block | flag | shadow | allow.")
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="The category's probability at or above which it fires; default: the "
        "bundle's threshold of that category.",
    )


class HookConfig(BaseModel):
    """One guardrail entry, from its ``harmaug_*`` keys (``harmaug_action: flag`` -> ``action``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    guard: str | None = Field(
        default=None,
        description="Guard to load ('champion', a registry version or a path); default: "
        "HARMAUG_GUARD.",
    )
    action: Action = Field(default="block", description="block | flag | shadow.")
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="P(unsafe) at or above which a part is unsafe; "
        "default: the guard bundle's threshold.",
    )
    allow_request_threshold: bool = Field(
        default=False,
        description="Let a request set its own threshold in metadata.harmaug_threshold.",
    )
    fail_mode: FailMode = Field(
        default="closed",
        description="closed: refuse calls the guard cannot score (503); open: "
        "let them pass, flagged.",
    )
    timeout_s: float | None = Field(
        default=None, gt=0, description="Per-call scoring timeout; default: HARMAUG_TIMEOUT_S."
    )
    screen_roles: tuple[str, ...] = Field(
        default=("user", "tool"),
        description="Turns of the prompt that are screened (tool = tool calls and tool results).",
    )
    context_turns: int = Field(
        default=2, ge=0, le=16, description="Earlier turns scored together with each screened turn."
    )
    max_items: int = Field(
        default=32, ge=1, le=1024, description="Items scored per prompt at most; older turns merge."
    )
    stream_mode: Literal["buffer", "incremental"] = Field(
        default="buffer",
        description="buffer: hold a stream until moderated; incremental: release it every "
        "stream_check_chars characters that passed.",
    )
    stream_check_chars: int = Field(
        default=400, ge=16, description="Characters between checks of an incremental stream."
    )
    categories: dict[str, CategoryPolicy] | None = Field(
        default=None,
        description="Per Llama Guard 3 category (S1..S14): its action, or {action, threshold} "
        "(guard_plugin.screening has the rule). Needs a guard with category heads.",
    )

    @field_validator("categories", mode="before")
    @classmethod
    def _category_policies(cls, value: Any) -> Any:
        """``{S11: flag}`` is ``{S11: {action: flag}}``; codes must be Llama Guard 3's."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValueError("must be a mapping of category code -> action or {action, threshold}")
        unknown = sorted(str(code) for code in value if code not in CATEGORY_CODES)
        if unknown:
            raise ValueError(
                f"unknown category code(s) {', '.join(unknown)}; the Llama Guard 3 codes are "
                f"{', '.join(CATEGORY_CODES)}"
            )
        return {
            code: {"action": policy} if isinstance(policy, str) else policy
            for code, policy in value.items()
        }

    @property
    def category_actions(self) -> dict[str, CategoryAction]:
        """code -> action of the configured categories (empty when none are)."""
        return {code: policy.action for code, policy in (self.categories or {}).items()}

    @property
    def category_thresholds(self) -> dict[str, float]:
        """code -> threshold of the configured categories that set their own."""
        return {
            code: policy.threshold
            for code, policy in (self.categories or {}).items()
            if policy.threshold is not None
        }

    @property
    def enforcing_action(self) -> Action:
        """The most severe action this entry can take: its ``action`` or a category's (``allow``
        aside). Decides whether a stream is held and how a guard failure is decided."""
        actions: list[Action] = [self.action]
        for action in self.category_actions.values():
            if action != "allow":
                actions.append(action)
        return max(actions, key=ACTION_SEVERITY.__getitem__)

    @field_validator("screen_roles", mode="before")
    @classmethod
    def _split_roles(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [role.strip() for role in value.split(",") if role.strip()]
        return value

    @field_validator("screen_roles")
    @classmethod
    def _known_roles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - ROLES)
        if unknown or not value:
            raise ValueError(f"roles must be a non-empty subset of {sorted(ROLES)}, got {unknown}")
        return value

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, name: str) -> HookConfig:
        """Validate the ``harmaug_*`` keys of a guardrail's ``litellm_params``."""
        mine = {
            key[len(PREFIX) :]: value
            for key, value in params.items()
            if key.startswith(PREFIX) and value is not None
        }
        try:
            return cls.model_validate(mine)
        except ValidationError as exc:
            problems = "; ".join(
                f"{PREFIX}{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            )
            raise HookConfigError(f"guardrail {name!r}: invalid settings: {problems}") from None


_guards: dict[tuple[str, str], Guard] = {}
_guards_lock = threading.Lock()


def shared_guard(guard: str | None, *, name: str) -> Guard:
    """The process's one Guard for this guard: entries naming the same guard share it.

    A guard named 'champion' follows the registry's champion (``guard_plugin.reload``); any other
    name is resolved to its directory once, so two spellings of one bundle share a Guard too.
    """
    try:
        settings = GuardSettings() if guard is None else GuardSettings(guard=guard)
        target = settings.guard
        if target != "champion":
            target = str(resolve_guard_path(settings).resolve())
    except (ValidationError, RuntimeError, OSError) as exc:
        raise HookConfigError(f"guardrail {name!r}: the guard cannot be loaded: {exc}") from None
    key = (target, settings.model_dump_json(exclude={"guard"}))
    with _guards_lock:
        if key not in _guards:
            try:
                loaded = Guard.from_settings(settings.model_copy(update={"guard": target}))
            except Exception as exc:
                raise HookConfigError(
                    f"guardrail {name!r}: the guard {target!r} cannot be loaded: {exc}"
                ) from exc
            watch_champion(loaded, settings)
            _guards[key] = loaded
            if settings.gc_freeze:
                freeze_startup_heap()
        return _guards[key]


def freeze_startup_heap() -> None:
    """Exclude the objects allocated so far from full garbage collections (``gc.freeze``).

    The proxy's start-up heap (LiteLLM's modules and config, the guard's libraries and model) is
    long-lived, yet every full collection walks all of it: ~740k objects, ~0.4 s on LiteLLM 1.103,
    about every 300 requests under load (the guard's libraries alone add ~180k of them). Frozen
    objects are still freed by reference counting; only reference cycles among them would stay
    (measured: none that grew over six hot reloads). Later objects are collected as before.
    """
    gc.collect()
    gc.freeze()


_traffic_loggers: dict[str, TrafficLogger] = {}


def shared_traffic_logger(settings: GuardSettings) -> TrafficLogger | None:
    """The process's traffic logger for the configured store; None when traffic logging is off."""
    if not settings.traffic_log:
        return None
    url = settings.traffic_store_url()
    with _guards_lock:
        if url not in _traffic_loggers:
            _traffic_loggers[url] = TrafficLogger.from_settings(settings)
        return _traffic_loggers[url]
