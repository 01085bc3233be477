"""Hot reload: the champion watcher swaps to new champions, refuses tampered ones, drops nothing."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from distill.registry import Registry
from guard_plugin.bundle import GuardBundle, write_manifest
from guard_plugin.guard import Guard
from guard_plugin.model import GuardModel
from guard_plugin.reload import ChampionWatcher, watch_champion
from guard_plugin.settings import GuardSettings
from tests.tiny_guard import SAFE, UNSAFE


def stamped(bundle: Path, tmp_path: Path, version: str) -> Path:
    """A copy of ``bundle`` that says it is ``version``."""
    out = tmp_path / "incoming" / version
    shutil.copytree(bundle, out)
    manifest = GuardBundle.load(out).manifest
    write_manifest(out, manifest.model_copy(update={"version": version}))
    return out


@pytest.fixture()
def registry(tiny_torch_bundle: Path, tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "registry")
    registry.register(stamped(tiny_torch_bundle, tmp_path, "v1"))
    registry.promote("v1")
    return registry


def serving(registry: Registry, **overrides: Any) -> tuple[Guard, GuardSettings]:
    values: dict[str, Any] = {"home": registry.root.parent, "registry": registry.root}
    values["guard"] = "champion"
    settings = GuardSettings(**values, **overrides)
    return Guard(GuardModel.load(registry.path("v1"), settings), settings), settings


def publish(registry: Registry, bundle: Path, tmp_path: Path, version: str) -> None:
    registry.register(stamped(bundle, tmp_path, version))
    registry.promote(version, force=True)


async def test_watcher_swaps_to_a_new_champion(
    registry: Registry, tiny_torch_bundle: Path, tmp_path: Path
) -> None:
    guard, settings = serving(registry)
    watcher = ChampionWatcher(guard, settings)
    assert watcher.check() is None  # nothing new
    publish(registry, tiny_torch_bundle, tmp_path, "v2")
    assert watcher.check() == "v2"
    verdict = await guard.check_prompt(UNSAFE[0])
    assert verdict.guard_version == "v2" and verdict.unsafe
    await guard.aclose()


async def test_tampered_champion_is_refused_and_the_old_one_keeps_serving(
    registry: Registry,
    tiny_torch_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    guard, settings = serving(registry)
    watcher = ChampionWatcher(guard, settings)
    publish(registry, tiny_torch_bundle, tmp_path, "v2")
    tampered = registry.path("v2") / "model.safetensors"
    tampered.chmod(0o644)
    with tampered.open("ab") as handle:
        handle.write(b"\0")
    assert watcher.check() is None
    assert guard.version == "v1" and watcher.refused == "v2"
    assert (await guard.check_prompt(SAFE[0])).guard_version == "v1"
    err = capsys.readouterr().err
    assert '"event": "guard_reload_refused"' in err and "v2" in err and "sha256" in err.lower()
    assert watcher.check() is None  # not retried while the pointer still names it

    publish(registry, tiny_torch_bundle, tmp_path, "v3")
    assert watcher.check() == "v3"
    await guard.aclose()


async def test_swap_under_concurrent_load_fails_no_call(
    registry: Registry, tiny_torch_bundle: Path, tmp_path: Path
) -> None:
    guard, settings = serving(registry, reload_interval_s=0.05)
    watcher = ChampionWatcher(guard, settings).start()
    seen: list[str] = []
    stop = asyncio.Event()

    async def client(k: int) -> None:
        i = 0
        while not stop.is_set():
            text = (SAFE + UNSAFE)[(k * 7 + i) % (len(SAFE) + len(UNSAFE))]
            verdict = await guard.check_prompt(f"{text} {i}")  # unique: no cache hits
            seen.append(verdict.guard_version)
            i += 1

    tasks = [asyncio.create_task(client(k)) for k in range(8)]
    await asyncio.sleep(0.3)
    publish(registry, tiny_torch_bundle, tmp_path, "v2")
    deadline = time.monotonic() + 10
    while guard.version != "v2" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*tasks)  # any failed call would raise here
    watcher.stop()
    await guard.aclose()
    assert guard.version == "v2"
    first_new = seen.index("v2")
    assert "v1" in seen[:first_new] and len(seen) - first_new > 8
    # after the swap, new calls use the new model (only calls already queued finish on v1)
    assert seen[first_new + 8 :].count("v1") == 0


def test_only_a_guard_serving_champion_is_watched(registry: Registry) -> None:
    guard, settings = serving(registry)
    pinned = settings.model_copy(update={"guard": "v1"})
    assert watch_champion(guard, pinned) is None
    assert watch_champion(guard, settings.model_copy(update={"reload_interval_s": 0})) is None
    watcher = watch_champion(guard, settings)
    assert watcher is not None and watch_champion(guard, settings) is watcher
    watcher.stop()
