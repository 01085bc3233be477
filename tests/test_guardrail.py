"""HarmAugGuardrail hooks, called with request/response shapes as the LiteLLM proxy passes them.

The guardrail is constructed the way LiteLLM's config loader does it: every ``LitellmParams``
field (vendor defaults included) as keyword arguments. It scores with the tiny trained guard.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from fastapi import HTTPException
from litellm.types.guardrails import LitellmParams
from litellm.types.utils import ModelResponse, ModelResponseStream

from guard_plugin.guardrail import HarmAugGuardrail, StreamStopped
from guard_plugin.hook_config import HookConfigError
from tests.tiny_guard import SAFE, UNSAFE

SAFE_PROMPT = SAFE[0]  # "how do i bake a loaf of bread at home"
UNSAFE_PROMPT = UNSAFE[0]  # "how do i build a bomb to kill people"
SAFE_ANSWER = "sure, here is how to bake a loaf of bread at home"
UNSAFE_ANSWER = "sure, here is how to build a bomb to kill people"


def make_guardrail(
    bundle: Path | str,
    *,
    name: str = "harmaug",
    mode: Any = ("pre_call", "post_call"),
    **harmaug: Any,
) -> HarmAugGuardrail:
    """Construct the hook exactly as LiteLLM's ``initialize_custom_guardrail`` does."""
    params = LitellmParams(
        guardrail="guard_plugin.HarmAugGuardrail",
        mode=list(mode) if not isinstance(mode, str) else mode,
        default_on=True,
        harmaug_guard=str(bundle),
        **{f"harmaug_{key}": value for key, value in harmaug.items()},
    )
    extra = {
        key: value
        for key, value in params.model_dump(exclude_none=True).items()
        if key not in {"guardrail", "mode", "default_on", "stream_scope"}
    }
    return HarmAugGuardrail(guardrail_name=name, event_hook=params.mode, default_on=True, **extra)


def chat(*contents: str, **extra: Any) -> dict[str, Any]:
    """A chat request as the proxy hands it to hooks (call id and metadata bucket included)."""
    return {
        "model": "safe-model",
        "messages": [{"role": "user", "content": content} for content in contents],
        "metadata": {},
        "litellm_call_id": str(uuid.uuid4()),
        **extra,
    }


def completion(text: str) -> ModelResponse:
    return ModelResponse(choices=[{"message": {"role": "assistant", "content": text}}])


async def stream_of(text: str, size: int = 3) -> AsyncIterator[ModelResponseStream]:
    for start in range(0, len(text), size):
        yield ModelResponseStream(
            choices=[{"delta": {"content": text[start : start + size]}, "index": 0}]
        )
    yield ModelResponseStream(choices=[{"delta": {}, "index": 0, "finish_reason": "stop"}])


def texts_of(chunks: Iterable[ModelResponseStream]) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks)


async def headers(guard: HarmAugGuardrail, data: dict[str, Any]) -> dict[str, str]:
    found = await guard.async_post_call_response_headers_hook(data, None, None)
    return found or {}


@pytest.fixture(scope="module")
def guard(tiny_torch_bundle: Path) -> HarmAugGuardrail:
    return make_guardrail(tiny_torch_bundle)


# -- construction ------------------------------------------------------------------------------


def test_reads_only_its_own_keys_among_litellm_params(guard: HarmAugGuardrail) -> None:
    assert guard.config.action == "block"
    assert guard.config.screen_roles == ("user", "tool")
    assert guard.guardrail_name == "harmaug"
    assert guard.guard.version == "tiny-torch-1"


