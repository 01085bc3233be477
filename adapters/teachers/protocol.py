"""The teacher protocol of DESIGN.md: P(unsafe) of (prompt, response) pairs, batched.

A teacher has a stable ``teacher_id`` (model fingerprint plus every option that changes its
scores), so a label cache keyed by ``(teacher_id, content hash)`` never mixes two teachers.
``score`` is synchronous; ``ascore`` is the same for asyncio code. A Llama Guard teacher also
has ``assess`` (``CategoryTeacher``): the score plus the generated verdict and category codes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

Pair = tuple[str, str | None]
# Tokens a teacher generates for its verdict and category line ("unsafe\nS1,S10"), at most.
CATEGORY_TOKENS = 20


@dataclass(frozen=True)
class Assessment:
    """A Llama Guard answer: P(unsafe) (first-token log-probabilities) and the generated text
    parsed (``parse_assessment``): the verdict word and the category codes as written."""

    p_unsafe: float
    verdict: str | None  # "safe" / "unsafe" as generated, None when unparseable
    categories: list[str]


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


@runtime_checkable
class CategoryTeacher(Teacher, Protocol):
    """A teacher that can also name the violated categories (its generated category line);
    ``with_categories`` says whether labelling should ask for them (``categories=true``)."""

    with_categories: bool

    def assess(self, pairs: Sequence[Pair]) -> list[Assessment]:
        """P(unsafe) and the parsed verdict and category line of each pair."""
        ...


class ThreadedTeacher:
    """Mixin for teachers that compute in-process: ``ascore`` runs ``score`` in a worker thread."""

    def score(self, pairs: Sequence[Pair]) -> list[float]:
        raise NotImplementedError

    async def ascore(self, pairs: Sequence[Pair]) -> list[float]:
        return await asyncio.to_thread(self.score, pairs)
