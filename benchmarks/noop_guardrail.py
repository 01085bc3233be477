"""A guardrail that screens nothing, with the hooks ``HarmAugGuardrail`` overrides.

``benchmarks/gateway_overhead.py`` runs a proxy with it beside the real guard: what LiteLLM
itself spends on a request once a pre_call + post_call guardrail is registered (its guardrail
dispatch, logging payload, header hook), which no guard, however cheap, can save.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from litellm.integrations.custom_guardrail import CustomGuardrail


class NoopGuardrail(CustomGuardrail):
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> None:
        return None

    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, response: Any
    ) -> None:
        return None

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        async for chunk in response:
            yield chunk

    async def async_post_call_response_headers_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, response: Any, **kwargs: Any
    ) -> dict[str, str] | None:
        return {"x-noop": "1"}