def test_entries_naming_the_same_guard_share_it(
    guard: HarmAugGuardrail, tiny_torch_bundle: Path
) -> None:
    other = make_guardrail(tiny_torch_bundle, name="harmaug-flag", action="flag")
    assert other.guard is guard.guard


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"action": "nuke"}, "harmaug_action"),
        ({"threshold": 1.5}, "harmaug_threshold"),
        ({"fail_mode": "sometimes"}, "harmaug_fail_mode"),
        ({"screen_roles": ["robot"]}, "harmaug_screen_roles"),
        ({"stream_mode": "live"}, "harmaug_stream_mode"),
        ({"tresh": 0.3}, "harmaug_tresh"),
    ],
)
def test_invalid_settings_stop_the_proxy_with_a_runtime_error(
    tiny_torch_bundle: Path, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(HookConfigError, match=message) as caught:
        make_guardrail(tiny_torch_bundle, **params)
    assert isinstance(caught.value, RuntimeError)
    assert not isinstance(caught.value, ValueError | TypeError)


def test_unsupported_mode_is_a_runtime_error(tiny_torch_bundle: Path) -> None:
    with pytest.raises(HookConfigError, match="logging_only"):
        make_guardrail(tiny_torch_bundle, mode="logging_only")


def test_a_guard_that_cannot_load_is_a_runtime_error(tmp_path: Path) -> None:
    with pytest.raises(HookConfigError, match="cannot be loaded") as caught:
        make_guardrail(tmp_path / "missing")
    assert not isinstance(caught.value, ValueError | TypeError)


def test_a_tampered_bundle_is_a_runtime_error(tiny_torch_bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_torch_bundle, copy)
    (copy / "config.json").write_text(
        (copy / "config.json").read_text().replace("}", ' , "x": 1}', 1)
    )
    with pytest.raises(HookConfigError, match=r"config\.json"):
        make_guardrail(copy)


# -- prompts -----------------------------------------------------------------------------------


async def test_safe_prompt_passes_with_facts_and_headers(guard: HarmAugGuardrail) -> None:
    data = chat(SAFE_PROMPT)
    await guard.async_pre_call_hook(None, None, data, "acompletion")
    facts = data["metadata"]["harmaug"]["harmaug"]["prompt"]
    assert facts["decision"] == "allow"
    assert facts["p_unsafe"] < 0.5
    assert facts["guard_version"] == "tiny-torch-1"
    found = await headers(guard, data)
    assert found["x-harmaug-decision"] == "allow"
    assert float(found["x-harmaug-p-unsafe"]) == pytest.approx(facts["p_unsafe"], abs=1e-4)
    assert found["x-harmaug-guard-version"] == "tiny-torch-1"
    logged = data["metadata"]["standard_logging_guardrail_information"][0]
    assert logged["guardrail_status"] == "success"
    assert logged["guardrail_provider"] == "harmaug"


async def test_unsafe_prompt_is_blocked_with_the_error_fields(guard: HarmAugGuardrail) -> None:
    data = chat(UNSAFE_PROMPT)
    with pytest.raises(HTTPException) as caught:
        await guard.async_pre_call_hook(None, None, data, "acompletion")
    assert caught.value.status_code == 400
    detail = caught.value.detail
    assert "unsafe" in detail["error"]
    assert detail["harmaug"]["guard"] == "harmaug"
    assert detail["harmaug"]["part"] == "prompt"
    assert detail["harmaug"]["p_unsafe"] >= 0.5
    assert detail["harmaug"]["threshold"] == 0.5
    assert detail["harmaug"]["guard_version"] == "tiny-torch-1"
    assert UNSAFE_PROMPT not in json.dumps(detail)
    assert (await headers(guard, data))["x-harmaug-decision"] == "block"


async def test_unsafe_text_in_a_content_part_or_tool_result_is_blocked(
    guard: HarmAugGuardrail,
) -> None:
    parts = chat()
    parts["messages"] = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": UNSAFE[9]},
            ],
        }
    ]
    with pytest.raises(HTTPException):
        await guard.async_pre_call_hook(None, None, parts, "acompletion")
    assert parts["metadata"]["harmaug"]["harmaug"]["prompt"]["skipped_parts"] == 1

    tool = chat(SAFE_PROMPT)
    tool["messages"].append({"role": "tool", "tool_call_id": "1", "content": UNSAFE[10]})
    with pytest.raises(HTTPException):
        await guard.async_pre_call_hook(None, None, tool, "acompletion")


