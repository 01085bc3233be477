"""One screening of one part of a call: the decision, the facts it leaves behind, the error it raises.

Decisions (the ``decision`` of logs, metadata and the ``x-harmaug-decision`` header):

* ``allow``: scored below the threshold (or only categories the entry permits fired, below);
* ``block``: the action in force is ``block``; the call is refused (HTTP 400);
* ``flag``: the action in force is ``flag``; the call passes, marked;
* ``would_block``: the action in force is ``shadow``; nothing happens but a log line;
* ``fail_closed``: the guard could not score and ``fail_mode`` is ``closed``; refused (HTTP 503);
* ``fail_open``: the guard could not score and ``fail_mode`` is ``open`` (or the entry can only
  shadow); the call passes, marked.

The action in force (:func:`action_in_force`). A guard with category heads says which categories
*fired* (an item's category probability at or above the category's threshold in force: the
entry's ``harmaug_categories`` threshold, else the bundle's). An entry's ``harmaug_categories``
gives some codes their own action (``block``, ``flag``, ``shadow`` or ``allow``), which then
replaces the entry's action for what those categories found. The action in force is the most
severe (block > flag > shadow > allow) of:

* the configured action of each category that fired, whatever P(unsafe) (so a category can
  block or flag a call whose overall score is below the threshold);
* the entry's ``harmaug_action``, when P(unsafe) >= the threshold, unless at least one category
  fired and every category that fired is configured: then the categories speak for the call
  (``{S11: flag}`` flags self-harm talk that an entry with ``harmaug_action: block`` would
  otherwise refuse, so that the application can show support resources; ``allow`` lets a tenant
  through for a category it permits).

Nothing applies: ``allow``. ``allow`` never makes a call unsafe by itself; categories that are not
configured follow the overall verdict only (they are reported in the facts and headers, not acted
on). So with ``harmaug_action: block`` and ``harmaug_categories: {S1: block, S11: flag,
S12: allow}``: a call where S1 fired is blocked, whatever its P(unsafe); an unsafe call where
only S11 fired is flagged, one where only S12 fired passes as ``allow``, one where S11 and S12
fired is flagged; an unsafe call where S10 (not configured) fired too, or where nothing fired, is
blocked; a call below the threshold where only S10 fired is allowed. Without
``harmaug_categories`` (or with a guard that has no categories) the decision is the entry's action
at the threshold, as always. ``Screening.action`` is the action in force (the entry's own when
nothing applies). Only the student scores categories: an item the cascade's first stage cleared
(clearly safe at the bundle's threshold) has none.

A part with several items (the turns of a prompt) is decided once: it is unsafe when any item is,
and the codes that fired are those of all its items. When the guard cannot score, ``fail_mode`` applies to the entry's most severe possible action
(:attr:`HookConfig.enforcing_action <guard_plugin.hook_config.HookConfig.enforcing_action>`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from fastapi import HTTPException

from guard_plugin.bundle import CATEGORY_NAMES, taxonomy_order

Action = Literal["block", "flag", "shadow"]
CategoryAction = Literal["block", "flag", "shadow", "allow"]
FailMode = Literal["closed", "open"]
Part = Literal["prompt", "completion"]
Decision = Literal["allow", "block", "flag", "would_block", "fail_closed", "fail_open"]

UNSAFE_DECISION: dict[str, Decision] = {
    "block": "block",
    "flag": "flag",
    "shadow": "would_block",
    "allow": "allow",
}
# Which action wins when the entry's and its categories' actions differ.
ACTION_SEVERITY: dict[str, int] = {"allow": 0, "shadow": 1, "flag": 2, "block": 3}

# Which decision a response header reports when several screenings of one call disagree.
SEVERITY: dict[str, int] = {
    "allow": 0,
    "would_block": 0,
    "fail_open": 1,
    "flag": 2,
    "fail_closed": 3,
    "block": 4,
}


def action_in_force(
    action: Action,
    unsafe: bool,
    fired: Sequence[str] = (),
    policies: Mapping[str, CategoryAction] | None = None,
) -> CategoryAction | None:
    """The action a scored part gets (the rule in the module docstring); None: nothing applies.

    ``policies``: the entry's configured category actions by code; ``fired``: the codes that
    fired.
    """
    policies = policies or {}
    candidates: list[CategoryAction] = [policies[code] for code in fired if code in policies]
    categories_decide = bool(fired) and all(code in policies for code in fired)
    if unsafe and not categories_decide:
        candidates.append(action)
    return max(candidates, key=ACTION_SEVERITY.__getitem__, default=None)


def decide(
    action: Action,
    fail_mode: FailMode,
    unsafe: bool | None,
    *,
    fired: Sequence[str] = (),
    policies: Mapping[str, CategoryAction] | None = None,
) -> Decision:
    """The decision for a score (``unsafe`` None: the guard could not score; ``action`` is then
    the most severe the entry can take)."""
    if unsafe is None:
        return "fail_closed" if fail_mode == "closed" and action != "shadow" else "fail_open"
    return decision_for(action_in_force(action, unsafe, fired, policies))


def decision_for(action: CategoryAction | None) -> Decision:
    """The decision of a scored part whose action in force is ``action`` (None: nothing applies)."""
    return "allow" if action is None else UNSAFE_DECISION[action]


def categories_named(codes: Sequence[str]) -> str:
    """``category S1 (Violent Crimes)`` / ``categories S1 (Violent Crimes), S11 (Self-Harm)``."""
    named = ", ".join(f"{code} ({CATEGORY_NAMES.get(code, code)})" for code in codes)
    return f"{'category' if len(codes) == 1 else 'categories'} {named}"


@dataclass(frozen=True)
class Screening:
    """What one guardrail entry found in one part of one call. Never holds the screened text."""

    guardrail: str
    part: Part
    action: CategoryAction  # the action in force (module docstring); else the entry's own
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
    categories: tuple[str, ...] = ()  # the codes that fired on any item, in taxonomy order
    category_scores: dict[str, float] = field(default_factory=dict)  # their highest probability

    def facts(self) -> dict[str, Any]:
        """JSON-friendly facts for request metadata and logs."""
        facts = {field.name: getattr(self, field.name) for field in fields(self)}
        if self.p_unsafe is not None:
            facts["p_unsafe"] = round(self.p_unsafe, 6)
        facts["latency_ms"] = round(self.latency_ms, 3)
        facts["categories"] = list(self.categories)
        facts["category_scores"] = {
            code: round(score, 6) for code, score in self.category_scores.items()
        }
        return facts

    def error(self) -> HTTPException | None:
        """The HTTP error that refuses the call, or None when the call goes on."""
        public = public_facts(self.facts())
        if self.decision == "block":
            judge = " by the teacher" if self.stage == "teacher" else ""
            where = f" in {categories_named(self.categories)}" if self.categories else ""
            p_unsafe = self.p_unsafe if self.p_unsafe is not None else 0.0
            relation = ">=" if p_unsafe >= self.threshold else "<"
            message = (
                f"Blocked by the harmaug guard '{self.guardrail}': the {self.part} was judged "
                f"unsafe{judge}{where} (p_unsafe {p_unsafe:.3f} {relation} threshold "
                f"{self.threshold:.3f}, guard version {self.guard_version})."
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


PUBLIC_FACTS = (
    "part",
    "decision",
    "p_unsafe",
    "threshold",
    "guard_version",
    "stage",
    "reason",
    "categories",
)


def public_facts(facts: Mapping[str, Any]) -> dict[str, Any]:
    """What a client may see of one screening's facts (:meth:`Screening.facts`): in the body of
    a refusal and in the verdict a stream ends with. ``reason`` is None unless the guard failed;
    ``categories`` lists the codes that fired (empty without any)."""
    public = {"guard": facts["guardrail"], **{key: facts.get(key) for key in PUBLIC_FACTS}}
    public["categories"] = list(public["categories"] or ())
    return public


class ScreeningFacts(dict[str, Any]):
    """``{guardrail name: {part: facts}}`` in request metadata under ``harmaug``.

    A dict subclass so that LiteLLM's logging serialises it as JSON, while the response-headers
    hook can tell it from a ``harmaug`` key a client put into its own request metadata (JSON
    bodies only ever parse to plain dicts).
    """


def response_headers(facts: ScreeningFacts) -> dict[str, str]:
    """``x-harmaug-*`` headers summarising every enforcing (non-shadow) screening of a call;
    ``x-harmaug-categories``: the codes that fired in any of them (absent when none)."""
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
    fired = taxonomy_order(
        code for found in screenings for code in found.get("categories") or () if code
    )
    if fired:
        headers["x-harmaug-categories"] = ",".join(fired)
    return headers
