"""Anthropic ``/v1/messages`` and stream verdicts in the real LiteLLM proxy (a subprocess on
127.0.0.1), read on the wire with raw HTTP and with the openai client.

One proxy for the module: the example config's mock models (``safe-model``, ``unsafe-model``) plus
two Anthropic models served by a fake Anthropic upstream in this process, which streams real
``/v1/messages`` SSE (LiteLLM answers a ``mock_response`` model on ``/v1/messages`` with one JSON
message even when asked to stream, so mocks cannot exercise the streaming path). Guardrails, each
selected per request by name (``default_on: false``): the example's blocking entry ``harmaug``
(named by default), an entry that also screens system prompts, a flagging entry and an
incremental-stream entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.fake_openai import FakeServer, Reply
from tests.proxy_process import REPO_ROOT, ProxyProcess, free_port, proxy_command
from tests.tiny_guard import SAFE, UNSAFE

pytestmark = pytest.mark.integration

EXAMPLE_CONFIG = REPO_ROOT / "examples" / "litellm_config.yaml"
SAFE_PROMPT = SAFE[0]
SAFE_ANSWER = "sure, here is how to bake a loaf of bread at home"
UNSAFE_ANSWER = "sure, here is how to build a bomb to kill people"
UNSAFE_WORDS = ("bomb", "kill")  # in the unsafe answers, in none of the safe texts
UPSTREAM_ANSWERS = {  # upstream model -> what it streams, a few words per event
    "claude-safe": SAFE_ANSWER,
    "claude-unsafe": UNSAFE_ANSWER,
    "claude-mixed": f"{SAFE_ANSWER}. {UNSAFE_ANSWER}",
}
ENTRIES: dict[str, dict[str, Any]] = {
    "harmaug-system": {"mode": "pre_call", "harmaug_screen_roles": ["user", "tool", "system"]},
    "harmaug-flag": {"mode": "post_call", "harmaug_action": "flag"},
    "harmaug-incremental": {
        "mode": "post_call",
        "harmaug_stream_mode": "incremental",
        "harmaug_stream_check_chars": len(SAFE_ANSWER),
    },
}


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def anthropic_stream(text: str) -> bytes:
    """What Anthropic's API streams for a one-text-block answer."""
    message = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": "claude-fake",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    }
    events = [sse("message_start", {"type": "message_start", "message": message})]
    block = {"type": "text", "text": ""}
    events.append(
        sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        )
    )
    words = text.split(" ")
    for start in range(0, len(words), 3):
        delta = {"type": "text_delta", "text": " ".join(words[start : start + 3]) + " "}
        events.append(
            sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    events.append(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    finish = {"stop_reason": "end_turn", "stop_sequence": None}
    events.append(
        sse(
            "message_delta",
            {"type": "message_delta", "delta": finish, "usage": {"output_tokens": 9}},
        )
    )
    events.append(sse("message_stop", {"type": "message_stop"}))
    return "".join(events).encode()


def upstream_reply(path: str, body: dict[str, Any]) -> Reply:
    return Reply(raw=anthropic_stream(UPSTREAM_ANSWERS[body["model"]]))


def messages_config(path: Path, upstream_url: str) -> Path:
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["model_list"] += [
        {
            "model_name": name,
            "litellm_params": {
                "model": f"anthropic/{name}",
                "api_base": upstream_url.removesuffix("/v1"),
                "api_key": "not-used",
            },
        }
        for name in UPSTREAM_ANSWERS
    ]
    config["guardrails"] += [
        {
            "guardrail_name": name,
            "litellm_params": {"guardrail": "guard_plugin.HarmAugGuardrail", **params},
        }
        for name, params in ENTRIES.items()
    ]
    for entry in config["guardrails"]:
        entry["litellm_params"]["default_on"] = False
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def proxy(
    tiny_torch_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    root = tmp_path_factory.mktemp("proxy_messages")
    with FakeServer(upstream_reply) as upstream:
        port = free_port()
        started = ProxyProcess(
            proxy_command(messages_config(root / "config.yaml", upstream.url), port),
            port=port,
            log_file=root / "proxy.log",
            env={"HARMAUG_HOME": str(root / "home"), "HARMAUG_GUARD": str(tiny_torch_bundle)},
        )
        try:
            started.wait_ready()
            yield started
        finally:
            started.stop()


def messages(proxy: ProxyProcess, body: dict[str, Any]) -> httpx.Response:
    """A ``/v1/messages`` call, read whole (a stream too); the example entry unless the body
    names guardrails."""
    headers = {**proxy.headers, "anthropic-version": "2023-06-01"}
    request = {"max_tokens": 64, "guardrails": ["harmaug"], **body}
    return httpx.post(f"{proxy.url}/v1/messages", json=request, headers=headers, timeout=60)


def events_of(stream: str) -> list[tuple[str | None, dict[str, Any]]]:
    """The (event name, JSON data) of each SSE frame of a stream."""
    found = []
    for frame in stream.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "data" in fields and fields["data"] != "[DONE]":
            found.append((fields.get("event"), json.loads(fields["data"])))
    return found


def streamed_text(events: list[tuple[str | None, dict[str, Any]]]) -> str:
    deltas = [data["delta"] for _, data in events if data["type"] == "content_block_delta"]
    return "".join(delta.get("text", "") for delta in deltas)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


# -- the prompt --------------------------------------------------------------------------------


def test_an_unsafe_system_prompt_is_refused_with_an_anthropic_error(proxy: ProxyProcess) -> None:
    body = {
        "model": "safe-model",
        "system": [{"type": "text", "text": UNSAFE[2]}],
        "messages": user(SAFE_PROMPT),
        "guardrails": ["harmaug-system"],
    }
    response = messages(proxy, body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert "Blocked by the harmaug guard 'harmaug-system'" in error["error"]["message"]
    facts = error["error"]["provider_specific_fields"]["harmaug"]
    assert facts["part"] == "prompt"
    assert facts["decision"] == "block"
    assert "Traceback" not in response.text
    # The same system prompt passes the example entry, which does not screen system prompts.
    passed = messages(proxy, {**body, "guardrails": ["harmaug"]})
    assert passed.status_code == 200, passed.text


# -- the completion ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream-requested"])
def test_an_unsafe_completion_is_refused(proxy: ProxyProcess, stream: bool) -> None:
    # A mock model answers /v1/messages with one JSON message, stream requested or not.
    response = messages(
        proxy, {"model": "unsafe-model", "messages": user(SAFE_PROMPT), "stream": stream}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["provider_specific_fields"]["harmaug"]["part"] == "completion"
    assert not any(word in response.text for word in UNSAFE_WORDS)


def test_an_unsafe_stream_leaks_nothing_and_ends_with_an_error_event(
    proxy: ProxyProcess,
) -> None:
    response = messages(
        proxy, {"model": "claude-unsafe", "messages": user(SAFE_PROMPT), "stream": True}
    )
    assert not any(word in response.text for word in UNSAFE_WORDS), response.text
    name, data = events_of(response.text)[-1]
    assert name == "error"
    assert data["type"] == "error"
    assert data["error"]["type"] == "invalid_request_error"
    assert "Blocked by the harmaug guard 'harmaug'" in data["error"]["message"]
    assert data["error"]["provider_specific_fields"]["harmaug"]["part"] == "completion"


def test_an_incremental_stream_stops_with_an_error_event_before_the_unsafe_text(
    proxy: ProxyProcess,
) -> None:
    body = {
        "model": "claude-mixed",
        "messages": user(SAFE_PROMPT),
        "stream": True,
        "guardrails": ["harmaug-incremental"],
    }
    response = messages(proxy, body)
    events = events_of(response.text)
    assert "bake a loaf" in streamed_text(events)  # the checked safe part went out
    assert not any(word in response.text for word in UNSAFE_WORDS), response.text
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["provider_specific_fields"]["harmaug"]["guard"] == (
        "harmaug-incremental"
    )


# -- the verdict of a stream -------------------------------------------------------------------


def verdict_of(events: list[tuple[str | None, dict[str, Any]]]) -> dict[str, Any]:
    (delta,) = [data for name, data in events if name == "message_delta"]
    return delta["provider_specific_fields"]["harmaug"]


def test_a_safe_stream_ends_with_the_completion_verdict(proxy: ProxyProcess) -> None:
    response = messages(
        proxy, {"model": "claude-safe", "messages": user(SAFE_PROMPT), "stream": True}
    )
    assert response.status_code == 200, response.text
    events = events_of(response.text)
    assert streamed_text(events).strip() == SAFE_ANSWER
    assert [name for name, _ in events][-2:] == ["message_delta", "message_stop"]
    verdict = verdict_of(events)
    assert verdict["part"] == "completion"
    assert verdict["decision"] == "allow"
    assert verdict["p_unsafe"] < verdict["threshold"] == 0.5
    assert verdict["guard_version"] == "tiny-torch-1"
    assert verdict["stage"] == "student"
    # The headers went out before the completion was screened: they speak of the prompt only.
    assert response.headers["x-harmaug-stage"] == "prompt=student"


def test_a_flagged_stream_passes_with_a_flag_verdict(proxy: ProxyProcess) -> None:
    body = {
        "model": "claude-unsafe",
        "messages": user(SAFE_PROMPT),
        "stream": True,
        "guardrails": ["harmaug-flag"],
    }
    events = events_of(messages(proxy, body).text)
    assert "bomb" in streamed_text(events)
    verdict = verdict_of(events)
    assert (verdict["guard"], verdict["decision"]) == ("harmaug-flag", "flag")


def test_a_chat_stream_ends_with_the_completion_verdict(proxy: ProxyProcess) -> None:
    client = openai.OpenAI(
        base_url=f"{proxy.url}/v1", api_key=proxy.master_key, max_retries=0, timeout=60
    )
    chunks = list(
        client.chat.completions.create(
            model="safe-model",
            messages=[{"role": "user", "content": SAFE_PROMPT}],
            stream=True,
            extra_body={"guardrails": ["harmaug"]},
        )
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == SAFE_ANSWER
    finishing = [chunk for chunk in chunks if chunk.choices[0].finish_reason]
    assert len(finishing) == 1
    verdict = (finishing[0].model_extra or {})["provider_specific_fields"]["harmaug"]
    assert (verdict["part"], verdict["decision"]) == ("completion", "allow")
    assert verdict["guard_version"] == "tiny-torch-1"
