"""harmaug-guard runtime: load a guard bundle and score prompts and completions inside a gateway.

``HarmAugGuardrail`` (the LiteLLM hook) is imported lazily, so ``import guard_plugin`` does not
import LiteLLM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from guard_plugin.bundle import BundleError, GuardBundle, GuardManifest
from guard_plugin.errors import GuardError, GuardOverloaded, GuardTimeout
from guard_plugin.guard import Guard, Verdict
from guard_plugin.model import GuardModel, Score
from guard_plugin.settings import GuardSettings

if TYPE_CHECKING:
    from guard_plugin.guardrail import HarmAugGuardrail

__all__ = [
    "BundleError",
    "Guard",
    "GuardBundle",
    "GuardError",
    "GuardManifest",
    "GuardModel",
    "GuardOverloaded",
    "GuardSettings",
    "GuardTimeout",
    "HarmAugGuardrail",
    "Score",
    "Verdict",
]


def __getattr__(name: str) -> Any:
    if name == "HarmAugGuardrail":
        from guard_plugin.guardrail import HarmAugGuardrail

        return HarmAugGuardrail
    raise AttributeError(f"module 'guard_plugin' has no attribute {name!r}")
