"""Upward escalation: the student's close calls go to the teacher, within a time budget.

Off by default. With ``HARMAUG_ESCALATE_TEACHER=openai:MODEL@URL`` (a Llama Guard served by vLLM
or any OpenAI-compatible server, through :class:`adapters.teachers.openai_compat.OpenAICompatTeacher`),
every item the student scored within ``escalate_band`` of the threshold in force is sent to the
teacher, and the teacher's verdict (unsafe at ``escalate_threshold`` of its own P(unsafe))
replaces the student's. Items the first stage cleared are never escalated: they are far below
the threshold by construction.

The student's verdict stands, and the fact is logged (``escalation_failed`` with the reason,
never the text), when the teacher:

* does not answer within ``escalate_budget_ms`` (one budget per call, however many of its items
  are escalated; one attempt, no retries: a retry could not fit in a budget of this size);
* answers with an error, a body without log-probabilities, or cannot be reached;
* is busy: at most ``escalate_max_in_flight`` items are at the teacher at once; the items of a
  call over that cap are not sent (``reason=busy``), since queueing would spend the budget.

Teacher scores are cached by content like the student's, so a chat that resends its history does
not ask again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from adapters.openai_http import OpenAICompatClient
from adapters.settings import AdapterSettings
from adapters.spec import SpecError
from adapters.teachers import load_teacher
from adapters.teachers.openai_compat import OpenAICompatTeacher
from adapters.teachers.protocol import Pair, TeacherError
from guard_plugin.cache import LRUCache, content_key
from guard_plugin.logs import get_logger
from guard_plugin.settings import GuardSettings

log = get_logger("guard_plugin.escalation")


class EscalationConfigError(RuntimeError):
    """An escalation setting that cannot work (the gateway must not start with it)."""


class Escalation:
    """Sends close calls to an OpenAI-compatible teacher; one per :class:`Guard`."""

    def __init__(self, teacher: OpenAICompatTeacher, settings: GuardSettings) -> None:
        self.teacher = teacher
        self.band = settings.escalate_band
        self.budget_s = settings.escalate_budget_ms / 1000.0
        self.max_in_flight = settings.escalate_max_in_flight
        self.threshold = settings.escalate_threshold
        self.in_flight = 0
        self._cache: LRUCache[float] = LRUCache(settings.cache_size)
        self._client: OpenAICompatClient | None = None

    @classmethod
    def from_settings(cls, settings: GuardSettings) -> Escalation | None:
        """The escalation the settings ask for; None when it is off. Raises
        :class:`EscalationConfigError` for a SPEC that is not an OpenAI-compatible teacher."""
        spec = settings.escalate_teacher
        if not spec:
            return None
        if not spec.startswith("openai:"):
            raise EscalationConfigError(
                f"HARMAUG_ESCALATE_TEACHER={spec!r}: escalation needs a served teacher "
                "(openai:MODEL@URL); a local one would run a large model inside the gateway"
            )
        transport = AdapterSettings(
            http_timeout_s=settings.escalate_budget_ms / 1000.0,
            http_max_retries=0,
            http_concurrency=settings.escalate_max_in_flight,
        )
        try:
            teacher = load_teacher(spec, transport)
        except (SpecError, TeacherError) as exc:
            raise EscalationConfigError(f"HARMAUG_ESCALATE_TEACHER={spec!r}: {exc}") from None
        assert isinstance(teacher, OpenAICompatTeacher)  # the only kind an openai: SPEC loads
        return cls(teacher, settings)

    def wanted(self, p_unsafe: float, threshold: float) -> bool:
        """Whether a student score is a close call at ``threshold``."""
        return abs(p_unsafe - threshold) <= self.band

    async def review(self, items: Sequence[Pair], *, guard_version: str) -> list[float | None]:
        """The teacher's P(unsafe) per item, None where the student's verdict stands."""
        keys = [
            content_key(self.teacher.teacher_id, prompt, response) for prompt, response in items
        ]
        found: list[float | None] = [self._cache.get(key) for key in keys]
        asked = [index for index, score in enumerate(found) if score is None]
        room = max(0, self.max_in_flight - self.in_flight)
        if len(asked) > room:
            log.warning(
                "escalation_failed",
                guard_version=guard_version,
                reason="busy",
                items=len(asked) - room,
                in_flight=self.in_flight,
            )
            asked = asked[:room]
        if not asked:
            return found
        started = time.perf_counter()
        self.in_flight += len(asked)
        try:
            scores = await asyncio.wait_for(
                self.teacher.ascore([items[index] for index in asked], client=self._http()),
                self.budget_s,
            )
        except Exception as exc:  # the student's verdict stands; the gateway never fails here
            reason = "timeout" if isinstance(exc, asyncio.TimeoutError) else "error"
            log.warning(
                "escalation_failed",
                guard_version=guard_version,
                reason=reason,
                items=len(asked),
                error=type(exc).__name__,
                latency_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            return found
        finally:
            self.in_flight -= len(asked)
        for index, score in zip(asked, scores, strict=True):
            self._cache.put(keys[index], score)
            found[index] = score
        log.info(
            "guard_escalated",
            guard_version=guard_version,
            teacher=self.teacher.teacher_id,
            items=len(asked),
            unsafe=sum(score >= self.threshold for score in scores),
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return found

    def _http(self) -> OpenAICompatClient:
        """The long-lived client of the teacher's server (created inside the running loop)."""
        if self._client is None:
            self._client = OpenAICompatClient(self.teacher.base_url, self.teacher.settings)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.__aexit__(None, None, None)


__all__ = ["Escalation", "EscalationConfigError"]
