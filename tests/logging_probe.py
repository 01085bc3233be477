"""A LiteLLM callback for integration tests: what LiteLLM's own logging saw, one JSON line per call.

Configured in a proxy config as ``litellm_settings: {callbacks: tests.logging_probe.probe}``;
writes to the file named by ``HARMAUG_TEST_LOGGING_PROBE``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from litellm.integrations.custom_logger import CustomLogger


class LoggingProbe(CustomLogger):
    def _write(self, kwargs: dict[str, Any]) -> None:
        payload = kwargs.get("standard_logging_object") or {}
        line = {
            "call_id": kwargs.get("litellm_call_id") or payload.get("id"),
            "status": payload.get("status"),
            "guardrail_information": payload.get("guardrail_information"),
        }
        with open(os.environ["HARMAUG_TEST_LOGGING_PROBE"], "a", encoding="utf-8") as out:
            out.write(json.dumps(line, default=str) + "\n")

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._write(kwargs)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._write(kwargs)


probe = LoggingProbe()
