"""The guard registry: immutable ``versions/<version>/`` bundles and an atomic ``champion`` alias.

Layout (shared with ``guard_plugin.locate``, which is how the gateway finds the champion):

```
<registry>/versions/<version>/   a verified guard bundle, never modified once registered
<registry>/champion.json         {"version": ..., "history": [...]}; replaced with os.replace
<registry>/.lock                 writers (register, promote, rollback) hold an exclusive flock
```

Readers never lock: they read ``champion.json`` (always a complete file, thanks to the atomic
rename) and then a version directory that is complete before its name appears.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog

from guard_plugin.bundle import BundleError, GuardBundle
from guard_plugin.locate import CHAMPION_FILE, VERSIONS_DIR, champion_version

log = structlog.get_logger("harmaug.registry")

# The gate: a challenger is promoted only if none of these metrics is worse than the champion's
# by more than the tolerance, measured on the same gate set in the same run.
GATE_METRICS = ("auprc", "f1")
# A cascade's measured recall loss (``distill.cascade``), when the challenger has a first stage.
CASCADE_LOSS = "cascade_recall_loss"
# How many Llama Guard 3 categories a guard scores (absent: none). A champion that has them is
# replaced only by a challenger that has as many: the gateway's category verdicts never vanish
# with a promotion.
CATEGORIES = "categories"
DEFAULT_TOLERANCE = 0.005


class RegistryError(RuntimeError):
    """A registry operation that cannot be done; the message says why."""


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    champion: str | None
    challenger: str
    champion_metrics: dict[str, float]
    challenger_metrics: dict[str, float]
    forced: bool = False

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


# (bundle path, gate records path) -> metrics; distill.evaluation provides the default.
Scorer = Callable[[Path, Path], dict[str, float]]


def gate(
    champion: dict[str, float] | None, challenger: dict[str, float], tolerance: float
) -> tuple[bool, str]:
    """Pure gate rule: not worse than the champion beyond ``tolerance`` on every gate metric,
    (a cascade) losing at most ``MAX_RECALL_LOSS`` of its student's recall to its first stage,
    and scoring at least the champion's categories (``CATEGORIES``)."""
    from distill.cascade import MAX_RECALL_LOSS

    loss = challenger.get(CASCADE_LOSS)
    if loss is not None and loss > MAX_RECALL_LOSS:
        return False, (
            f"challenger's first stage clears too much: the cascade loses {loss:.4f} of the "
            f"student's recall (at most {MAX_RECALL_LOSS})"
        )
    if champion is None:
        return True, "no champion yet"
    if challenger.get(CATEGORIES, 0) < champion.get(CATEGORIES, 0):
        return False, (
            f"challenger drops the champion's categories: it scores "
            f"{int(challenger.get(CATEGORIES, 0))} of the champion's "
            f"{int(champion.get(CATEGORIES, 0))}"
        )
    worse = [
        f"{name} {challenger[name]:.4f} < {champion[name]:.4f} - {tolerance}"
        for name in GATE_METRICS
        if challenger[name] < champion[name] - tolerance
    ]
    if worse:
        return False, "challenger is worse: " + "; ".join(worse)
    return True, "challenger is not worse than the champion on " + ", ".join(GATE_METRICS)


