"""Per-category actions in the real LiteLLM proxy (a subprocess on 127.0.0.1, mock upstreams).

One proxy serves the tiny category-aware guard (S1 violent crimes, S11 self-harm, S12 sexual
content) through one entry that flags what is unsafe, flags self-harm and blocks violent crimes::

    harmaug_action: flag
    harmaug_categories: {S11: flag, S1: block}

A second one names categories with a guard that has none, and must not start.
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

from tests.proxy_process import ProxyProcess, free_port, proxy_command
from tests.test_proxy import EXAMPLE_CONFIG, client, harmaug_error, screen_events, user
from tests.tiny_guard import CATEGORY_TEXTS, SAFE

pytestmark = pytest.mark.integration

SELF_HARM = CATEGORY_TEXTS["S11"][1]
VIOLENT = CATEGORY_TEXTS["S1"][2]
SEXUAL = CATEGORY_TEXTS["S12"][0]
TENANT = {
    "mode": ["pre_call", "post_call"],
    "default_on": True,
    "harmaug_action": "flag",
    "harmaug_categories": {"S11": "flag", "S1": "block"},
}


def write_config(path: Path, guard: Path, entry: dict[str, Any]) -> Path:
    example = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    params = {"guardrail": "guard_plugin.HarmAugGuardrail", "harmaug_guard": str(guard), **entry}
    config = {
        **example,
        "guardrails": [{"guardrail_name": "tenant", "litellm_params": params}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def proxies(
    tiny_category_bundle: Path, tiny_torch_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ProxyProcess]]:
    root = tmp_path_factory.mktemp("category_proxies")
    env = {"HARMAUG_HOME": str(root / "home"), "HARMAUG_THREADS": "1", "HARMAUG_WORKERS": "1"}
    port, broken_port = free_port(), free_port()
    broken = ProxyProcess(  # harmaug_categories with a guard that has no category heads
        proxy_command(write_config(root / "broken.yaml", tiny_torch_bundle, TENANT), broken_port),
        port=broken_port,
        log_file=root / "broken.log",
        env=env,
    )
    tenant = ProxyProcess(
        proxy_command(write_config(root / "tenant.yaml", tiny_category_bundle, TENANT), port),
        port=port,
        log_file=root / "tenant.log",
        env=env,
    )
    try:
        tenant.wait_ready()
        yield {"tenant": tenant, "broken": broken}
    finally:
        tenant.stop()
        broken.stop()


@pytest.fixture(scope="module")
def tenant(proxies: dict[str, ProxyProcess]) -> ProxyProcess:
    return proxies["tenant"]


def test_a_flagged_category_passes_with_its_code(tenant: ProxyProcess) -> None:
    raw = client(tenant).chat.completions.with_raw_response.create(
        model="safe-model", messages=user(SELF_HARM)
    )
    assert raw.status_code == 200
    assert raw.headers["x-harmaug-decision"] == "flag"
    assert raw.headers["x-harmaug-categories"] == "S11"
    assert raw.headers["x-harmaug-guard-version"] == "tiny-categories-1"


def test_a_blocked_category_is_refused_naming_it(tenant: ProxyProcess) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(tenant).chat.completions.create(model="safe-model", messages=user(VIOLENT))
    assert caught.value.status_code == 400
    message = caught.value.response.json()["error"]["message"]
    assert "in category S1 (Violent Crimes)" in message
    facts = harmaug_error(caught.value)
    assert facts["categories"] == ["S1"] and facts["decision"] == "block"
    assert facts["part"] == "prompt" and facts["guard_version"] == "tiny-categories-1"
    assert caught.value.response.headers["x-harmaug-categories"] == "S1"
    assert "Traceback" not in caught.value.response.text


def test_a_safe_prompt_passes_without_categories(tenant: ProxyProcess) -> None:
    raw = client(tenant).chat.completions.with_raw_response.create(
        model="safe-model", messages=user(SAFE[2])
    )
    assert raw.status_code == 200
    assert raw.headers["x-harmaug-decision"] == "allow"
    assert "x-harmaug-categories" not in raw.headers


def test_an_unconfigured_category_gets_the_entry_action(tenant: ProxyProcess) -> None:
    raw = client(tenant).chat.completions.with_raw_response.create(
        model="safe-model", messages=user(SEXUAL)
    )
    assert raw.status_code == 200
    assert raw.headers["x-harmaug-decision"] == "flag"
    assert raw.headers["x-harmaug-categories"] == "S12"


def test_a_violent_completion_is_refused_and_its_stream_never_leaks(tenant: ProxyProcess) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(tenant).chat.completions.create(model="unsafe-model", messages=user(SAFE[0]))
    facts = harmaug_error(caught.value)
    assert facts["part"] == "completion" and facts["categories"] == ["S1"]
    headers = {**tenant.headers, "content-type": "application/json"}
    body = {"model": "unsafe-model", "stream": True, "messages": user(SAFE[0])}
    with httpx.stream(
        "POST", f"{tenant.url}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        received = "".join(response.iter_text())
    assert "S1 (Violent Crimes)" in received
    assert "bomb" not in received


def test_a_streamed_verdict_carries_the_categories(tenant: ProxyProcess) -> None:
    stream = client(tenant).chat.completions.create(
        model="safe-model", messages=user(SAFE[1]), stream=True
    )
    verdicts = [
        chunk.model_extra["provider_specific_fields"]["harmaug"]
        for chunk in stream
        if (chunk.model_extra or {}).get("provider_specific_fields")
    ]
    assert verdicts and verdicts[-1]["decision"] == "allow"
    assert verdicts[-1]["categories"] == []


def test_the_screen_events_carry_codes_and_probabilities_without_text(
    tenant: ProxyProcess,
) -> None:
    client(tenant).chat.completions.create(model="safe-model", messages=user(SELF_HARM))
    events = [e for e in screen_events(tenant) if e.get("categories") == ["S11"]]
    assert events, "no guard_screen event with categories [S11]"
    assert set(events[-1]["category_scores"]) == {"S11"}
    assert 0.5 <= events[-1]["category_scores"]["S11"] <= 1.0
    assert SELF_HARM not in tenant.logs()
    assert json.dumps(SELF_HARM) not in tenant.logs()


def test_categories_with_a_guard_without_heads_stop_the_proxy(
    proxies: dict[str, ProxyProcess],
) -> None:
    broken = proxies["broken"]
    assert broken.wait_exit(timeout_s=120) != 0
    assert "has no category heads" in broken.logs()
