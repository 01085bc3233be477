"""What the guard screens: the text of a request, of a response and of a stream, as LiteLLM passes them.

A request becomes a list of :class:`Turn` (role + text) in conversation order:

* chat ``messages``: string content and content-part lists (``text``/``input_text``/
  ``output_text`` parts; Anthropic-style ``tool_result`` parts recurse); every other part (images,
  audio, files ...) is skipped and counted. Assistant ``tool_calls`` become ``tool`` turns holding
  the function name and arguments; ``role: tool`` / ``function`` messages are ``tool`` turns too.
* Anthropic ``/v1/messages``: the same ``messages`` reader (content blocks: ``text``,
  ``tool_use`` as a ``tool`` turn of name and input, ``tool_result`` recursing; images,
  documents, thinking ... skipped and counted); the top-level ``system`` (a string or text
  blocks) is a ``system`` turn.
* ``/v1/completions`` ``prompt``: a string or a list of strings (token-id lists are skipped).
* ``/v1/responses`` ``input``: a string or a list of items (messages, ``function_call``,
  ``function_call_output``); ``instructions`` is a ``system`` turn.

A response is read from chat ``choices`` (content, tool calls), completions ``choices[].text``,
responses-API ``output`` items and Anthropic ``content`` blocks (``text``, ``tool_use``).

A stream is read chunk by chunk (:func:`chunk_text`): chat and completions chunks, responses-API
events, and Anthropic Messages events, as objects or dicts or as raw SSE bytes. LiteLLM hands a
``/v1/messages`` stream to the iterator hook as raw SSE bytes, one transport read per chunk (a
frame may be torn across reads, or several frames share one); :class:`StreamReader` regroups
such bytes into whole frames, one per chunk, and notes whether the stream is an Anthropic one.
:func:`finishes` tells the chunk that finishes a completion (a chat choice's ``finish_reason``,
Anthropic's ``message_delta``), which the guardrail holds until the stream is screened.

:func:`prompt_items` turns the screened turns into the items the guard scores: one item per
screened turn, with the recent turns before it as context. An unchanged turn of a multi-turn chat
gives the same item on the next request, so the runtime's score cache answers it without scoring.

Text that is not valid Unicode (lone surrogates from ``\\udcxx`` escapes) is repaired with U+FFFD.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
CONTEXT_CHARS_PER_TURN = 1000
PAIR_PROMPT_CHARS = 4000
JOIN = "\n"
SURROGATES = re.compile("[\ud800-\udfff]")


class MalformedRequest(ValueError):
    """Request content of a shape no endpoint accepts. The message names the field, never the text."""


@dataclass(frozen=True)
class Turn:
    """One piece of a conversation: ``role`` is user, assistant, system, developer or tool."""

    role: str
    text: str


@dataclass(frozen=True)
class RequestText:
    """The text of a request in order, and how many non-text parts were skipped."""

    turns: tuple[Turn, ...]
    skipped_parts: int = 0


def clean(text: str) -> str:
    """``text`` as valid Unicode: lone surrogates (from invalid ``\\u`` escapes) become U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATES.sub("\ufffd", text)
    return text