class Registry:
    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
        self.versions = self.root / VERSIONS_DIR

    # -- reading -------------------------------------------------------------------------------
    def champion(self) -> str | None:
        return champion_version(self.root)

    def path(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise RegistryError(f"invalid version name {version!r}")
        path = self.versions / version
        if not path.is_dir():
            raise RegistryError(f"version {version!r} is not in the registry {self.root}")
        return path

    def entries(self) -> list[dict[str, Any]]:
        champion = self.champion()
        rows = []
        for path in sorted(self.versions.glob("[!.]*")):
            try:
                manifest = GuardBundle.load(path).manifest
                rows.append(
                    {
                        "version": manifest.version,
                        "champion": path.name == champion,
                        "created_at": manifest.created_at,
                        "base_model": manifest.base_model,
                        "threshold": manifest.threshold,
                        "metrics": manifest.metrics,
                    }
                )
            except BundleError as exc:
                rows.append(
                    {"version": path.name, "champion": path.name == champion, "error": str(exc)}
                )
        return rows

    def history(self) -> list[dict[str, Any]]:
        pointer = self.root / CHAMPION_FILE
        if not pointer.is_file():
            return []
        return list(json.loads(pointer.read_text(encoding="utf-8")).get("history", []))

    # -- writing (under the lock) ----------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.versions.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def register(self, bundle_dir: Path, *, move: bool = False) -> str:
        """Copy (or move) a verified bundle into ``versions/<its version>/``; return the version."""
        bundle = GuardBundle.load(bundle_dir)  # refuses tampered / incomplete bundles
        version = bundle.version
        with self._locked():
            target = self.versions / version
            if target.exists():
                raise RegistryError(f"version {version!r} already exists in {self.root}")
            staging = Path(tempfile.mkdtemp(dir=self.versions, prefix=f".incoming-{version}-"))
            try:
                if move:
                    staging.rmdir()
                    shutil.move(str(bundle.path), staging)
                else:
                    shutil.copytree(bundle.path, staging, dirs_exist_ok=True)
                GuardBundle.load(staging)
                os.rename(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        log.info("registered", guard_version=version, registry=str(self.root))
        return version

    def _write_champion(self, version: str, entry: dict[str, Any]) -> None:
        history = [*self.history(), entry]
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".champion.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"version": version, "history": history}, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.root / CHAMPION_FILE)

    def promote(
        self,
        version: str,
        *,
        gate_data: Path | None = None,
        scorer: Scorer | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
        force: bool = False,
    ) -> GateDecision:
        """Make ``version`` the champion if it passes the gate (or ``force``, which is logged)."""
        with self._locked():
            challenger_path = self.path(version)
            GuardBundle.load(challenger_path)
            champion = self.champion()
            champion_metrics: dict[str, float] = {}
            challenger_metrics: dict[str, float] = {}
            if champion == version:
                return GateDecision(False, "already the champion", champion, version, {}, {})
            if force:
                ok, reason = True, "forced"
            elif champion is None:
                ok, reason = True, "no champion yet"
            else:
                if gate_data is None:
                    raise RegistryError(
                        "a champion exists: promoting needs a gate set (--gate FILE.jsonl) or --force"
                    )
                score = scorer or _evaluate
                champion_metrics = with_categories(
                    score(self.path(champion), gate_data), self.path(champion)
                )
                challenger_metrics = with_categories(
                    score(challenger_path, gate_data), challenger_path
                )
                ok, reason = gate(champion_metrics, challenger_metrics, tolerance)
            decision = GateDecision(
                ok, reason, champion, version, champion_metrics, challenger_metrics, forced=force
            )
            if ok:
                self._write_champion(
                    version,
                    {
                        "version": version,
                        "previous": champion,
                        "at": datetime.now(timezone.utc).isoformat(),
                        "forced": force,
                        "reason": reason,
                        "champion_metrics": champion_metrics,
                        "challenger_metrics": challenger_metrics,
                    },
                )
            log_method = log.warning if force else log.info
            log_method("promote", guard_version=version, decision=ok, reason=reason, forced=force)
            return decision

    def rollback(self) -> str:
        """Make the previous champion the champion again; return its version."""
        with self._locked():
            history = self.history()
            current = self.champion()
            previous = history[-1].get("previous") if history else None
            if not previous:
                raise RegistryError(f"nothing to roll back to: {current!r} has no predecessor")
            self.path(previous)
            self._write_champion(
                previous,
                {
                    "version": previous,
                    "previous": current,
                    "at": datetime.now(timezone.utc).isoformat(),
                    "rollback": True,
                },
            )
        log.warning("rollback", guard_version=previous, replaced=current)
        return previous


def with_categories(metrics: dict[str, float], bundle: Path) -> dict[str, float]:
    """``metrics`` with ``CATEGORIES`` as the bundle's manifest says (whatever the scorer
    reported); unchanged for a guard without categories."""
    count = len(GuardBundle.load(bundle).manifest.categories or [])
    found = {key: value for key, value in metrics.items() if key != CATEGORIES}
    return {**found, CATEGORIES: float(count)} if count else found


def _evaluate(bundle: Path, data: Path) -> dict[str, float]:
    from distill.evaluation import evaluate_bundle
    from distill.records import read_jsonl

    return gate_metrics(evaluate_bundle(bundle, read_jsonl(data)).to_dict())


def gate_metrics(measured: dict[str, Any]) -> dict[str, float]:
    """The gate's figures from an evaluation summary (``EvalResult.to_dict()``)."""
    found = {name: float(measured[name]) for name in GATE_METRICS}
    if measured.get("cascade"):
        found[CASCADE_LOSS] = float(measured["cascade"]["recall_loss"])
    if measured.get("categories"):
        found[CATEGORIES] = float(len(measured["categories"]["per_category"]))
    return found


# -- CLI ---------------------------------------------------------------------------------------
def _registry(args: argparse.Namespace) -> Registry:
    if args.registry:
        return Registry(Path(args.registry))
    from distill.settings import DistillSettings

    return Registry(DistillSettings().registry_path())


def _cmd_promote(args: argparse.Namespace) -> int:
    decision = _registry(args).promote(
        args.version,
        gate_data=Path(args.gate) if args.gate else None,
        tolerance=args.tolerance,
        force=args.force,
    )
    print(json.dumps(decision.to_dict(), indent=2))
    return 0 if decision.promote else 1


def _cmd_rollback(args: argparse.Namespace) -> int:
    print(json.dumps({"champion": _registry(args).rollback()}))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    print(json.dumps(_registry(args).entries(), indent=2))
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    print(json.dumps({"registered": _registry(args).register(Path(args.bundle))}))
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", help="registry directory (default: $HARMAUG_HOME/registry)")

    parser = subparsers.add_parser("register", parents=[common], help="add a bundle as a version")
    parser.add_argument("bundle", help="guard bundle directory")
    parser.set_defaults(func=_cmd_register)

    parser = subparsers.add_parser(
        "promote", parents=[common], help="make a version the champion if it passes the gate"
    )
    parser.add_argument("version")
    parser.add_argument("--gate", help="gate set JSONL (records with prompt, response, label)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--force", action="store_true", help="skip the gate (logged)")
    parser.set_defaults(func=_cmd_promote)

    parser = subparsers.add_parser(
        "rollback", parents=[common], help="restore the previous champion"
    )
    parser.set_defaults(func=_cmd_rollback)

    parser = subparsers.add_parser("list", parents=[common], help="versions with their metrics")
    parser.set_defaults(func=_cmd_list)