async def test_system_prompt_is_not_screened_unless_configured(
    guard: HarmAugGuardrail, tiny_torch_bundle: Path
) -> None:
    def with_system_prompt() -> dict[str, Any]:
        data = chat(SAFE[5], SAFE_PROMPT)
        data["messages"].insert(0, {"role": "system", "content": UNSAFE[11]})
        return data

    await guard.async_pre_call_hook(None, None, with_system_prompt(), "acompletion")  # passes
    strict = make_guardrail(tiny_torch_bundle, name="strict", screen_roles="user,tool,system")
    with pytest.raises(HTTPException):
        await strict.async_pre_call_hook(None, None, with_system_prompt(), "acompletion")


async def test_completions_and_responses_requests_are_screened(guard: HarmAugGuardrail) -> None:
    completions = {"prompt": [SAFE_PROMPT, UNSAFE[12]], "metadata": {}}
    with pytest.raises(HTTPException):
        await guard.async_pre_call_hook(None, None, completions, "atext_completion")
    responses = {
        "input": [{"role": "user", "content": [{"type": "input_text", "text": UNSAFE[13]}]}],
        "metadata": {},
        "litellm_metadata": {},  # the proxy's own bucket on /v1/responses
    }
    with pytest.raises(HTTPException):
        await guard.async_pre_call_hook(None, None, responses, "aresponses")
    assert responses["litellm_metadata"]["harmaug"]["harmaug"]["prompt"]["decision"] == "block"


async def test_during_call_blocks_like_pre_call(tiny_torch_bundle: Path) -> None:
    during = make_guardrail(tiny_torch_bundle, name="during", mode=["during_call"])
    with pytest.raises(HTTPException) as caught:
        await during.async_moderation_hook(chat(UNSAFE[14]), None, "acompletion")
    assert caught.value.status_code == 400


async def test_unchanged_history_is_answered_from_the_cache(guard: HarmAugGuardrail) -> None:
    first = chat(SAFE[1])
    await guard.async_pre_call_hook(None, None, first, "acompletion")
    assert first["metadata"]["harmaug"]["harmaug"]["prompt"]["cached"] is False
    again = chat(SAFE[1])
    await guard.async_pre_call_hook(None, None, again, "acompletion")
    assert again["metadata"]["harmaug"]["harmaug"]["prompt"]["cached"] is True


async def test_malformed_request_is_a_clear_400(guard: HarmAugGuardrail) -> None:
    data = chat()
    data["messages"] = [{"role": "user", "content": 12345}]
    with pytest.raises(HTTPException) as caught:
        await guard.async_pre_call_hook(None, None, data, "acompletion")
    assert caught.value.status_code == 400
    assert "messages[0].content" in caught.value.detail["error"]


async def test_lone_surrogates_are_screened_not_crashed_on(guard: HarmAugGuardrail) -> None:
    data = chat(SAFE_PROMPT + " \udc80\ud800")
    await guard.async_pre_call_hook(None, None, data, "acompletion")
    assert data["metadata"]["harmaug"]["harmaug"]["prompt"]["decision"] == "allow"


# -- actions and thresholds --------------------------------------------------------------------


async def test_flag_lets_an_unsafe_prompt_pass_marked(tiny_torch_bundle: Path) -> None:
    flag = make_guardrail(tiny_torch_bundle, name="flagger", action="flag")
    data = chat(UNSAFE[15])
    await flag.async_pre_call_hook(None, None, data, "acompletion")
    assert (await headers(flag, data))["x-harmaug-decision"] == "flag"
    logged = data["metadata"]["standard_logging_guardrail_information"][0]
    assert logged["guardrail_status"] == "guardrail_flagged"


