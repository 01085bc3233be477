"""The traffic-store protocol of DESIGN.md: append, read since a watermark, purge."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or written; callers count the records as dropped."""


class TrafficRecord(BaseModel):
    """One screened call as the gateway saw it (text already redacted as configured)."""

    id: str
    time: datetime
    request_id: str | None = None
    model: str | None = None
    key_hash: str | None = None
    team_hash: str | None = None
    user_hash: str | None = None
    prompt: str | None = None
    completion: str | None = None
    p_unsafe: float | None = None
    decision: str | None = None
    guard_version: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class TrafficStore(Protocol):
    def append(self, records: Sequence[TrafficRecord]) -> int:
        """Store records durably; returns how many were new. Raises StoreUnavailable."""
        ...

    def read_since(self, watermark: int, limit: int) -> tuple[list[TrafficRecord], int]:
        """Records stored after ``watermark`` (oldest first) and the watermark after the last."""
        ...

    def purge(self, older_than: datetime) -> int:
        """Delete records older than the given time; returns how many were deleted."""
        ...