def field(obj: Any, name: str) -> Any:
    """``obj[name]`` for mappings, ``obj.name`` for LiteLLM's pydantic objects; None when absent."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


class _Collector:
    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.skipped = 0

    def add(self, role: str, text: str) -> None:
        if text:
            self.turns.append(Turn(role, clean(text)))

    def result(self) -> RequestText:
        return RequestText(tuple(self.turns), self.skipped)


def request_text(data: Mapping[str, Any]) -> RequestText:
    """The text of a chat, Anthropic messages, completions or responses request (empty when it
    has none)."""
    out = _Collector()
    if data.get("messages") is not None:
        _content(out, "system", data.get("system"), "system")  # Anthropic's top-level system
        _chat_messages(out, data["messages"])
    elif data.get("input") is not None:
        instructions = data.get("instructions")
        if isinstance(instructions, str):
            out.add("system", instructions)
        _responses_input(out, data["input"])
    elif data.get("prompt") is not None:
        _completions_prompt(out, data["prompt"])
    return out.result()


def _chat_messages(out: _Collector, messages: Any) -> None:
    if not isinstance(messages, list):
        raise MalformedRequest("messages must be a list of message objects")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise MalformedRequest(f"{where} must be an object")
        _message(out, message, where)


def _message(out: _Collector, message: Mapping[str, Any], where: str) -> None:
    role = message.get("role", "user")
    if not isinstance(role, str):
        raise MalformedRequest(f"{where}.role must be a string")
    role = "tool" if role == "function" else role
    _content(out, role, message.get("content"), f"{where}.content")
    for call_index, call in enumerate(_list_or_empty(message.get("tool_calls"))):
        _tool_call(out, call, f"{where}.tool_calls[{call_index}]")
    if message.get("function_call") is not None:
        _tool_call(out, {"function": message["function_call"]}, f"{where}.function_call")


def _list_or_empty(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _content(out: _Collector, role: str, content: Any, where: str) -> None:
    if content is None:
        return
    if isinstance(content, str):
        out.add(role, content)
        return
    if isinstance(content, Mapping):  # a single part sent without its list
        content = [content]
    if not isinstance(content, list):
        raise MalformedRequest(f"{where} must be a string or a list of content parts")
    texts: list[str] = []
    for index, part in enumerate(content):
        _part(out, role, part, f"{where}[{index}]", texts)
    out.add(role, JOIN.join(texts))


def _part(out: _Collector, role: str, part: Any, where: str, texts: list[str]) -> None:
    if isinstance(part, str):
        texts.append(part)
        return
    if not isinstance(part, Mapping):
        raise MalformedRequest(f"{where} must be a content part object")
    kind = part.get("type")
    if kind in TEXT_PART_TYPES:
        text = part.get("text")
        if not isinstance(text, str):
            raise MalformedRequest(f"{where}.text must be a string")
        texts.append(text)
    elif kind == "refusal" and isinstance(part.get("refusal"), str):
        texts.append(part["refusal"])
    elif kind == "tool_result":
        _content(out, "tool", part.get("content"), f"{where}.content")
    elif kind == "tool_use":
        out.add("tool", _call_text(part.get("name"), part.get("input")))
    else:
        out.skipped += 1


def _tool_call(out: _Collector, call: Any, where: str) -> None:
    function = field(call, "function")
    if function is None:
        out.skipped += 1
        return
    if not isinstance(function, Mapping) and not hasattr(function, "arguments"):
        raise MalformedRequest(f"{where}.function must be an object")
    out.add("tool", _call_text(field(function, "name"), field(function, "arguments")))


def _call_text(name: Any, arguments: Any) -> str:
    if arguments is None or isinstance(arguments, str):
        args = arguments or ""
    else:
        args = json.dumps(arguments, ensure_ascii=False, default=str)
    return f"{name}: {args}" if isinstance(name, str) and name else args


def _responses_input(out: _Collector, value: Any) -> None:
    if isinstance(value, str):
        out.add("user", value)
        return
    if not isinstance(value, list):
        raise MalformedRequest("input must be a string or a list of input items")
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if isinstance(item, str):
            out.add("user", item)
            continue
        if not isinstance(item, Mapping):
            raise MalformedRequest(f"{where} must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            _message(out, item, where)
        elif kind == "function_call":
            out.add("tool", _call_text(item.get("name"), item.get("arguments")))
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                _content(out, "tool", output, f"{where}.output")
            elif output is not None:
                out.add("tool", output if isinstance(output, str) else json.dumps(output))
        else:
            out.skipped += 1


def _completions_prompt(out: _Collector, prompt: Any) -> None:
    if isinstance(prompt, str):
        out.add("user", prompt)
        return
    if not isinstance(prompt, list):
        raise MalformedRequest("prompt must be a string or a list of strings")
    for index, item in enumerate(prompt):
        if isinstance(item, str):
            out.add("user", item)
        elif isinstance(item, (int, list)):  # token ids: nothing the guard can read
            out.skipped += 1
        else:
            raise MalformedRequest(f"prompt[{index}] must be a string")


# ---------------------------------------------------------------------------------------------
# What to score
# ---------------------------------------------------------------------------------------------


def _tail(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[-chars:]


def prompt_items(
    request: RequestText,
    *,
    roles: Iterable[str],
    context_turns: int,
    max_items: int,
) -> list[str]:
    """One text per screened turn, preceded by up to ``context_turns`` earlier turns (tails).

    Context turns are screened turns and assistant turns: a turn that is not screened itself
    (the system prompt, by default) is not read as context either.

    When more than ``max_items`` turns are screened, the oldest ones are joined into the first item
    (whose cost the runtime's window cap bounds), so one request costs at most ``max_items`` items.
    """
    screened = set(roles)
    readable = [turn for turn in request.turns if turn.role in screened | {"assistant"}]
    items: list[str] = []
    for index, turn in enumerate(readable):
        if turn.role not in screened:
            continue
        context = [
            _tail(before.text, CONTEXT_CHARS_PER_TURN)
            for before in readable[max(0, index - context_turns) : index]
        ]
        items.append(JOIN.join([*context, turn.text]))
    if len(items) > max_items:
        overflow = len(items) - max_items + 1
        items = [JOIN.join(items[:overflow]), *items[overflow:]]
    return items


def pair_prompt(request: RequestText, *, context_turns: int) -> str:
    """The prompt side of a (prompt, completion) pair: the last turns, without system turns."""
    recent = [turn.text for turn in request.turns if turn.role not in {"system", "developer"}]
    return _tail(JOIN.join(recent[-(context_turns + 1) :]), PAIR_PROMPT_CHARS)


# ---------------------------------------------------------------------------------------------
# Responses and stream chunks
# ---------------------------------------------------------------------------------------------


def response_text(response: Any) -> str:
    """The completion text of a chat, completions, responses-API or Anthropic messages response
    ('' when none)."""
    texts: list[str] = []
    content = field(response, "content")  # Anthropic: a list of content blocks
    if isinstance(content, list):
        texts.extend(_part_texts(content))
    for choice in _list_or_empty(field(response, "choices")):
        message = field(choice, "message")
        if message is not None:
            texts.extend(_message_texts(message))
        text = field(choice, "text")
        if isinstance(text, str):
            texts.append(text)
    for item in _list_or_empty(field(response, "output")):
        texts.extend(_output_item_texts(item))
    return clean(JOIN.join(text for text in texts if text))


def _message_texts(message: Any) -> list[str]:
    texts: list[str] = []
    content = field(message, "content")
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        texts.extend(_part_texts(content))
    for call in _list_or_empty(field(message, "tool_calls")):
        function = field(call, "function")
        if function is not None:
            texts.append(_call_text(field(function, "name"), field(function, "arguments")))
    function_call = field(message, "function_call")
    if function_call is not None:
        texts.append(_call_text(field(function_call, "name"), field(function_call, "arguments")))
    return texts


def _part_texts(parts: Sequence[Any]) -> list[str]:
    texts = []
    for part in parts:
        if field(part, "type") in TEXT_PART_TYPES and isinstance(field(part, "text"), str):
            texts.append(field(part, "text"))
        elif field(part, "type") == "refusal" and isinstance(field(part, "refusal"), str):
            texts.append(field(part, "refusal"))
        elif field(part, "type") == "tool_use":  # Anthropic
            texts.append(_call_text(field(part, "name"), field(part, "input")))
    return texts


def _output_item_texts(item: Any) -> list[str]:
    kind = field(item, "type")
    if kind == "message":
        content = field(item, "content")
        return _part_texts(content) if isinstance(content, list) else []
    if kind == "function_call":
        return [_call_text(field(item, "name"), field(item, "arguments"))]
    return []


STREAM_DELTA_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.refusal.delta",
    }
)
ANTHROPIC_STREAM_EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    }
)
SSE_FRAME_END = r"\r\n\r\n|\n\n|\r\r"
SSE_DATA = re.compile(r"^data: ?(.*)$", re.MULTILINE)


def sse_events(chunk: Any) -> list[Any]:
    """The events in one chunk: the JSON ``data`` of each SSE frame in raw bytes or text (frames
    that are not JSON, such as ``[DONE]``, are left out); any other chunk is one event itself."""
    if isinstance(chunk, (bytes, bytearray)):
        chunk = bytes(chunk).decode("utf-8", errors="replace")
    if not isinstance(chunk, str):
        return [chunk]
    events = []
    for frame in re.split(SSE_FRAME_END, chunk):
        data = "\n".join(SSE_DATA.findall(frame.replace("\r\n", "\n")))
        try:
            events.append(json.loads(data))
        except ValueError:
            continue
    return events


def chunk_text(chunk: Any) -> str:
    """The new completion text in one stream chunk: chat and completions chunks, responses-API
    events and Anthropic Messages events, as objects, dicts or raw SSE frames."""
    return "".join(_event_text(event) for event in sse_events(chunk))


def _event_text(chunk: Any) -> str:
    texts: list[str] = []
    for choice in _list_or_empty(field(chunk, "choices")):
        delta = field(choice, "delta")
        if delta is not None:
            content = field(delta, "content")
            if isinstance(content, str):
                texts.append(content)
            for call in _list_or_empty(field(delta, "tool_calls")):
                function = field(call, "function")
                arguments = field(function, "arguments") if function is not None else None
                if isinstance(arguments, str):
                    texts.append(arguments)
        text = field(choice, "text")
        if isinstance(text, str):
            texts.append(text)
    kind = field(chunk, "type")
    delta = field(chunk, "delta")
    if kind in STREAM_DELTA_EVENTS and isinstance(delta, str):
        texts.append(delta)
    elif kind == "content_block_start":  # Anthropic
        block = field(chunk, "content_block")
        if field(block, "type") == "text" and isinstance(field(block, "text"), str):
            texts.append(field(block, "text"))
        elif field(block, "type") == "tool_use":  # its input follows as input_json_delta
            texts.append(_call_text(field(block, "name"), field(block, "input") or ""))
    elif kind == "content_block_delta" and delta is not None:
        for key in ("text", "partial_json"):  # text_delta, input_json_delta
            if isinstance(field(delta, key), str):
                texts.append(field(delta, key))
    return "".join(texts)


def finishes(chunk: Any) -> bool:
    """Whether ``chunk`` finishes a completion: a chat choice with a ``finish_reason``, or
    Anthropic's ``message_delta`` (which carries the ``stop_reason``)."""
    for event in sse_events(chunk):
        if field(event, "type") == "message_delta":
            return True
        if any(
            field(choice, "finish_reason") for choice in _list_or_empty(field(event, "choices"))
        ):
            return True
    return False


class StreamReader:
    """Reads a stream as LiteLLM hands it to the iterator hook.

    Raw SSE bytes are regrouped into whole frames, one frame per chunk, so that a frame is read
    (and held, released or replaced) whole; every other chunk passes as it is. ``anthropic``
    says whether an Anthropic Messages event went by.
    """

    def __init__(self) -> None:
        self.anthropic = False

    async def read(self, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        held = b""
        async for chunk in stream:
            if not isinstance(chunk, (bytes, bytearray)):
                self._note(chunk)
                yield chunk
                continue
            held += chunk
            start = 0
            for end in re.finditer(SSE_FRAME_END.encode(), held):
                frame = held[start : end.end()]
                start = end.end()
                self._note(frame)
                yield frame
            held = held[start:]
        if held:  # a last frame without its blank line
            self._note(held)
            yield held

    def _note(self, chunk: Any) -> None:
        if not self.anthropic:
            kinds = {field(event, "type") for event in sse_events(chunk)}
            self.anthropic = not kinds.isdisjoint(ANTHROPIC_STREAM_EVENTS)