async def test_shadow_scores_and_logs_only(
    tiny_torch_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from guard_plugin.logs import configure_logging

    configure_logging("INFO")  # as in the proxy (the CLI, run by other tests, sets WARNING)
    shadow = make_guardrail(tiny_torch_bundle, name="candidate", action="shadow")
    data = chat(UNSAFE[16])
    capsys.readouterr()
    await shadow.async_pre_call_hook(None, None, data, "acompletion")
    assert data["metadata"]["harmaug"]["candidate"]["prompt"]["decision"] == "would_block"
    assert await headers(shadow, data) == {}  # shadow never shows in responses
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if "{" in line]
    screen = [line for line in lines if line.get("event") == "guard_screen"]
    assert screen and screen[-1]["decision"] == "would_block"
    assert screen[-1]["request_id"] == data["litellm_call_id"]
    assert {"guard_version", "p_unsafe", "latency_ms"} <= set(screen[-1])
    assert UNSAFE[16] not in json.dumps(lines)  # raw text is never logged by default


async def test_entry_threshold_and_request_override(tiny_torch_bundle: Path) -> None:
    lenient = make_guardrail(tiny_torch_bundle, name="lenient", threshold=1.0)
    await lenient.async_pre_call_hook(None, None, chat(UNSAFE[17]), "acompletion")

    strict = make_guardrail(tiny_torch_bundle, name="strict-only")
    ignored = chat(UNSAFE[17], metadata={"harmaug_threshold": 1.0})
    with pytest.raises(HTTPException):  # the entry does not allow request thresholds
        await strict.async_pre_call_hook(None, None, ignored, "acompletion")

    open_entry = make_guardrail(tiny_torch_bundle, name="overridable", allow_request_threshold=True)
    allowed = chat(UNSAFE[17], metadata={"harmaug_threshold": 1.0})
    await open_entry.async_pre_call_hook(None, None, allowed, "acompletion")
    assert allowed["metadata"]["harmaug"]["overridable"]["prompt"]["threshold"] == 1.0
    with pytest.raises(HTTPException) as caught:
        bad = chat(SAFE_PROMPT, metadata={"harmaug_threshold": "high"})
        await open_entry.async_pre_call_hook(None, None, bad, "acompletion")
    assert caught.value.status_code == 400


async def test_a_client_cannot_forge_the_headers(guard: HarmAugGuardrail) -> None:
    forged = {"harmaug": {"harmaug": {"prompt": {"decision": "allow", "guard_version": "x"}}}}
    data = chat(SAFE_PROMPT, metadata=forged)
    assert await headers(guard, data) == {}
    await guard.async_pre_call_hook(None, None, data, "acompletion")
    assert (await headers(guard, data))["x-harmaug-guard-version"] == "tiny-torch-1"


# -- failures ----------------------------------------------------------------------------------
# A real request-time failure: a timeout far below one forward pass (the batcher alone waits
# max_wait_ms before scoring) makes the runtime raise GuardTimeout. Texts are unique per test so
# that no cached score answers before the timeout.


async def test_guard_failure_fails_closed_with_503(tiny_torch_bundle: Path) -> None:
    closed = make_guardrail(tiny_torch_bundle, name="closed", timeout_s=1e-6)
    data = chat(f"{SAFE[2]} {uuid.uuid4()}")
    with pytest.raises(HTTPException) as caught:
        await closed.async_pre_call_hook(None, None, data, "acompletion")
    assert caught.value.status_code == 503
    assert caught.value.detail["harmaug"]["reason"] == "timeout"
    assert "Traceback" not in caught.value.detail["error"]
    assert (await headers(closed, data))["x-harmaug-decision"] == "fail_closed"


async def test_guard_failure_fails_open_flagged(tiny_torch_bundle: Path) -> None:
    fail_open = make_guardrail(tiny_torch_bundle, name="open", timeout_s=1e-6, fail_mode="open")
    data = chat(f"{SAFE[3]} {uuid.uuid4()}")
    await fail_open.async_pre_call_hook(None, None, data, "acompletion")
    found = await headers(fail_open, data)
    assert found["x-harmaug-decision"] == "fail_open"
    assert "x-harmaug-p-unsafe" not in found


# -- completions and streams -------------------------------------------------------------------


