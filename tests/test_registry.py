"""Registry: register, gated promote, rollback, atomic champion switch, refusal of bad bundles."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import shutil
import threading
from pathlib import Path

import pytest

from distill.registry import GATE_METRICS, Registry, RegistryError, gate
from guard_plugin.bundle import BundleError, GuardBundle, write_manifest
from guard_plugin.locate import champion_version


def make_version(source: Path, tmp_path: Path, version: str) -> Path:
    """A copy of a bundle re-stamped with another version name."""
    target = tmp_path / f"bundle-{version}"
    shutil.copytree(source, target)
    manifest = GuardBundle.load(source).manifest.model_copy(update={"version": version})
    write_manifest(target, manifest)
    return target


def fixed_scores(table: dict[str, dict[str, float]]):
    def scorer(bundle: Path, _data: Path) -> dict[str, float]:
        return table[GuardBundle.load(bundle).version]

    return scorer


def test_gate_rule() -> None:
    champion = {"auprc": 0.90, "f1": 0.80}
    assert gate(None, champion, 0.005)[0]
    assert gate(champion, {"auprc": 0.897, "f1": 0.80}, 0.005)[0]
    ok, reason = gate(champion, {"auprc": 0.95, "f1": 0.70}, 0.005)
    assert not ok and "f1" in reason
    assert set(GATE_METRICS) == {"auprc", "f1"}


def test_register_promote_rollback(tiny_torch_bundle: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    v1 = registry.register(make_version(tiny_torch_bundle, tmp_path, "v1"))
    v2 = registry.register(make_version(tiny_torch_bundle, tmp_path, "v2"))
    v3 = registry.register(make_version(tiny_torch_bundle, tmp_path, "v3"))
    assert registry.champion() is None

    assert registry.promote(v1).promote  # first champion needs no gate
    assert champion_version(registry.root) == "v1"

    with pytest.raises(RegistryError, match="gate set"):
        registry.promote(v2)

    scores = fixed_scores(
        {
            "v1": {"auprc": 0.90, "f1": 0.85},
            "v2": {"auprc": 0.92, "f1": 0.86},
            "v3": {"auprc": 0.80, "f1": 0.86},
        }
    )
    gate_file = tmp_path / "gate.jsonl"
    gate_file.write_text("")
    assert registry.promote(v2, gate_data=gate_file, scorer=scores).promote
    worse = registry.promote(v3, gate_data=gate_file, scorer=scores)
    assert not worse.promote and "auprc" in worse.reason
    assert registry.champion() == "v2"

    forced = registry.promote(v3, force=True)
    assert forced.promote and forced.forced
    assert registry.history()[-1]["forced"] is True

    assert registry.rollback() == "v2"
    assert registry.champion() == "v2"
    rows = {row["version"]: row for row in registry.entries()}
    assert rows["v2"]["champion"] and not rows["v1"]["champion"]


def test_register_refuses_tampered_and_duplicate(tiny_torch_bundle: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    bundle = make_version(tiny_torch_bundle, tmp_path, "v1")
    registry.register(bundle)
    with pytest.raises(RegistryError, match="already exists"):
        registry.register(bundle)

    tampered = make_version(tiny_torch_bundle, tmp_path, "v2")
    with (tampered / "config.json").open("a") as handle:
        handle.write(" ")
    with pytest.raises(BundleError, match=r"config\.json"):
        registry.register(tampered)
    assert not (registry.versions / "v2").exists()
    assert not list(registry.versions.glob(".incoming-*"))


def test_unknown_version_and_empty_rollback(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    with pytest.raises(RegistryError, match="not in the registry"):
        registry.promote("nope")
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()


def test_champion_switch_is_atomic_for_readers(tiny_torch_bundle: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    versions = [
        registry.register(make_version(tiny_torch_bundle, tmp_path, f"v{i}")) for i in range(2)
    ]
    registry.promote(versions[0])
    stop = threading.Event()
    seen: set[str | None] = set()
    errors: list[Exception] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(champion_version(registry.root))
            except Exception as exc:  # a torn read would land here
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for i in range(200):
        registry.promote(versions[(i + 1) % 2], force=True)
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors
    assert seen <= {"v0", "v1"}


def _promote_many(root: str, versions: list[str], rounds: int) -> None:
    registry = Registry(Path(root))
    for i in range(rounds):
        registry.promote(versions[i % len(versions)], force=True)


def test_concurrent_writers_keep_history_consistent(
    tiny_torch_bundle: Path, tmp_path: Path
) -> None:
    registry = Registry(tmp_path / "registry")
    versions = [
        registry.register(make_version(tiny_torch_bundle, tmp_path, f"v{i}")) for i in range(3)
    ]
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_promote_many, args=(str(registry.root), versions, 30)) for _ in range(3)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    data = json.loads((registry.root / "champion.json").read_text())
    assert data["version"] in versions
    # Every promotion of another version was recorded: the lock serialised the writers.
    history = data["history"]
    assert len(history) >= 3
    for before, after in itertools.pairwise(history):
        assert after["previous"] == before["version"]
