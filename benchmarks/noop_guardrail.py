"""A guardrail that screens nothing, with the hooks ``HarmAugGuardrail`` overrides.

``benchmarks/gateway_overhead.py`` runs a proxy with it beside the real guard: what LiteLLM
itself spends on a request once a pre_call + post_call guardrail is registered (its guardrail
dispatch, logging payload, header hook), which no guard, however cheap, can save. Like the guard
(``HARMAUG_GC_FREEZE``, on by default), it freezes the proxy's start-up heap when it is built, so
that the two differ only by the guard's own work.

``heap_frozen`` is a LiteLLM callback that only freezes the start-up heap: the proxy without any
guardrail, with the same garbage-collector setting (``litellm_settings.callbacks``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.integrations.custom_logger import CustomLogger

from guard_plugin.hook_config import freeze_startup_heap


class HeapFrozen(CustomLogger):
    """A callback that logs nothing; building it freezes the start-up heap."""

    def __init__(self) -> None:
        super().__init__()
        freeze_startup_heap()


heap_frozen = HeapFrozen()


class NoopGuardrail(CustomGuardrail):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        freeze_startup_heap()

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