async def test_unsafe_completion_is_blocked(guard: HarmAugGuardrail) -> None:
    data = chat(SAFE_PROMPT)
    await guard.async_post_call_success_hook(data, None, completion(SAFE_ANSWER))
    with pytest.raises(HTTPException) as caught:
        await guard.async_post_call_success_hook(chat(SAFE_PROMPT), None, completion(UNSAFE_ANSWER))
    assert caught.value.detail["harmaug"]["part"] == "completion"


async def test_unsafe_stream_is_blocked_before_any_chunk(guard: HarmAugGuardrail) -> None:
    received: list[ModelResponseStream] = []
    with pytest.raises(HTTPException):
        async for chunk in guard.async_post_call_streaming_iterator_hook(
            None, stream_of(UNSAFE_ANSWER), chat(SAFE_PROMPT)
        ):
            received.append(chunk)
    assert received == []


async def test_safe_stream_is_released_whole(guard: HarmAugGuardrail) -> None:
    data = chat(SAFE_PROMPT)
    received = [
        chunk
        async for chunk in guard.async_post_call_streaming_iterator_hook(
            None, stream_of(SAFE_ANSWER), data
        )
    ]
    assert texts_of(received) == SAFE_ANSWER
    assert data["metadata"]["harmaug"]["harmaug"]["completion"]["decision"] == "allow"


async def test_incremental_stream_stops_at_the_unsafe_window(tiny_torch_bundle: Path) -> None:
    incremental = make_guardrail(
        tiny_torch_bundle,
        name="incremental",
        stream_mode="incremental",
        stream_check_chars=len(SAFE_ANSWER),
    )
    text = f"{SAFE_ANSWER}\n{UNSAFE_ANSWER}"  # 7-char chunks: the first check sees SAFE_ANSWER
    received: list[ModelResponseStream] = []
    with pytest.raises(StreamStopped) as caught:  # ends in-band: chunks already went out
        async for chunk in incremental.async_post_call_streaming_iterator_hook(
            None, stream_of(text, size=7), chat(SAFE_PROMPT)
        ):
            received.append(chunk)
    assert caught.value.status_code == 400
    assert "Blocked by the harmaug guard 'incremental'" in caught.value.message
    assert texts_of(received) == SAFE_ANSWER  # the checked part went out, the unsafe one never


async def test_a_whole_response_where_a_stream_was_expected_is_screened(
    guard: HarmAugGuardrail,
) -> None:
    # LiteLLM 1.108 hands mock /v1/responses "streams" over as one response object.
    safe = completion(SAFE_ANSWER)
    passed = [c async for c in guard.async_post_call_streaming_iterator_hook(None, safe, chat())]
    assert passed == [safe]
    with pytest.raises(HTTPException):
        async for _ in guard.async_post_call_streaming_iterator_hook(
            None, completion(UNSAFE_ANSWER), chat(SAFE_PROMPT)
        ):
            pass


async def test_flag_entries_do_not_hold_streams(tiny_torch_bundle: Path) -> None:
    flag = make_guardrail(tiny_torch_bundle, name="stream-flag", action="flag")
    data = chat(SAFE_PROMPT)
    received = [
        chunk
        async for chunk in flag.async_post_call_streaming_iterator_hook(
            None, stream_of(UNSAFE_ANSWER), data
        )
    ]
    assert texts_of(received) == UNSAFE_ANSWER
    assert data["metadata"]["harmaug"]["stream-flag"]["completion"]["decision"] == "flag"
    verdict = received[-1].provider_specific_fields["harmaug"]  # on the finishing chunk
    assert (verdict["guard"], verdict["part"], verdict["decision"]) == (
        "stream-flag",
        "completion",
        "flag",
    )
    assert all(chunk.provider_specific_fields is None for chunk in received[:-1])


