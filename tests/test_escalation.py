"""Escalation of the student's close calls to a served teacher (the fake OpenAI server).

Whatever the teacher does (answers, is late, fails, is busy), every call gets a defined verdict
within its budget; the teacher's verdict replaces the student's only when it arrived in time.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import HTTPException
from structlog.testing import capture_logs

from guard_plugin.escalation import EscalationConfigError
from guard_plugin.guard import Guard
from guard_plugin.hook_config import HookConfigError
from guard_plugin.model import GuardModel
from guard_plugin.settings import GuardSettings
from tests.fake_openai import FakeServer, Reply, completion_logprobs
from tests.test_guardrail import chat, make_guardrail
from tests.tiny_guard import SAFE, UNSAFE

SAYS_UNSAFE = Reply(completion_logprobs({"unsafe": math.log(0.9), "safe": math.log(0.1)}))
SAYS_SAFE = Reply(completion_logprobs({"safe": math.log(0.95), "unsafe": math.log(0.05)}))
BUDGET_MS = 300.0


def escalating_guard(bundle: Path, url: str, **settings: Any) -> Guard:
    values: dict[str, Any] = {
        "escalate_teacher": f"openai:llama-guard@{url}",
        "escalate_band": 1.0,  # every item the student scores is a close call
        "escalate_budget_ms": BUDGET_MS,
        "cache_size": 0,
        **settings,
    }
    guard_settings = GuardSettings(**values)
    return Guard(GuardModel.load(bundle, guard_settings), guard_settings)


def failures(logs: list[dict[str, Any]]) -> list[str]:
    return [entry["reason"] for entry in logs if entry["event"] == "escalation_failed"]


async def test_the_teachers_verdict_replaces_the_students(tiny_torch_bundle: Path) -> None:
    answers = {SAFE[0]: SAYS_UNSAFE, UNSAFE[0]: SAYS_SAFE}

    def handler(path: str, body: dict[str, Any]) -> Reply:
        return next(reply for text, reply in answers.items() if text in body["prompt"])

    with FakeServer(handler) as server:
        guard = escalating_guard(tiny_torch_bundle, server.url)
        try:
            with capture_logs() as logs:
                safe_by_student, unsafe_by_student = await guard.check_many(
                    [(SAFE[0], None), (UNSAFE[0], None)]
                )
        finally:
            await guard.aclose()
    assert safe_by_student.stage == unsafe_by_student.stage == "teacher"
    assert safe_by_student.unsafe and safe_by_student.p_unsafe == pytest.approx(0.9)
    assert not unsafe_by_student.unsafe and unsafe_by_student.p_unsafe == pytest.approx(0.05)
    assert safe_by_student.threshold == 0.5  # the teacher's own threshold
    assert {path for path, _ in server.requests} == {"completions"}
    assert all("<|begin_of_text|>" in body["prompt"] for _, body in server.requests)
    escalated = [entry for entry in logs if entry["event"] == "guard_escalated"]
    assert escalated and escalated[0]["items"] == 2 and escalated[0]["unsafe"] == 1
    assert not any(SAFE[0] in str(entry) for entry in logs)  # no text in the logs


async def test_only_close_calls_go_to_the_teacher(tiny_torch_bundle: Path) -> None:
    with FakeServer(lambda path, body: SAYS_UNSAFE) as server:
        guard = escalating_guard(tiny_torch_bundle, server.url, escalate_band=0.0)
        try:
            student = (await guard.check_prompt(SAFE[0])).p_unsafe
            verdict = await guard.check_prompt(SAFE[0], threshold=0.999)
            assert verdict.stage == "student" and server.requests == []
            assert abs(student - 0.999) > 0.0
            close = await guard.check_prompt(SAFE[0], threshold=student)
        finally:
            await guard.aclose()
    assert close.stage == "teacher" and close.unsafe and len(server.requests) == 1


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(completion_logprobs({"unsafe": 0.0}), delay_s=2.0), "timeout"),
        (Reply(status=500, body={"error": "boom"}), "error"),
        (Reply(body={"choices": [{"text": "unsafe"}]}), "error"),  # no logprobs
    ],
    ids=["times-out", "http-500", "no-logprobs"],
)
async def test_the_students_verdict_stands_when_the_teacher_fails(
    tiny_torch_bundle: Path, reply: Reply, reason: str
) -> None:
    with FakeServer(lambda path, body: reply) as server:
        guard = escalating_guard(tiny_torch_bundle, server.url)
        try:
            with capture_logs() as logs:
                started = time.perf_counter()
                safe, unsafe = await guard.check_many([(SAFE[0], None), (UNSAFE[0], None)])
                elapsed_ms = (time.perf_counter() - started) * 1000
        finally:
            await guard.aclose()
    assert (safe.stage, safe.unsafe) == ("student", False)
    assert (unsafe.stage, unsafe.unsafe) == ("student", True)
    assert elapsed_ms < BUDGET_MS + 250  # the budget, plus the student's own forward
    assert failures(logs) == [reason]
    assert len(server.requests) <= 2  # one attempt per item: no retries


async def test_items_over_the_concurrency_cap_keep_the_students_verdict(
    tiny_torch_bundle: Path,
) -> None:
    slow_unsafe = Reply(SAYS_UNSAFE.body, delay_s=0.15)
    with FakeServer(lambda path, body: slow_unsafe) as server:
        guard = escalating_guard(tiny_torch_bundle, server.url, escalate_max_in_flight=1)
        try:
            with capture_logs() as logs:
                first, second = await asyncio.gather(
                    guard.check_prompt(SAFE[0]), guard.check_prompt(SAFE[1])
                )
        finally:
            await guard.aclose()
    assert sorted([first.stage, second.stage]) == ["student", "teacher"]
    assert failures(logs) == ["busy"] and len(server.requests) == 1


def test_a_local_teacher_spec_is_refused_at_start(tiny_torch_bundle: Path) -> None:
    settings = GuardSettings(escalate_teacher="llama-guard:/models/Llama-Guard-3-8B")
    with pytest.raises(EscalationConfigError, match="served teacher"):
        Guard(GuardModel.load(tiny_torch_bundle, settings), settings)
    assert issubclass(EscalationConfigError, RuntimeError)  # LiteLLM must not skip the guard


def test_the_hook_does_not_start_with_a_bad_teacher_spec(
    tiny_torch_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARMAUG_ESCALATE_TEACHER", "openai:no-url-here")
    with pytest.raises(HookConfigError, match="MODEL@URL"):
        make_guardrail(tiny_torch_bundle, name="escalating")


async def test_a_call_blocked_by_the_teacher_says_so(
    tiny_torch_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeServer(lambda path, body: SAYS_UNSAFE) as server:
        monkeypatch.setenv("HARMAUG_ESCALATE_TEACHER", f"openai:llama-guard@{server.url}")
        monkeypatch.setenv("HARMAUG_ESCALATE_BAND", "1.0")
        guardrail = make_guardrail(tiny_torch_bundle, name="escalating")
        data = chat(SAFE[0])
        try:
            with pytest.raises(HTTPException) as info:
                await guardrail.async_pre_call_hook(None, None, data, "completion")
        finally:
            await guardrail.guard.aclose()
    detail = info.value.detail
    assert info.value.status_code == 400 and "by the teacher" in detail["error"]
    assert detail["harmaug"]["stage"] == "teacher" and detail["harmaug"]["threshold"] == 0.5
    facts = data["metadata"]["harmaug"]["escalating"]["prompt"]
    assert facts["teacher_items"] == 1 and facts["student_items"] == 1
