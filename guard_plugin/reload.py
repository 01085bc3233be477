"""Hot reload: a gateway worker that serves the registry's champion follows it.

```python
watcher = ChampionWatcher(guard, settings)   # settings.reload_interval_s between polls
watcher.start()                              # a daemon thread; watcher.stop() ends it
```

Every ``reload_interval_s`` the watcher reads ``<registry>/champion.json`` (replaced atomically by
``distill.registry``). When it names another version, the watcher loads that bundle in its own
thread, never on the event loop: ``GuardBundle.load`` verifies the sha256 of every file, and the
model must score a probe item to a probability. Only then does ``Guard.swap`` point later calls at
the new model; calls already queued finish on the old one. A version that fails to load or
verify is refused, with an error logged (``guard_reload_refused``), and the old model keeps
serving; the watcher does not retry it until the champion pointer names another version.
"""

from __future__ import annotations

import math
import threading
import time

from guard_plugin.bundle import BundleError
from guard_plugin.guard import Guard
from guard_plugin.locate import VERSIONS_DIR, champion_version
from guard_plugin.logs import get_logger
from guard_plugin.model import GuardModel
from guard_plugin.settings import GuardSettings

log = get_logger("guard_plugin.reload")

PROBE = [("hello", None), ("hello", "hi, how can I help?")]


class ReloadRefused(BundleError):
    """A champion version that cannot be served; the old model keeps serving."""


def load_verified(path: str, settings: GuardSettings) -> GuardModel:
    """Load a bundle (hash-verified) and check that it scores the probe items to probabilities."""
    model = GuardModel.load(path, settings)
    scores = model.score(PROBE)
    if len(scores) != len(PROBE) or not all(
        math.isfinite(s.p_unsafe) and 0.0 <= s.p_unsafe <= 1.0 for s in scores
    ):
        raise ReloadRefused(f"{path}: the model does not score probe items to probabilities")
    return model


class ChampionWatcher:
    """Polls the champion pointer and swaps ``guard`` to each new champion that verifies."""

    def __init__(
        self,
        guard: Guard,
        settings: GuardSettings | None = None,
        *,
        interval_s: float | None = None,
    ) -> None:
        self.guard = guard
        self.settings = settings or guard.settings
        self.registry = self.settings.registry_path()
        self.interval_s = self.settings.reload_interval_s if interval_s is None else interval_s
        self.refused: str | None = None
        self.swaps = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def check(self) -> str | None:
        """One poll: returns the version swapped to, or None (no change, or refused)."""
        with self._lock:
            try:
                version = champion_version(self.registry)
            except BundleError as exc:
                log.error("guard_reload_failed", error=str(exc), guard_version=self.guard.version)
                return None
            if version is None or version == self.guard.version or version == self.refused:
                return None
            started = time.perf_counter()
            path = str(self.registry / VERSIONS_DIR / version)
            try:
                model = load_verified(path, self.settings)
            except Exception as exc:  # anything: the old model keeps serving
                self.refused = version
                log.error(
                    "guard_reload_refused",
                    guard_version=self.guard.version,
                    refused_version=version,
                    error=f"{type(exc).__name__}: {exc}",
                )
                return None
            if model.version != version:
                self.refused = version
                log.error(
                    "guard_reload_refused",
                    guard_version=self.guard.version,
                    refused_version=version,
                    error=f"the bundle in versions/{version} says it is {model.version!r}",
                )
                return None
            self.guard.swap(model)
            self.refused = None
            self.swaps += 1
            log.info(
                "guard_reloaded",
                guard_version=version,
                load_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            return version

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()

    def start(self) -> ChampionWatcher:
        if self.interval_s <= 0:
            return self
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="harmaug-reload", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)


_watchers: dict[int, ChampionWatcher] = {}
_watchers_lock = threading.Lock()


def watch_champion(guard: Guard, settings: GuardSettings) -> ChampionWatcher | None:
    """Start (once per guard) the watcher of a guard that serves 'champion'; None otherwise."""
    if settings.guard != "champion" or settings.reload_interval_s <= 0:
        return None
    with _watchers_lock:
        watcher = _watchers.get(id(guard))
        if watcher is None or watcher.guard is not guard:
            watcher = _watchers[id(guard)] = ChampionWatcher(guard, settings).start()
        return watcher