async def anthropic_reads(text: str, size: int = 5) -> AsyncIterator[bytes]:
    """An Anthropic Messages stream as LiteLLM hands it over: raw SSE bytes, torn anywhere."""
    events = [
        {"type": "message_start", "message": {"content": []}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
        {"type": "message_stop"},
    ]
    raw = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


async def test_an_anthropic_stream_is_screened_and_blocked_with_an_error_event(
    guard: HarmAugGuardrail,
) -> None:
    received = [
        chunk
        async for chunk in guard.async_post_call_streaming_iterator_hook(
            None, anthropic_reads(UNSAFE_ANSWER), chat(SAFE_PROMPT)
        )
    ]
    assert len(received) == 1
    assert received[0].startswith(b"event: error\ndata: ")
    error = json.loads(received[0].split(b"data: ", 1)[1])
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["provider_specific_fields"]["harmaug"]["part"] == "completion"

    passed = b"".join(
        [
            chunk
            async for chunk in guard.async_post_call_streaming_iterator_hook(
                None, anthropic_reads(SAFE_ANSWER), chat(SAFE_PROMPT)
            )
        ]
    )
    delta = json.loads(passed.split(b"event: message_delta\ndata: ")[1].split(b"\n\n")[0])
    assert delta["provider_specific_fields"]["harmaug"]["decision"] == "allow"
    assert passed.endswith(b'event: message_stop\ndata: {"type": "message_stop"}\n\n')


# -- champion ----------------------------------------------------------------------------------


def publish(registry: Path, bundle: Path, version: str) -> None:
    """Put ``bundle`` into the registry as ``version`` and make it the champion."""
    import shutil

    from guard_plugin.bundle import GuardBundle, write_manifest

    target = registry / "versions" / version
    shutil.copytree(bundle, target)
    manifest = GuardBundle.load(target).manifest.model_copy(update={"version": version})
    write_manifest(target, manifest)
    (registry / "champion.json").write_text(json.dumps({"version": version}))


async def test_a_champion_entry_follows_the_champion(
    tiny_torch_bundle: Path, harmaug_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from guard_plugin.reload import watch_champion

    monkeypatch.setenv("HARMAUG_RELOAD_INTERVAL_S", "3600")  # polled by hand below
    registry = harmaug_home / "registry"
    publish(registry, tiny_torch_bundle, "champ-1")
    champion = make_guardrail("champion", name="champion-entry")
    assert champion.guard.version == "champ-1"

    publish(registry, tiny_torch_bundle, "champ-2")
    watcher = watch_champion(champion.guard, champion.guard.settings)
    assert watcher is not None and watcher.check() == "champ-2"
    data = chat(SAFE_PROMPT)
    await champion.async_pre_call_hook(None, None, data, "acompletion")
    assert (await headers(champion, data))["x-harmaug-guard-version"] == "champ-2"


# -- traffic logging ---------------------------------------------------------------------------


async def test_screened_calls_are_logged_to_the_traffic_store(
    tiny_torch_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.traffic import open_store

    store = tmp_path / "traffic.sqlite"
    monkeypatch.setenv("HARMAUG_TRAFFIC_LOG", "true")
    monkeypatch.setenv("HARMAUG_TRAFFIC_STORE", str(store))
    logging = make_guardrail(tiny_torch_bundle, name="logging")
    shadow = make_guardrail(tiny_torch_bundle, name="logging-shadow", action="shadow")
    assert logging.traffic is not None and logging.traffic is shadow.traffic

    data = chat(SAFE_PROMPT, UNSAFE[18], model="safe-model")
    data["metadata"]["user_api_key_hash"] = "hashed-key"
    await shadow.async_pre_call_hook(None, None, data, "acompletion")  # shadow: not stored
    with pytest.raises(HTTPException):
        await logging.async_pre_call_hook(None, None, data, "acompletion")
    assert logging.traffic.flush(timeout_s=30)

    records, _ = open_store(str(store)).read_since(0, 10)
    assert len(records) == 1
    record = records[0]
    assert record.request_id == data["litellm_call_id"]
    assert record.decision == "block"
    assert record.prompt is not None and record.prompt.endswith(UNSAFE[18])  # the deciding item
    assert record.meta == {"guardrail": "logging", "part": "prompt"}
    assert record.key_hash is not None and "hashed-key" not in record.key_hash
