"""Guard faults for a real proxy, switched on and off from outside: a LiteLLM callback module.

Loaded by a proxy config (``litellm_settings: {callbacks: benchmarks.fault_injection.injector}``,
an import LiteLLM resolves like ``tests/logging_probe.py``); nothing in the production code knows
about it. Imported in a process where ``HARMAUG_FAULT_TRIGGER`` is set, it wraps
``GuardModel.score`` (the forward pass the micro-batcher runs in its worker threads) so that,
while the file that variable names exists, scoring

* ``raise``: raises :class:`InjectedFault`;
* ``raise-completion``: raises it for batches with a completion (a (prompt, response) pair), so
  that prompts pass and the completion's screening fails (streams included);
* ``hang``: blocks until the file is gone (at most ``MAX_HANG_S``), then scores as usual.

The file's content is the mode. Without the variable, or without the file, scoring is untouched.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from guard_plugin.model import GuardModel

TRIGGER_ENV = "HARMAUG_FAULT_TRIGGER"
MODES = ("raise", "raise-completion", "hang")
MAX_HANG_S = 120.0
POLL_S = 0.05


class InjectedFault(RuntimeError):
    """The failure a ``raise`` trigger injects into scoring."""


def active_mode() -> str | None:
    """The mode the trigger file asks for now; None when no fault is on."""
    name = os.environ.get(TRIGGER_ENV)
    if not name:
        return None
    try:
        mode = Path(name).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return mode if mode in MODES else None


def inject(pairs: Sequence[tuple[str, str | None]]) -> None:
    """Fail or hang as the trigger says (called before every forward pass)."""
    mode = active_mode()
    if mode == "raise" or (mode == "raise-completion" and any(r is not None for _, r in pairs)):
        raise InjectedFault("injected scoring failure")
    deadline = time.monotonic() + MAX_HANG_S
    while mode == "hang" and time.monotonic() < deadline:
        time.sleep(POLL_S)
        mode = active_mode()


def faulty(score: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(score)
    def wrapper(self: GuardModel, pairs: Sequence[tuple[str, str | None]], **kwargs: Any) -> Any:
        inject(pairs)
        return score(self, pairs, **kwargs)

    wrapper.__harmaug_fault__ = True  # type: ignore[attr-defined]
    return wrapper


def install() -> None:
    """Wrap ``GuardModel.score`` once."""
    if not getattr(GuardModel.score, "__harmaug_fault__", False):
        GuardModel.score = faulty(GuardModel.score)  # type: ignore[method-assign]


def set_fault(trigger: Path, mode: str | None) -> None:
    """Switch the fault of the proxies watching ``trigger`` on (``mode``) or off (None)."""
    if mode is None:
        trigger.unlink(missing_ok=True)
        return
    if mode not in MODES:
        raise ValueError(f"unknown fault mode {mode!r} (one of {MODES})")
    staged = trigger.with_suffix(".tmp")
    staged.write_text(mode, encoding="utf-8")
    os.replace(staged, trigger)


class FaultInjector(CustomLogger):
    """A callback that logs nothing: it only gets this module imported by the proxy."""


if os.environ.get(TRIGGER_ENV):  # the proxy; not the benchmark that only switches faults
    install()
injector = FaultInjector()
