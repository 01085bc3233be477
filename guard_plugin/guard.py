"""Guard: the async API the gateway calls, with verdicts, a score cache, timeouts and hot reload.

```python
guard = Guard.from_settings()                     # the registry's champion by default
verdict = await guard.check_prompt("how do I ...")
verdict = await guard.check_completion(prompt, completion, threshold=0.7)
```

A bundle with a first stage (``guard_plugin.first_stage``) is a cascade: an item the first stage
clears (below its part's clear-safe cut) is decided safe at once, without the student; every other
item goes to the student, whose verdict is final. ``Verdict.stage`` says which decided. The first
stage is skipped when the threshold in force is below the bundle's own (its cuts were chosen for
that threshold) or when ``settings.cascade`` is off; if it fails, the student decides. With
escalation on (``guard_plugin.escalation``, off by default), the student's close calls go on to
the teacher, whose verdict then is final (``stage="teacher"``; its ``threshold`` is the
teacher's own); when the teacher is late or fails, the student's verdict stands.

The student's forwards from all concurrent requests go through one :class:`MicroBatcher`; the
student never runs on the event loop (the first stage's bounded, sub-millisecond work does).
Student scores are cached by a hash of (guard version, prompt, response), so a chat that resends
its history is not rescored.

A category-aware bundle also gives each item's probability per category (``Verdict.categories``)
and the codes that fired (``Verdict.fired``: probability at or above the category's threshold in
force, the bundle's unless the call passes ``category_thresholds``). Only the student scores
categories: an item the first stage cleared has none (the first stage clears only items clearly
safe at the bundle's threshold), and a verdict the teacher gave keeps the student's category
probabilities (the teacher's answer is P(unsafe) only).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from guard_plugin.batcher import MicroBatcher
from guard_plugin.bundle import taxonomy_order
from guard_plugin.cache import LRUCache, content_key
from guard_plugin.errors import GuardError, GuardOverloaded, GuardTimeout
from guard_plugin.escalation import Escalation
from guard_plugin.locate import resolve_guard_path
from guard_plugin.logs import get_logger
from guard_plugin.model import GuardModel, Score
from guard_plugin.settings import GuardSettings

log = get_logger("guard_plugin.guard")

Stage = Literal["first_stage", "student", "teacher"]


@dataclass(frozen=True)
class Verdict:
    """The guard's answer for one (prompt, response) item. ``unsafe`` is ``p_unsafe >= threshold``
    (for the teacher's verdicts, its own P(unsafe) and threshold). ``categories``: each category's
    probability (empty without category heads, and for items the first stage cleared);
    ``fired``: the codes at or above their threshold in force, in taxonomy order."""

    p_unsafe: float
    unsafe: bool
    threshold: float
    guard_version: str
    windows: int
    window_cap_hit: bool
    latency_ms: float
    cached: bool = False
    stage: Stage = "student"
    categories: dict[str, float] = field(default_factory=dict)
    fired: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def category_limits(model: GuardModel, overrides: Mapping[str, float] | None) -> dict[str, float]:
    """code -> the threshold in force of each of ``model``'s categories (``overrides`` first)."""
    overrides = overrides or {}
    heads = model.manifest.categories or []
    return {head.code: overrides.get(head.code, head.threshold) for head in heads}


class Guard:
    """Scores prompts and completions through the micro-batcher. One per event loop."""

    def __init__(self, model: GuardModel, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        self._model = model
        self._cache: LRUCache[Score] = LRUCache(self.settings.cache_size)
        self._batcher = MicroBatcher(
            max_batch_size=self.settings.max_batch_size,
            max_wait_ms=self.settings.max_wait_ms,
            max_queue=self.settings.max_queue,
            workers=self.settings.workers,
        )
        self._escalation = Escalation.from_settings(self.settings)

    @classmethod
    def from_settings(cls, settings: GuardSettings | None = None) -> Guard:
        """Load the guard the settings name (champion, registry version or path).

        Raises ``GuardNotFound`` / ``BundleError`` when it cannot be loaded.
        """
        settings = settings or GuardSettings()
        started = time.perf_counter()
        path = resolve_guard_path(settings)
        model = GuardModel.load(path, settings)
        log.info(
            "guard_loaded",
            guard_version=model.version,
            backend=model.backend.name,
            path=str(path),
            load_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return cls(model, settings)

    @property
    def model(self) -> GuardModel:
        return self._model

    @property
    def version(self) -> str:
        return self._model.version

    @property
    def threshold(self) -> float:
        return self._model.threshold

    @property
    def categories(self) -> tuple[str, ...]:
        """The codes of the served bundle's category heads (empty: P(unsafe) only)."""
        return self._model.category_codes

    def category_thresholds(self, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
        """Each category's threshold in force: the bundle's, or the one in ``overrides``."""
        return category_limits(self._model, overrides)

    def swap(self, model: GuardModel) -> None:
        """Hot reload: later calls use ``model``; calls already queued finish on the old one."""
        old = self._model
        self._model = model
        log.info("guard_swapped", guard_version=model.version, previous_version=old.version)

    async def check_prompt(
        self, prompt: str, *, threshold: float | None = None, timeout_s: float | None = None
    ) -> Verdict:
        verdicts = await self.check_many([(prompt, None)], threshold=threshold, timeout_s=timeout_s)
        return verdicts[0]

    async def check_completion(
        self,
        prompt: str,
        completion: str,
        *,
        threshold: float | None = None,
        timeout_s: float | None = None,
    ) -> Verdict:
        verdicts = await self.check_many(
            [(prompt, completion)], threshold=threshold, timeout_s=timeout_s
        )
        return verdicts[0]

    async def check_many(
        self,
        items: Sequence[tuple[str, str | None]],
        *,
        threshold: float | None = None,
        timeout_s: float | None = None,
        category_thresholds: Mapping[str, float] | None = None,
    ) -> list[Verdict]:
        """Verdicts for (prompt, response|None) items, in order: cached student scores, then the
        first stage's clearances, then the student through the micro-batcher, then (escalation
        on) the teacher for the student's close calls. ``category_thresholds`` (code ->
        threshold) overrides the bundle's thresholds of those categories for ``fired``.

        Raises :class:`GuardTimeout` after ``timeout_s`` (default ``settings.timeout_s``),
        :class:`GuardOverloaded` when the queue is full, :class:`GuardError` when scoring fails.
        """
        started = time.perf_counter()
        model = self._model
        for prompt, response in items:
            if not isinstance(prompt, str) or not (response is None or isinstance(response, str)):
                raise TypeError("guard items are (prompt: str, response: str | None) pairs")
        keys = [content_key(model.version, prompt, response) for prompt, response in items]
        found: dict[str, Score] = {}
        for key in keys:
            score = self._cache.get(key)
            if score is not None:
                found[key] = score
        cached = set(found)
        missing = {key: item for key, item in zip(keys, items, strict=True) if key not in found}
        limit = model.threshold if threshold is None else threshold
        cleared = self._first_stage(model, missing, limit) if missing else {}
        found.update(cleared)
        for key in cleared:
            del missing[key]
        if missing:
            scores = await self._score(model, list(missing.values()), timeout_s)
            for key, score in zip(missing, scores, strict=True):
                self._cache.put(key, score)
                found[key] = score
        stages: dict[str, Stage] = {
            key: "first_stage" if key in cleared else "student" for key in keys
        }
        decided = {key: (found[key].p_unsafe, limit) for key in keys}
        teacher = await self._escalate(model, dict(zip(keys, items, strict=True)), stages, decided)
        decided.update(teacher)
        stages.update(dict.fromkeys(teacher, "teacher"))
        fired: dict[str, tuple[str, ...]] = dict.fromkeys(keys, ())
        if any(found[key].categories for key in keys):  # a category-aware bundle scored
            limits = list(category_limits(model, category_thresholds).items())
            fired = {
                key: tuple(
                    code for code, limit in limits if found[key].categories.get(code, 0.0) >= limit
                )
                for key in keys
            }
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return [
            Verdict(
                p_unsafe=decided[key][0],
                unsafe=decided[key][0] >= decided[key][1],
                threshold=decided[key][1],
                guard_version=model.version,
                windows=found[key].windows,
                window_cap_hit=found[key].window_cap_hit,
                latency_ms=latency_ms,
                cached=key in cached,
                stage=stages[key],
                categories=dict(found[key].categories),
                fired=taxonomy_order(fired[key]),
            )
            for key in keys
        ]

    async def _escalate(
        self,
        model: GuardModel,
        items: dict[str, tuple[str, str | None]],
        stages: dict[str, Stage],
        decided: dict[str, tuple[float, float]],
    ) -> dict[str, tuple[float, float]]:
        """(score, threshold) of the teacher for the student's close calls, by key; nothing when
        escalation is off, and none for the items where the student's verdict stands."""
        escalation = self._escalation
        if escalation is None:
            return {}
        close = [
            key
            for key, stage in stages.items()
            if stage == "student" and escalation.wanted(*decided[key])
        ]
        if not close:
            return {}
        scores = await escalation.review([items[key] for key in close], guard_version=model.version)
        return {
            key: (score, escalation.threshold)
            for key, score in zip(close, scores, strict=True)
            if score is not None
        }

    def _first_stage(
        self, model: GuardModel, items: dict[str, tuple[str, str | None]], threshold: float
    ) -> dict[str, Score]:
        """The items the first stage clears, with its scores (never cached: the next call's
        threshold may differ). Nothing when the threshold in force is below the bundle's."""
        first = model.first_stage
        if first is None or threshold < model.threshold:
            return {}
        try:
            scores = first.clears(list(items.values()))
        except Exception as exc:  # the first stage only saves work: the student decides instead
            log.warning("first_stage_failed", guard_version=model.version, error=repr(exc))
            return {}
        return {
            key: Score(p_unsafe=score, windows=0, window_cap_hit=False)
            for key, score in zip(items, scores, strict=True)
            if score is not None
        }

    async def _score(
        self, model: GuardModel, pairs: list[tuple[str, str | None]], timeout_s: float | None
    ) -> list[Score]:
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        futures: list[asyncio.Future[Score]] = []
        try:
            for pair in pairs:
                futures.append(self._batcher.enqueue(model, pair))
            if len(futures) == 1:  # the common case: no gather
                return [await asyncio.wait_for(futures[0], timeout)]
            return list(await asyncio.wait_for(asyncio.gather(*futures), timeout))
        except asyncio.TimeoutError:
            raise GuardTimeout(f"guard verdict took longer than {timeout:g} s") from None
        finally:
            for future in futures:
                future.cancel()  # withdraws what is still queued; no-op for finished ones

    async def aclose(self) -> None:
        await self._batcher.aclose()
        if self._escalation is not None:
            await self._escalation.aclose()


__all__ = ["Guard", "GuardError", "GuardOverloaded", "GuardTimeout", "Stage", "Verdict"]
