"""The gateway freezes its start-up heap once the guard has loaded (HARMAUG_GC_FREEZE)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from guard_plugin import hook_config
from tests.test_guardrail import make_guardrail


@pytest.fixture()
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    hook_config._guards.clear()  # a fresh load, as in a new gateway process
    yield
    gc.unfreeze()  # give the test process its collector back
    hook_config._guards.clear()


def test_loading_the_guard_freezes_the_objects_allocated_so_far(
    tiny_torch_bundle: Path, unfrozen: None
) -> None:
    make_guardrail(tiny_torch_bundle, name="frozen")
    frozen = gc.get_freeze_count()
    assert frozen > 10_000  # the libraries and the model, not a handful of objects
    # Allocated after the freeze: a second freeze would move them all to the permanent
    # generation. (The count itself may fall a little: frozen objects can still be freed, e.g.
    # by another test's background thread finishing.)
    later = [[index] for index in range(20_000)]
    make_guardrail(tiny_torch_bundle, name="same-guard")  # shares the loaded guard
    assert gc.get_freeze_count() < frozen + len(later)


def test_the_freeze_can_be_turned_off(
    tiny_torch_bundle: Path, unfrozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARMAUG_GC_FREEZE", "false")
    make_guardrail(tiny_torch_bundle, name="unfrozen")
    assert gc.get_freeze_count() == 0
