"""One screening of one part of a call: the decision, the facts it leaves behind, the error it raises.

Decisions (the ``decision`` of logs, metadata and the ``x-harmaug-decision`` header):

* ``allow``: scored below the threshold;
* ``block``: scored at or above it, the entry's action is ``block``; the call is refused (HTTP 400);
* ``flag``: scored at or above it, the action is ``flag``; the call passes, marked;
* ``would_block``: scored at or above it, the action is ``shadow``; nothing happens but a log line;
* ``fail_closed``: the guard could not score and ``fail_mode`` is ``closed``; refused (HTTP 503);
* ``fail_open``: the guard could not score and ``fail_mode`` is ``open`` (or the action is
  ``shadow``); the call passes, marked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from fastapi import HTTPException

Action = Literal["block", "flag", "shadow"]
FailMode = Literal["closed", "open"]
Part = Literal["prompt", "completion"]
Decision = Literal["allow", "block", "flag", "would_block", "fail_closed", "fail_open"]

UNSAFE_DECISION: dict[str, Decision] = {"block": "block", "flag": "flag", "shadow": "would_block"}

# Which decision a response header reports when several screenings of one call disagree.
SEVERITY: dict[str, int] = {
    "allow": 0,
    "would_block": 0,
    "fail_open": 1,
    "flag": 2,
    "fail_closed": 3,
    "block": 4,
}


def decide(action: Action, fail_mode: FailMode, unsafe: bool | None) -> Decision:
    """The decision for a score (``unsafe`` None: the guard could not score)."""
    if unsafe is None:
        return "fail_closed" if fail_mode == "closed" and action != "shadow" else "fail_open"
    if not unsafe:
        return "allow"
    return UNSAFE_DECISION[action]


@dataclass(frozen=True)
class Screening:
    """What one guardrail entry found in one part of one call. Never holds the screened text."""

    guardrail: str
    part: Part
    action: Action
    decision: Decision
    threshold: float
    guard_version: str
    p_unsafe: float | None = None
    windows: int = 0
    window_cap_hit: bool = False
    items: int = 0
    skipped_parts: int = 0
    cached: bool = False
    latency_ms: float = 0.0
    reason: str | None = None  # why the guard could not score: timeout, overloaded, error
    stage: str | None = None  # what decided the deciding item: first_stage, student or teacher
    student_items: int = 0  # items the student scored (the rest the first stage cleared)
    teacher_items: int = 0  # of those, items escalated whose verdict the teacher gave

    def facts(self) -> dict[str, Any]:
        """JSON-friendly facts for request metadata and logs."""
        facts = {field.name: getattr(self, field.name) for field in fields(self)}
        if self.p_unsafe is not None:
            facts["p_unsafe"] = round(self.p_unsafe, 6)
        facts["latency_ms"] = round(self.latency_ms, 3)
        return facts

    def error(self) -> HTTPException | None:
        """The HTTP error that refuses the call, or None when the call goes on."""
        public = public_facts(self.facts())
        if self.decision == "block":
            judge = " by the teacher" if self.stage == "teacher" else ""
            message = (
                f"Blocked by the harmaug guard '{self.guardrail}': the {self.part} was judged "
                f"unsafe{judge} (p_unsafe {self.p_unsafe:.3f} >= threshold {self.threshold:.3f}, "
                f"guard version {self.guard_version})."
            )
            return HTTPException(status_code=400, detail={"error": message, "harmaug": public})
        if self.decision == "fail_closed":
            message = (
                f"The harmaug guard '{self.guardrail}' could not screen the {self.part} "
                f"({self.reason}); the call is refused because the guard fails closed. "
                "Retry later."
            )
            return HTTPException(status_code=503, detail={"error": message, "harmaug": public})
        return None


PUBLIC_FACTS = ("part", "decision", "p_unsafe", "threshold", "guard_version", "stage", "reason")


def public_facts(facts: Mapping[str, Any]) -> dict[str, Any]:
    """What a client may see of one screening's facts (:meth:`Screening.facts`): in the body of
    a refusal and in the verdict a stream ends with. ``reason`` is None unless the guard failed."""
    return {"guard": facts["guardrail"], **{key: facts.get(key) for key in PUBLIC_FACTS}}


class ScreeningFacts(dict[str, Any]):
    """``{guardrail name: {part: facts}}`` in request metadata under ``harmaug``.

    A dict subclass so that LiteLLM's logging serialises it as JSON, while the response-headers
    hook can tell it from a ``harmaug`` key a client put into its own request metadata (JSON
    bodies only ever parse to plain dicts).
    """


def response_headers(facts: ScreeningFacts) -> dict[str, str]:
    """``x-harmaug-*`` headers summarising every enforcing (non-shadow) screening of a call."""
    screenings = [
        part_facts
        for parts in facts.values()
        for part_facts in parts.values()
        if part_facts.get("action") != "shadow"
    ]
    if not screenings:
        return {}
    worst = max(screenings, key=lambda found: SEVERITY[found["decision"]])
    headers = {
        "x-harmaug-decision": worst["decision"],
        "x-harmaug-guard-version": ",".join(
            sorted({str(found["guard_version"]) for found in screenings})
        ),
    }
    scores = [found["p_unsafe"] for found in screenings if found.get("p_unsafe") is not None]
    if scores:
        headers["x-harmaug-p-unsafe"] = f"{max(scores):.4f}"
    stages = sorted(
        {f"{found['part']}={found['stage']}" for found in screenings if found.get("stage")}
    )
    if stages:
        headers["x-harmaug-stage"] = ",".join(stages)
    return headers
