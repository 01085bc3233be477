"""What the guardrail writes into a stream (reading one is :mod:`guard_plugin.extract`).

* The verdict: the completion's public facts (:func:`~guard_plugin.screening.public_facts`) under
  ``provider_specific_fields.harmaug`` of the chunk that finishes the completion: the chat chunk
  whose choice has a ``finish_reason`` (``data: {..., "choices": [{..., "finish_reason": "stop"}],
  "provider_specific_fields": {"harmaug": {...}}}``), or Anthropic's ``message_delta`` event
  (``data: {"type": "message_delta", ..., "provider_specific_fields": {"harmaug": {...}}}``), the
  place where LiteLLM's refusals carry the same facts (``error.provider_specific_fields``). No
  chunk and no event is added: clients parse the stream as before, and SDKs keep the unknown
  field (the openai client in ``chunk.model_extra``, the anthropic client on the event). When
  several entries screen one stream, the chunk keeps the most severe verdict.
* The end of a refused Anthropic stream: ``event: error`` with ``data: {"type": "error",
  "error": {"type": ..., "message": ..., "provider_specific_fields": {"harmaug": {...}}}}``, the
  event Anthropic's API ends a failed stream with (its SDKs raise an ``APIStatusError`` carrying
  the message).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException

from guard_plugin.extract import sse_events
from guard_plugin.screening import SEVERITY

FIELDS_KEY = "provider_specific_fields"
VERDICT_KEY = "harmaug"
# Anthropic's error type of each status the guard refuses with (LiteLLM maps 503 to api_error too).
ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error"}


def with_verdict(chunk: Any, verdict: Mapping[str, Any]) -> Any:
    """``chunk`` (the one that finishes the completion) carrying the verdict."""
    if isinstance(chunk, (bytes, bytearray)):
        return _frame_with(bytes(chunk).decode("utf-8", errors="replace"), verdict).encode()
    if isinstance(chunk, str):
        return _frame_with(chunk, verdict)
    if isinstance(chunk, Mapping):
        return {**chunk, FIELDS_KEY: _fields_with(chunk.get(FIELDS_KEY), verdict)}
    # LiteLLM's ModelResponseStream: a field its serialiser always writes out (an object that
    # cannot carry it is left as it is)
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        chunk.provider_specific_fields = _fields_with(getattr(chunk, FIELDS_KEY, None), verdict)
    return chunk


def _fields_with(fields: Any, verdict: Mapping[str, Any]) -> dict[str, Any]:
    fields = fields if isinstance(fields, Mapping) else {}
    found = fields.get(VERDICT_KEY)  # another entry's: the more severe stays (as in the headers)
    if isinstance(found, Mapping) and _severity(found) > _severity(verdict):
        return dict(fields)
    return {**fields, VERDICT_KEY: dict(verdict)}


def _severity(verdict: Mapping[str, Any]) -> int:
    return SEVERITY.get(str(verdict.get("decision")), 0)


def _frame_with(frame: str, verdict: Mapping[str, Any]) -> str:
    events = sse_events(frame)
    if len(events) != 1 or not isinstance(events[0], dict):
        return frame  # not one JSON event: left as it is
    event = with_verdict(events[0], verdict)
    lines = [line for line in frame.splitlines() if line and not line.startswith("data:")]
    return "\n".join([*lines, f"data: {json.dumps(event, ensure_ascii=False)}"]) + "\n\n"


def anthropic_error_event(error: HTTPException) -> bytes:
    """The ``event: error`` frame that ends a refused Anthropic stream (no internals: the
    refusal's public message and facts only)."""
    detail = error.detail if isinstance(error.detail, Mapping) else {"error": str(error.detail)}
    body = {
        "type": "error",
        "error": {
            "type": ANTHROPIC_ERROR_TYPES.get(error.status_code, "api_error"),
            "message": str(detail.get("error")),
            # where LiteLLM puts the facts in a refusal's JSON body, non-streamed
            "provider_specific_fields": {k: v for k, v in detail.items() if k != "error"},
        },
    }
    return f"event: error\ndata: {json.dumps(body, ensure_ascii=False)}\n\n".encode()
