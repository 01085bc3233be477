"""``HarmAugGuardrail``: the LiteLLM proxy hook that screens every prompt and completion.

Enable it in the proxy's ``config.yaml`` (see ``examples/litellm_config.yaml``)::

    guardrails:
      - guardrail_name: harmaug
        litellm_params:
          guardrail: guard_plugin.HarmAugGuardrail
          mode: [pre_call, post_call]      # and/or during_call
          default_on: true
          harmaug_action: block            # block | flag | shadow
          harmaug_fail_mode: closed        # closed | open

The ``harmaug_*`` keys are :class:`~guard_plugin.hook_config.HookConfig`. LiteLLM calls each hook
only when :meth:`should_run_guardrail` says so (mode, ``default_on``, the request's
``guardrails``), so the hooks below do not re-check it. Hooks are defined on this class itself
(LiteLLM detects overrides in ``type(cb).__dict__``); there is deliberately no ``apply_guardrail``,
which would reroute every hook through LiteLLM's unified path.

Modes:

* ``pre_call`` (:meth:`async_pre_call_hook`): the prompt, before the upstream call;
* ``during_call`` (:meth:`async_moderation_hook`): the prompt, in parallel with the upstream call
  (which is still made, and billed, when the prompt is blocked);
* ``post_call``: the (prompt, completion) pair, non-streaming
  (:meth:`async_post_call_success_hook`) and streaming
  (:meth:`async_post_call_streaming_iterator_hook`).

Endpoints: chat completions, ``/v1/completions``, ``/v1/responses`` and Anthropic's
``/v1/messages`` (LiteLLM call type ``anthropic_messages``: the same hooks fire; the request keeps
Anthropic's shape, the post-call hook gets the Anthropic message as a dict, and a stream reaches
the iterator hook as raw SSE bytes). :mod:`guard_plugin.extract` reads all of them.

Streams: an entry whose action is ``block`` holds the stream (``harmaug_stream_mode: buffer``, the
default) until the whole completion passed, so a blocked stream leaks nothing; ``incremental``
holds the chunks since the last check and releases them every ``harmaug_stream_check_chars``
characters once the text so far passed; a blocked stream then ends with an error event. The
bounded leak: the client may receive the text that passed earlier checks (at most everything
before the last ``harmaug_stream_check_chars`` characters); the unsafe window itself is never
released. ``flag`` and ``shadow`` entries never hold a stream: they screen it at its end (an
entry whose ``harmaug_categories`` can block holds it like a ``block`` entry).
Whatever the mode, the chunk that finishes the completion (a chat choice's ``finish_reason``,
Anthropic's ``message_delta``) and those after it are held until the stream was screened: that
chunk then carries the completion's verdict (:mod:`guard_plugin.stream_events`). A refused
chat stream ends as LiteLLM ends it (the refusal's status and error body when nothing went out
yet, else a terminal error event); a refused ``/v1/messages`` stream ends with Anthropic's
``event: error``.

Each screening leaves its facts in the request metadata (``metadata.harmaug``, and LiteLLM's
``standard_logging_guardrail_information``) and one structlog event (``guard_screen``); the
response carries ``x-harmaug-decision``, ``x-harmaug-p-unsafe``, ``x-harmaug-guard-version`` and
``x-harmaug-stage`` (which stage of the cascade decided each part: ``prompt=first_stage``,
``completion=student``, or ``teacher`` when escalation decided; the facts and the log event carry
``stage``, ``student_items`` and ``teacher_items``).

Categories (a guard with category heads, :mod:`guard_plugin.bundle`): ``harmaug_categories``
gives Llama Guard 3 categories their own action (``{S11: flag, S1: block}``, or ``{S11: {action:
flag, threshold: 0.3}}``; the decision rule is in :mod:`guard_plugin.screening`). The codes that
fired reach the facts and the ``guard_screen`` event (``categories``, and ``category_scores``:
their probabilities), the refusal's body and message, the stream's verdict, and the
``x-harmaug-categories`` header (the codes fired over the call's enforcing screenings; absent
when none). ``harmaug_categories`` with a guard that has no category heads, or none for a
configured code, stops the proxy at start-up; a hot reload to such a guard logs
``guard_categories_missing`` once and the entry falls back to the overall verdict for the missing
codes.

A stream's headers go out before its completion is screened: they cover the prompt only, and
cannot say whether the completion passed, was flagged or will be refused. The completion's
verdict reaches the client in the stream itself, as ``provider_specific_fields.harmaug`` of the
finishing chunk (the same public facts as a refusal's body: guard, part, decision, p_unsafe,
threshold, guard_version, stage, reason, categories), or, refused, in the error that ends the
stream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

from fastapi import HTTPException
from litellm.integrations import custom_guardrail
from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.litellm_core_utils.core_helpers import get_or_create_metadata_bucket
from litellm.types.guardrails import GuardrailEventHooks
from litellm.types.utils import GuardrailStatus, StandardLoggingGuardrailInformation

from guard_plugin.bundle import taxonomy_order
from guard_plugin.extract import (
    MalformedRequest,
    RequestText,
    StreamReader,
    chunk_text,
    finishes,
    pair_prompt,
    prompt_items,
    request_text,
    response_text,
)
from guard_plugin.guard import GuardOverloaded, GuardTimeout, Verdict
from guard_plugin.hook_config import (
    HookConfig,
    HookConfigError,
    shared_guard,
    shared_traffic_logger,
)
from guard_plugin.logs import get_logger
from guard_plugin.screening import (
    CategoryAction,
    Part,
    Screening,
    ScreeningFacts,
    action_in_force,
    decide,
    decision_for,
    public_facts,
    response_headers,
)
from guard_plugin.stream_events import anthropic_error_event, with_verdict
from guard_plugin.traffic_log import Screened

log = get_logger("guard_plugin.guardrail")
# LiteLLM's bridge from request metadata to the logging object (private; absent: skipped).
_sync_to_logging_obj = getattr(custom_guardrail, "_sync_guardrail_info_to_logging_obj", None)

SUPPORTED_HOOKS = [
    GuardrailEventHooks.pre_call,
    GuardrailEventHooks.during_call,
    GuardrailEventHooks.post_call,
]
FACTS_KEY = "harmaug"
LITELLM_GUARDRAIL_INFO_KEY = "standard_logging_guardrail_information"
REQUEST_THRESHOLD_KEY = "harmaug_threshold"
STREAM_CHECK_MIN_CONTEXT = 2000
LOGGING_STATUS: dict[str, GuardrailStatus] = {
    "allow": "success",
    "would_block": "success",
    "flag": "guardrail_flagged",
    "fail_open": "guardrail_failed_to_respond",
    "fail_closed": "guardrail_failed_to_respond",
    "block": "guardrail_intervened",
}


class StreamStopped(Exception):
    """Ends a stream that already sent chunks with a terminal error event.

    LiteLLM re-raises an HTTPException raised mid-stream (the connection breaks off); any other
    exception becomes ``data: {"error": {message, type, param, code}}``, built from these fields.
    (An Anthropic stream ends with ``event: error`` instead, written from ``error``.)
    """

    def __init__(self, error: HTTPException) -> None:
        self.error = error
        detail = error.detail if isinstance(error.detail, dict) else {"error": str(error.detail)}
        self.message = str(detail.get("error"))
        self.status_code = error.status_code
        self.type = "invalid_request_error" if error.status_code < 500 else "service_unavailable"
        self.param = None
        super().__init__(self.message)


def failure_reason(exc: BaseException) -> str:
    """A client-safe word for why the guard could not score (no internals)."""
    if isinstance(exc, GuardTimeout):
        return "timeout"
    if isinstance(exc, GuardOverloaded):
        return "overloaded"
    return "error"


class HarmAugGuardrail(CustomGuardrail):
    """Screens prompts and completions with the harmaug guard; blocks, flags or shadows."""

    def __init__(self, **kwargs: Any) -> None:
        name = str(kwargs.get("guardrail_name") or "harmaug")
        self.config = HookConfig.from_params(kwargs, name=name)
        try:
            super().__init__(
                guardrail_name=name,
                supported_event_hooks=SUPPORTED_HOOKS,
                event_hook=kwargs.get("event_hook"),
                default_on=bool(kwargs.get("default_on", False)),
            )
        except ValueError as exc:  # an unsupported mode: stop the proxy instead of being skipped
            raise HookConfigError(f"guardrail {name!r}: {exc}") from None
        self.guard = shared_guard(self.config.guard, name=name)
        missing = self._missing_categories()
        if missing is not None:
            raise HookConfigError(f"guardrail {name!r}: harmaug_categories: {missing}")
        self.traffic = shared_traffic_logger(self.guard.settings)
        self.name = name
        self._categories_checked: set[str] = set()  # guard versions checked for the heads

    # -- LiteLLM hooks -------------------------------------------------------------------------

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> None:
        await self._screen_prompt(data, GuardrailEventHooks.pre_call)

    async def async_moderation_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, call_type: Any
    ) -> None:
        await self._screen_prompt(data, GuardrailEventHooks.during_call)

    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, response: Any
    ) -> None:
        completion = response_text(response)
        if completion:
            await self._screen_completion(data, self._pair_prompt(data), completion)

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        if not hasattr(response, "__aiter__"):  # a whole response where a stream was expected
            await self.async_post_call_success_hook(request_data, user_api_key_dict, response)
            yield response
            return
        reader = StreamReader()
        chunks = reader.read(response)
        if self.config.enforcing_action != "block":
            screened = self._screened_at_end(chunks, request_data)
        elif self.config.stream_mode == "incremental":
            screened = self._screened_incrementally(chunks, request_data)
        else:
            screened = self._screened_before_release(chunks, request_data)
        async for chunk in self._finished_with_verdict(screened, request_data, reader):
            yield chunk

    async def async_post_call_response_headers_hook(
        self,
        data: dict[str, Any],
        user_api_key_dict: Any,
        response: Any,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, Any] | None = None,
    ) -> dict[str, str] | None:
        facts = _facts_of(data)
        return response_headers(facts) if facts is not None else None

    # -- streams --------------------------------------------------------------------------------

    async def _finished_with_verdict(
        self, stream: AsyncIterator[Any], data: dict[str, Any], reader: StreamReader
    ) -> AsyncGenerator[Any, None]:
        """Release ``stream``, holding the chunks from the one that finishes the completion on
        until the stream was screened, then put the completion's verdict on that chunk.
        A refused Anthropic stream ends with Anthropic's ``event: error``."""
        finishing: list[Any] = []
        try:
            async for chunk in stream:
                if finishing or finishes(chunk):
                    finishing.append(chunk)
                else:
                    yield chunk
        except (HTTPException, StreamStopped) as exc:
            if not reader.anthropic:
                raise  # LiteLLM ends a chat stream itself (an error status, or an error event)
            yield anthropic_error_event(exc.error if isinstance(exc, StreamStopped) else exc)
            return
        verdict = self._completion_verdict(data)
        last = max((i for i, chunk in enumerate(finishing) if finishes(chunk)), default=-1)
        for index, chunk in enumerate(finishing):
            yield with_verdict(chunk, verdict) if index == last and verdict else chunk

    def _completion_verdict(self, data: Mapping[str, Any]) -> dict[str, Any] | None:
        """The public facts of this entry's last completion screening (shadow: never shown)."""
        facts = _facts_of(data)
        found = facts.get(self.name, {}).get("completion") if facts is not None else None
        if found is None or found.get("action") == "shadow":
            return None
        return public_facts(found)

    async def _screened_before_release(
        self, stream: AsyncIterator[Any], data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        chunks = [chunk async for chunk in stream]
        completion = "".join(chunk_text(chunk) for chunk in chunks)
        await self._screen_completion(data, self._pair_prompt(data), completion)
        for chunk in chunks:
            yield chunk

    async def _screened_incrementally(
        self, stream: AsyncIterator[Any], data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        prompt = self._pair_prompt(data)
        every = self.config.stream_check_chars
        seen = max(4 * every, STREAM_CHECK_MIN_CONTEXT)  # each check sees this tail of the text
        held: list[Any] = []
        text = ""
        unchecked = 0
        released = False
        async for chunk in stream:
            held.append(chunk)
            piece = chunk_text(chunk)
            text += piece
            unchecked += len(piece)
            if unchecked >= every:
                await self._screen_stream_text(data, prompt, text[-seen:], released=released)
                for passed in held:
                    yield passed
                released = released or bool(held)
                held.clear()
                unchecked = 0
        if unchecked or not text:
            await self._screen_stream_text(data, prompt, text[-seen:], released=released)
        for passed in held:
            yield passed

    async def _screen_stream_text(
        self, data: dict[str, Any], prompt: str, text: str, *, released: bool
    ) -> None:
        """Screen streamed text; once chunks went out, a refusal ends the stream in-band."""
        try:
            await self._screen_completion(data, prompt, text)
        except HTTPException as exc:
            if not released:
                raise  # nothing sent yet: LiteLLM answers with this status and error body
            raise StreamStopped(exc) from None

    async def _screened_at_end(
        self, stream: AsyncIterator[Any], data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        pieces: list[str] = []
        async for chunk in stream:
            pieces.append(chunk_text(chunk))
            yield chunk
        # Everything went out already: record and log the verdict, refuse nothing.
        await self._screen_completion(data, self._pair_prompt(data), "".join(pieces), enforce=False)

    # -- screening ------------------------------------------------------------------------------

    async def _screen_prompt(self, data: dict[str, Any], event: GuardrailEventHooks) -> None:
        try:
            request = request_text(data)
        except MalformedRequest as exc:
            if self.config.enforcing_action == "shadow":
                return
            raise HTTPException(
                status_code=400,
                detail={"error": f"The harmaug guard cannot read this request: {exc}."},
            ) from None
        items = prompt_items(
            request,
            roles=self.config.screen_roles,
            context_turns=self.config.context_turns,
            max_items=self.config.max_items,
        )
        await self._screen(
            data,
            "prompt",
            [(item, None) for item in items],
            event=event,
            skipped_parts=request.skipped_parts,
        )

    def _pair_prompt(self, data: Mapping[str, Any]) -> str:
        try:
            request = request_text(data)
        except MalformedRequest:
            request = RequestText(())
        return pair_prompt(request, context_turns=self.config.context_turns)

    async def _screen_completion(
        self, data: dict[str, Any], prompt: str, completion: str, *, enforce: bool = True
    ) -> None:
        items = [(prompt, completion)] if completion else []
        await self._screen(
            data, "completion", items, event=GuardrailEventHooks.post_call, enforce=enforce
        )

    async def _screen(
        self,
        data: dict[str, Any],
        part: Part,
        items: Sequence[tuple[str, str | None]],
        *,
        event: GuardrailEventHooks,
        skipped_parts: int = 0,
        enforce: bool = True,
    ) -> Screening:
        threshold = self._threshold(data)
        started = time.perf_counter()
        policies = self._category_policies()
        verdicts, reason = await self._verdicts(data, part, items, threshold)
        # The item that decided: the highest score over its threshold (the teacher's verdicts
        # have their own), else (no scores) the newest item.
        deciding = max(
            range(len(verdicts)),
            key=lambda i: verdicts[i].p_unsafe - verdicts[i].threshold,
            default=-1,
        )
        if verdicts:
            threshold = verdicts[deciding].threshold
        fired = taxonomy_order(code for verdict in verdicts for code in verdict.fired)
        action: CategoryAction
        if reason:
            action = self.config.enforcing_action
            decision = decide(action, self.config.fail_mode, None)
        else:
            unsafe = any(v.unsafe for v in verdicts)
            chosen = action_in_force(self.config.action, unsafe, fired, policies)
            action, decision = chosen or self.config.action, decision_for(chosen)
        screening = Screening(
            guardrail=self.name,
            part=part,
            action=action,
            decision=decision,
            threshold=threshold,
            guard_version=self.guard.version,
            p_unsafe=verdicts[deciding].p_unsafe if verdicts else None,
            windows=sum(v.windows for v in verdicts),
            window_cap_hit=any(v.window_cap_hit for v in verdicts),
            items=len(items),
            skipped_parts=skipped_parts,
            cached=bool(verdicts) and all(v.cached for v in verdicts),
            latency_ms=(time.perf_counter() - started) * 1000.0,
            reason=reason,
            stage=verdicts[deciding].stage if verdicts else None,
            student_items=sum(v.stage != "first_stage" for v in verdicts),
            teacher_items=sum(v.stage == "teacher" for v in verdicts),
            categories=fired,
            category_scores={
                code: max(v.categories.get(code, 0.0) for v in verdicts) for code in fired
            },
        )
        self._record(data, screening, event, items[deciding] if items else None)
        error = screening.error()
        if error is not None and enforce:
            raise error
        return screening

    async def _verdicts(
        self,
        data: Mapping[str, Any],
        part: Part,
        items: Sequence[tuple[str, str | None]],
        threshold: float,
    ) -> tuple[list[Verdict], str | None]:
        """The guard's verdicts, or why it could not give them (any failure obeys fail_mode)."""
        if not items:
            return [], None
        try:
            found = await self.guard.check_many(
                items,
                threshold=threshold,
                timeout_s=self.config.timeout_s,
                category_thresholds=self.config.category_thresholds,
            )
        except Exception as exc:  # never escapes: it would be a 500 carrying internals
            reason = failure_reason(exc)
            log.warning(
                "guard_failed",
                guardrail=self.name,
                part=part,
                request_id=data.get("litellm_call_id"),
                error=type(exc).__name__,
                reason=reason,
            )
            return [], reason
        return list(found), None

    def _missing_categories(self) -> str | None:
        """Why the guard cannot serve this entry's ``harmaug_categories``; None when it can (or
        none are configured)."""
        configured = taxonomy_order(self.config.category_actions)
        if not configured:
            return None
        heads = self.guard.categories
        if not heads:
            return (
                f"the guard {self.guard.version!r} has no category heads (its guard.json lists "
                "no categories); serve a category-aware guard or remove harmaug_categories"
            )
        missing = [code for code in configured if code not in heads]
        if missing:
            return (
                f"the guard {self.guard.version!r} has no head for {', '.join(missing)} "
                f"(it scores {', '.join(heads)})"
            )
        return None

    def _category_policies(self) -> dict[str, CategoryAction]:
        """The configured category actions; after a hot reload to a guard that lacks some of
        them, those fall back to the overall verdict (warned once per guard version)."""
        policies = self.config.category_actions
        if not policies:
            return policies
        version = self.guard.version
        if version in self._categories_checked:  # once per served version, not per call
            return policies
        self._categories_checked.add(version)
        missing = self._missing_categories()
        if missing is not None:
            log.warning(
                "guard_categories_missing",
                guardrail=self.name,
                guard_version=version,
                error=missing,
            )
        return policies

    def _threshold(self, data: Mapping[str, Any]) -> float:
        configured = self.config.threshold
        base = float(configured if configured is not None else self.guard.threshold)
        requested = _request_threshold(data)
        if requested is None:
            return base
        if not self.config.allow_request_threshold:
            log.warning(
                "request_threshold_ignored",
                guardrail=self.name,
                request_id=data.get("litellm_call_id"),
            )
            return base
        try:
            value = float(requested)
        except (TypeError, ValueError):
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise HTTPException(
                status_code=400,
                detail={"error": f"metadata.{REQUEST_THRESHOLD_KEY} must be a number in [0, 1]."},
            )
        return value

    def _record_for_litellm(
        self,
        data: dict[str, Any],
        bucket: dict[str, Any],
        screening: Screening,
        facts: dict[str, Any],
        event: GuardrailEventHooks,
    ) -> None:
        """Append the facts to LiteLLM's guardrail information (``guardrail_information`` of its
        standard logging payload and spend logs).

        Written directly rather than through ``add_standard_logging_guardrail_information_to_
        request_data``: that helper re-attempts a failing OpenTelemetry import on every call
        (~0.6 ms without ``opentelemetry-sdk``) and masks secrets the facts never hold.
        """
        ended = time.time()
        duration = screening.latency_ms / 1000.0
        entry = StandardLoggingGuardrailInformation(
            guardrail_name=self.name,
            guardrail_provider="harmaug",
            guardrail_mode=event,
            guardrail_response=facts,
            guardrail_status=LOGGING_STATUS[screening.decision],
            start_time=ended - duration,
            end_time=ended,
            duration=duration,
        )
        found = bucket.get(LITELLM_GUARDRAIL_INFO_KEY)
        if isinstance(found, list):
            found.append(entry)
        else:
            bucket[LITELLM_GUARDRAIL_INFO_KEY] = [entry] if found is None else [found, entry]
        if _sync_to_logging_obj is not None:  # routes whose spend log reads the logging object
            _sync_to_logging_obj(data, data.get("litellm_logging_obj"))

    def _record(
        self,
        data: dict[str, Any],
        screening: Screening,
        event: GuardrailEventHooks,
        item: tuple[str, str | None] | None,
    ) -> None:
        """Leave the facts in the request metadata, LiteLLM's guardrail logging, our log and
        (when traffic logging is on) the traffic store."""
        facts = screening.facts()
        _, bucket = get_or_create_metadata_bucket(data)
        stored = bucket.get(FACTS_KEY)
        if not isinstance(stored, ScreeningFacts):  # absent, or a client's own "harmaug" key
            stored = bucket[FACTS_KEY] = ScreeningFacts()
        stored.setdefault(self.name, {})[screening.part] = facts
        self._record_for_litellm(data, bucket, screening, facts, event)
        text = {"text": list(item)} if item and self.guard.settings.log_text else {}
        log.info(
            "guard_screen",
            request_id=data.get("litellm_call_id"),
            **{key: value for key, value in facts.items() if value is not None},
            **text,
        )
        if self.traffic is not None and item is not None and screening.action != "shadow":
            self.traffic.log(traffic_record(data, screening, item))


def traffic_record(
    data: Mapping[str, Any], screening: Screening, item: tuple[str, str | None]
) -> Screened:
    """One screening as the traffic store keeps it (the writer thread redacts and hashes)."""
    return Screened(
        prompt=item[0],
        completion=item[1],
        p_unsafe=screening.p_unsafe,
        decision=screening.decision,
        guard_version=screening.guard_version,
        request_id=data.get("litellm_call_id"),
        model=data.get("model"),
        key=_stamped(data, "user_api_key_hash"),
        team=_stamped(data, "user_api_key_team_id"),
        user=_stamped(data, "user_api_key_end_user_id") or _stamped(data, "user_api_key_user_id"),
        meta={"guardrail": screening.guardrail, "part": screening.part},
    )


def _stamped(data: Mapping[str, Any], key: str) -> Any:
    """A value the proxy stamped into the request metadata (either bucket)."""
    for bucket_key in ("litellm_metadata", "metadata"):
        bucket = data.get(bucket_key)
        if isinstance(bucket, Mapping) and bucket.get(key) is not None:
            return bucket[key]
    return None


def _facts_of(data: Mapping[str, Any]) -> ScreeningFacts | None:
    for key in ("litellm_metadata", "metadata"):
        bucket = data.get(key)
        if isinstance(bucket, Mapping) and isinstance(bucket.get(FACTS_KEY), ScreeningFacts):
            return bucket[FACTS_KEY]
    return None


def _request_threshold(data: Mapping[str, Any]) -> Any:
    for key in ("metadata", "litellm_metadata"):
        bucket = data.get(key)
        if isinstance(bucket, Mapping) and bucket.get(REQUEST_THRESHOLD_KEY) is not None:
            return bucket[REQUEST_THRESHOLD_KEY]
    return None
