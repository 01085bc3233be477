"""The teacher protocol of DESIGN.md: P(unsafe) of (prompt, response) pairs, batched.

A teacher has a stable ``teacher_id`` (model fingerprint plus every option that changes its
scores), so a label cache keyed by ``(teacher_id, content hash)`` never mixes two teachers.
``score`` is synchronous; ``ascore`` is the same for asyncio code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

Pair = tuple[str, str | None]


class TeacherError(RuntimeError):
    """A teacher that cannot score (bad model, server without logprobs, ...); says why."""


@runtime_checkable
class Teacher(Protocol):
    teacher_id: str

    def score(self, pairs: Sequence[Pair]) -> list[float]:
        """P(unsafe) of each pair, in order; response None scores the prompt alone."""
        ...

    async def ascore(self, pairs: Sequence[Pair]) -> list[float]:
        """``score`` for asyncio code."""
        ...


class ThreadedTeacher:
    """Mixin for teachers that compute in-process: ``ascore`` runs ``score`` in a worker thread."""

    def score(self, pairs: Sequence[Pair]) -> list[float]:
        raise NotImplementedError

    async def ascore(self, pairs: Sequence[Pair]) -> list[float]:
        return await asyncio.to_thread(self.score, pairs)
