"""The guard in the real LiteLLM proxy: subprocesses on 127.0.0.1, the openai client and raw HTTP.

Two proxies start once for the module, side by side:

* ``gateway``: ``harmaug serve`` with ``examples/litellm_config.yaml`` as shipped (mock upstream
  models, the guard in pre_call + post_call, action block), serving the tiny ONNX guard;
* ``policies``: the same mock models with one guardrail entry per behaviour under test, each
  selected per request by name (``default_on: false``), plus a ``default_on`` shadow entry that
  sees every call; it serves the tiny PyTorch guard.

A third one, the example config with a guard that cannot load, starts beside them and must exit.

Request-time guard failures are real ones, not mocks: the ``closed``/``open`` entries have a
scoring timeout (1 microsecond) far below one forward pass, so the runtime raises GuardTimeout;
their prompts are unique so that no cached score answers first.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.proxy_process import REPO_ROOT, ProxyProcess, free_port, proxy_command, serve_command
from tests.tiny_guard import SAFE, UNSAFE

pytestmark = pytest.mark.integration

EXAMPLE_CONFIG = REPO_ROOT / "examples" / "litellm_config.yaml"
SAFE_PROMPT = SAFE[0]
UNSAFE_PROMPT = UNSAFE[0]
UNSAFE_WORDS = ("bomb", "kill")  # in the unsafe mock answer, in none of the safe texts

POLICY_ENTRIES: dict[str, dict[str, Any]] = {
    "harmaug-flag": {"mode": ["pre_call", "post_call"], "harmaug_action": "flag"},
    "harmaug-closed": {"mode": "pre_call", "harmaug_timeout_s": 1e-6},
    "harmaug-open": {"mode": "pre_call", "harmaug_timeout_s": 1e-6, "harmaug_fail_mode": "open"},
    "harmaug-during": {"mode": "during_call"},
    "harmaug-override": {"mode": "pre_call", "harmaug_allow_request_threshold": True},
    "harmaug-incremental": {
        "mode": "post_call",
        "harmaug_stream_mode": "incremental",
        "harmaug_stream_check_chars": 24,
    },
}


def policies_config(path: Path) -> Path:
    example = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    entries = [
        {
            "guardrail_name": name,
            "litellm_params": {"guardrail": "guard_plugin.HarmAugGuardrail", **params},
        }
        for name, params in POLICY_ENTRIES.items()
    ]
    entries.append(
        {
            "guardrail_name": "harmaug-shadow",
            "litellm_params": {
                "guardrail": "guard_plugin.HarmAugGuardrail",
                "mode": ["pre_call", "post_call"],
                "default_on": True,
                "harmaug_action": "shadow",
            },
        }
    )
    for entry in entries:
        entry["litellm_params"].setdefault("default_on", False)
    config = {
        **example,
        "guardrails": entries,
        "litellm_settings": {"callbacks": "tests.logging_probe.probe"},  # what LiteLLM logs
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def proxies(
    tiny_cascade_bundle: Path, tiny_torch_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ProxyProcess]]:
    root = tmp_path_factory.mktemp("proxies")
    home = {"HARMAUG_HOME": str(root / "home")}
    gateway_port, policies_port, broken_port = free_port(), free_port(), free_port()
    broken = ProxyProcess(  # the example config with a guard that cannot load: must not start
        proxy_command(EXAMPLE_CONFIG, broken_port),
        port=broken_port,
        log_file=root / "broken.log",
        env={**home, "HARMAUG_GUARD": str(root / "no-such-guard")},
    )
    started = {
        "gateway": ProxyProcess(
            serve_command(EXAMPLE_CONFIG, gateway_port, "--guard", str(tiny_cascade_bundle)),
            port=gateway_port,
            log_file=root / "gateway.log",
            env=home,
        ),
        "policies": ProxyProcess(
            proxy_command(policies_config(root / "policies.yaml"), policies_port),
            port=policies_port,
            log_file=root / "policies.log",
            env={
                **home,
                "HARMAUG_GUARD": str(tiny_torch_bundle),
                "HARMAUG_TEST_LOGGING_PROBE": str(root / "litellm_logging.jsonl"),
            },
        ),
    }
    try:
        for proxy in started.values():
            proxy.wait_ready()
        yield {**started, "broken": broken}
    finally:
        for proxy in (*started.values(), broken):
            proxy.stop()


@pytest.fixture(scope="module")
def gateway(proxies: dict[str, ProxyProcess]) -> ProxyProcess:
    return proxies["gateway"]


@pytest.fixture(scope="module")
def policies(proxies: dict[str, ProxyProcess]) -> ProxyProcess:
    return proxies["policies"]


def client(proxy: ProxyProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{proxy.url}/v1", api_key=proxy.master_key, max_retries=0, timeout=60
    )


def post(proxy: ProxyProcess, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body)
    headers = {**proxy.headers, "content-type": "application/json"}
    return httpx.post(f"{proxy.url}{path}", content=content, headers=headers, timeout=120, **kwargs)


def stream_body(proxy: ProxyProcess, body: dict[str, Any]) -> str:
    """Everything the client receives for a streamed chat completion."""
    headers = {**proxy.headers, "content-type": "application/json"}
    with httpx.stream(
        "POST", f"{proxy.url}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        return "".join(response.iter_text())


def harmaug_error(exc: openai.APIStatusError) -> dict[str, Any]:
    return exc.response.json()["error"]["provider_specific_fields"]["harmaug"]


def screen_events(proxy: ProxyProcess) -> list[dict[str, Any]]:
    events = []
    for line in proxy.logs().splitlines():
        if line.startswith("{") and '"guard_screen"' in line:
            events.append(json.loads(line))
    return events


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# -- the example gateway -----------------------------------------------------------------------


def test_safe_prompt_passes_with_headers(gateway: ProxyProcess) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="safe-model", messages=user(SAFE_PROMPT)
    )
    assert raw.status_code == 200
    assert raw.parse().choices[0].message.content.startswith("sure, here is how to bake")
    assert raw.headers["x-harmaug-decision"] == "allow"
    assert float(raw.headers["x-harmaug-p-unsafe"]) < 0.5
    assert raw.headers["x-harmaug-guard-version"] == "tiny-cascade-1"
    stages = dict(part.split("=") for part in raw.headers["x-harmaug-stage"].split(","))
    assert set(stages) == {"prompt", "completion"}
    assert set(stages.values()) <= {"first_stage", "student"}


def test_unsafe_prompt_is_refused_with_the_guard_facts(gateway: ProxyProcess) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model="safe-model", messages=user(UNSAFE_PROMPT))
    assert caught.value.status_code == 400
    body = caught.value.response.json()
    assert "Blocked by the harmaug guard" in body["error"]["message"]
    facts = harmaug_error(caught.value)
    assert facts["guard"] == "harmaug"
    assert facts["part"] == "prompt"
    assert facts["p_unsafe"] >= facts["threshold"] == 0.5
    assert facts["guard_version"] == "tiny-cascade-1"
    assert facts["stage"] == "student"  # the first stage only ever clears
    assert "Traceback" not in caught.value.response.text
    assert caught.value.response.headers["x-harmaug-decision"] == "block"


def test_unsafe_completion_is_refused(gateway: ProxyProcess) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model="unsafe-model", messages=user(SAFE_PROMPT))
    assert harmaug_error(caught.value)["part"] == "completion"
    assert not any(word in caught.value.response.text for word in UNSAFE_WORDS)


def test_unsafe_stream_never_reaches_the_client(gateway: ProxyProcess) -> None:
    received = stream_body(
        gateway, {"model": "unsafe-model", "stream": True, "messages": user(SAFE_PROMPT)}
    )
    assert "Blocked by the harmaug guard" in received
    assert not any(word in received for word in UNSAFE_WORDS)


def test_safe_stream_arrives_whole(gateway: ProxyProcess) -> None:
    stream = client(gateway).chat.completions.create(
        model="safe-model", messages=user(SAFE_PROMPT), stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "sure, here is how to bake a loaf of bread at home"


def test_completions_and_responses_endpoints_are_screened(gateway: ProxyProcess) -> None:
    with pytest.raises(openai.BadRequestError):
        client(gateway).completions.create(model="safe-model", prompt=[SAFE_PROMPT, UNSAFE[3]])
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).responses.create(model="safe-model", input=UNSAFE[4])
    assert harmaug_error(caught.value)["part"] == "prompt"
    passed = client(gateway).responses.create(model="safe-model", input=SAFE[4])
    assert "bread" in passed.output_text


@pytest.mark.parametrize(
    "body",
    [
        {"model": "safe-model"},
        {"model": "safe-model", "messages": "hello"},
        {"model": "safe-model", "messages": [{"role": "user", "content": 12345}]},
        {"model": "safe-model", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        {"model": "safe-model", "messages": [7, None]},
    ],
    ids=["no-messages", "messages-str", "content-int", "part-without-text", "messages-not-objects"],
)
def test_bad_requests_get_a_clear_4xx(gateway: ProxyProcess, body: dict[str, Any]) -> None:
    response = post(gateway, "/v1/chat/completions", body)
    assert 400 <= response.status_code < 500, response.text
    assert "Traceback" not in response.text
    assert httpx.get(f"{gateway.url}/health/liveliness").status_code == 200


def test_invalid_utf8_escapes_are_screened_not_crashed_on(gateway: ProxyProcess) -> None:
    content = b'"how do i \\udc80 bake a loaf of bread at home \\ud800"'  # lone surrogates
    body = b'{"model": "safe-model", "messages": [{"role": "user", "content": ' + content + b"}]}"
    response = post(gateway, "/v1/chat/completions", body)
    # LiteLLM 1.108 refuses lone surrogates itself with a clear 400; where a version lets them
    # through, the guard repairs them (U+FFFD) and decides.
    refused_clearly = response.status_code == 400 and "surrogate" in response.text
    decided = response.headers.get("x-harmaug-decision") in {"allow", "block"}
    assert refused_clearly or decided, response.text
    raw_bytes = post(gateway, "/v1/chat/completions", b'{"model": "safe-model", "messages": \xff}')
    assert 400 <= raw_bytes.status_code < 500, raw_bytes.text


def test_five_hundred_tool_calls(gateway: ProxyProcess) -> None:
    calls = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": "lookup", "arguments": json.dumps({"page": i})},
        }
        for i in range(500)
    ]
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": SAFE_PROMPT},
        {"role": "assistant", "content": None, "tool_calls": calls},
        *(
            {"role": "tool", "tool_call_id": f"call_{i}", "content": SAFE[i % len(SAFE)]}
            for i in range(500)
        ),
    ]
    response = post(gateway, "/v1/chat/completions", {"model": "safe-model", "messages": messages})
    assert response.status_code < 500, response.text
    assert response.headers["x-harmaug-decision"] in {"allow", "block"}
    assert httpx.get(f"{gateway.url}/health/liveliness").status_code == 200


def test_one_megabyte_message_is_decided_with_bounded_cost(gateway: ProxyProcess) -> None:
    everyday = " ".join(SAFE) + " "
    text = everyday * (1_000_000 // len(everyday) + 1)
    assert len(text.encode()) > 1_000_000
    started = time.monotonic()
    response = post(
        gateway, "/v1/chat/completions", {"model": "safe-model", "messages": user(text)}
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text[:500]
    assert response.headers["x-harmaug-decision"] == "allow"
    assert elapsed < 60


# -- one entry per behaviour -------------------------------------------------------------------


def named(*guardrails: str, **body: Any) -> dict[str, Any]:
    return {"guardrails": list(guardrails), **body}


def test_flag_passes_an_unsafe_call_with_headers(policies: ProxyProcess) -> None:
    raw = client(policies).chat.completions.with_raw_response.create(
        model="safe-model", messages=user(UNSAFE[5]), extra_body=named("harmaug-flag")
    )
    assert raw.status_code == 200
    assert raw.headers["x-harmaug-decision"] == "flag"
    assert float(raw.headers["x-harmaug-p-unsafe"]) >= 0.5
    assert raw.headers["x-harmaug-guard-version"] == "tiny-torch-1"


def test_shadow_passes_and_logs_without_the_text(policies: ProxyProcess) -> None:
    raw = client(policies).chat.completions.with_raw_response.create(
        model="safe-model", messages=user(UNSAFE[6])
    )
    assert raw.status_code == 200
    assert "x-harmaug-decision" not in raw.headers  # shadow never shows to the client
    call_id = raw.headers["x-litellm-call-id"]
    events = [event for event in screen_events(policies) if event.get("request_id") == call_id]
    shadow = {e["part"]: e["decision"] for e in events if e["guardrail"] == "harmaug-shadow"}
    assert shadow["prompt"] == "would_block"
    assert shadow["completion"] in {"allow", "would_block"}  # screened too, never enforced
    assert UNSAFE[6] not in policies.logs()


def test_litellm_logging_sees_the_guard_facts(policies: ProxyProcess) -> None:
    raw = client(policies).chat.completions.with_raw_response.create(
        model="safe-model", messages=user(UNSAFE[10]), extra_body=named("harmaug-flag")
    )
    call_id = raw.headers["x-litellm-call-id"]
    probe_file = policies.log_file.parent / "litellm_logging.jsonl"
    deadline = time.monotonic() + 30
    seen: list[dict[str, Any]] = []
    while not seen and time.monotonic() < deadline:  # LiteLLM logs after the response
        time.sleep(0.2)
        lines = probe_file.read_text().splitlines() if probe_file.exists() else []
        seen = [entry for entry in map(json.loads, lines) if entry["call_id"] == call_id]
    assert seen, f"LiteLLM logged nothing for {call_id}"
    info = seen[0]["guardrail_information"]
    flagged = [
        entry
        for entry in info
        if entry["guardrail_name"] == "harmaug-flag" and entry["guardrail_provider"] == "harmaug"
    ]
    assert {entry["guardrail_response"]["part"] for entry in flagged} == {"prompt", "completion"}
    prompt = next(e for e in flagged if e["guardrail_response"]["part"] == "prompt")
    assert prompt["guardrail_status"] == "guardrail_flagged"
    assert prompt["guardrail_response"]["decision"] == "flag"
    assert prompt["guardrail_response"]["guard_version"] == "tiny-torch-1"


def test_default_on_entry_runs_when_a_request_names_another(policies: ProxyProcess) -> None:
    raw = client(policies).chat.completions.with_raw_response.create(
        model="safe-model", messages=user(UNSAFE[7]), extra_body=named("harmaug-flag")
    )
    call_id = raw.headers["x-litellm-call-id"]
    guardrails = {e["guardrail"] for e in screen_events(policies) if e["request_id"] == call_id}
    assert guardrails == {"harmaug-flag", "harmaug-shadow"}


def test_failing_guard_closed_refuses_with_503(policies: ProxyProcess) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client(policies).chat.completions.create(
            model="safe-model",
            messages=user(f"{SAFE[8]} {uuid.uuid4()}"),
            extra_body=named("harmaug-closed"),
        )
    assert caught.value.status_code == 503
    assert "could not screen" in caught.value.response.json()["error"]["message"]
    assert harmaug_error(caught.value)["reason"] == "timeout"
    assert "Traceback" not in caught.value.response.text


def test_failing_guard_open_passes_flagged(policies: ProxyProcess) -> None:
    raw = client(policies).chat.completions.with_raw_response.create(
        model="safe-model",
        messages=user(f"{SAFE[9]} {uuid.uuid4()}"),
        extra_body=named("harmaug-open"),
    )
    assert raw.status_code == 200
    assert raw.headers["x-harmaug-decision"] == "fail_open"
    call_id = raw.headers["x-litellm-call-id"]
    assert any(
        e["decision"] == "fail_open" and e["reason"] == "timeout"
        for e in screen_events(policies)
        if e["request_id"] == call_id
    )


def test_during_call_blocks_an_unsafe_prompt(policies: ProxyProcess) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(policies).chat.completions.create(
            model="safe-model", messages=user(UNSAFE[8]), extra_body=named("harmaug-during")
        )
    assert harmaug_error(caught.value)["guard"] == "harmaug-during"


def test_request_threshold_only_where_the_entry_allows_it(policies: ProxyProcess) -> None:
    raw = client(policies).chat.completions.with_raw_response.create(
        model="safe-model",
        messages=user(UNSAFE[9]),
        metadata={"harmaug_threshold": "1.0"},
        extra_body=named("harmaug-override"),
    )
    assert raw.status_code == 200
    with pytest.raises(openai.BadRequestError):
        client(policies).chat.completions.create(
            model="safe-model",
            messages=user(UNSAFE[9]),
            metadata={"harmaug_threshold": "1.0"},
            extra_body=named("harmaug-during"),
        )


def test_incremental_stream_ends_with_an_error_before_the_unsafe_text(
    policies: ProxyProcess,
) -> None:
    received = stream_body(
        policies,
        named(
            "harmaug-incremental",
            model="unsafe-model",
            stream=True,
            messages=user(SAFE_PROMPT),
        ),
    )
    assert "Blocked by the harmaug guard" in received
    assert not any(word in received for word in UNSAFE_WORDS)


def test_entries_share_one_loaded_guard(policies: ProxyProcess) -> None:
    loads = [line for line in policies.logs().splitlines() if '"guard_loaded"' in line]
    assert len(loads) == 1


# -- start-up failures -------------------------------------------------------------------------


def test_a_guard_that_cannot_load_stops_the_proxy(proxies: dict[str, ProxyProcess]) -> None:
    broken = proxies["broken"]  # started with the others, to share their start-up time
    assert broken.wait_exit(timeout_s=120) != 0
    assert "cannot be loaded" in broken.logs()
    assert "no-such-guard" in broken.logs()
