"""What the hook screens, on request/response/chunk shapes as LiteLLM passes them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litellm.types.utils import ModelResponse, ModelResponseStream, TextCompletionResponse

from guard_plugin.extract import (
    MalformedRequest,
    StreamReader,
    Turn,
    chunk_text,
    finishes,
    pair_prompt,
    prompt_items,
    request_text,
    response_text,
)

USER_AND_TOOL = ("user", "tool")


def test_chat_string_and_part_lists_with_non_text_parts_counted() -> None:
    data = {
        "messages": [
            {"role": "system", "content": "you are helpful"},
            {"role": "user", "content": "hello"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look at"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "text", "text": "this"},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                ],
            },
        ]
    }
    got = request_text(data)
    assert got.turns == (
        Turn("system", "you are helpful"),
        Turn("user", "hello"),
        Turn("user", "look at\nthis"),
    )
    assert got.skipped_parts == 2


def test_tool_call_arguments_and_tool_results_are_tool_turns() -> None:
    data = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21C"},
            {"role": "function", "name": "legacy", "content": "old style result"},
        ]
    }
    turns = request_text(data).turns
    assert Turn("tool", 'get_weather: {"city": "Paris"}') in turns
    assert Turn("tool", "sunny, 21C") in turns
    assert Turn("tool", "old style result") in turns


def test_anthropic_style_tool_parts() -> None:
    data = {
        "messages": [
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "name": "search", "input": {"q": "x"}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "content": [{"type": "text", "text": "found"}]}
                ],
            },
        ]
    }
    turns = request_text(data).turns
    assert Turn("tool", 'search: {"q": "x"}') in turns
    assert Turn("tool", "found") in turns


def test_completions_prompt_string_and_list() -> None:
    assert request_text({"prompt": "one"}).turns == (Turn("user", "one"),)
    got = request_text({"prompt": ["a", "b", [1, 2, 3]]})
    assert got.turns == (Turn("user", "a"), Turn("user", "b"))
    assert got.skipped_parts == 1


def test_responses_input_string_and_items() -> None:
    assert request_text({"input": "hi", "instructions": "be brief"}).turns == (
        Turn("system", "be brief"),
        Turn("user", "hi"),
    )
    data = {
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
            {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "1"},
            {"type": "function_call_output", "call_id": "1", "output": "result"},
            {"type": "reasoning", "summary": []},
            {"role": "user", "content": [{"type": "input_image", "image_url": "x"}]},
        ]
    }
    got = request_text(data)
    assert got.turns == (Turn("user", "q"), Turn("tool", "f: {}"), Turn("tool", "result"))
    assert got.skipped_parts == 2


def test_request_without_text_is_empty() -> None:
    assert request_text({"model": "m"}).turns == ()
    assert request_text({"messages": []}).turns == ()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"messages": "hello"}, "messages"),
        ({"messages": [42]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
        ({"messages": [{"role": 7, "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, ".text"),
        ({"messages": [{"role": "user", "content": [3]}]}, "messages[0].content[0]"),
        ({"prompt": {"a": 1}}, "prompt"),
        ({"input": 3.5}, "input"),
    ],
)
def test_malformed_requests_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(MalformedRequest, match=field.replace("[", r"\[").replace("]", r"\]")):
        request_text(data)


def test_lone_surrogates_are_repaired() -> None:
    turns = request_text({"messages": [{"role": "user", "content": "bad \udc80 text"}]}).turns
    assert turns[0].text == "bad \ufffd text"
    turns[0].text.encode("utf-8")


def test_prompt_items_screen_user_and_tool_with_recent_context() -> None:
    request = request_text(
        {
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "U1"},
                {"role": "assistant", "content": "A1"},
                {"role": "user", "content": "U2"},
            ]
        }
    )
    assert prompt_items(request, roles=USER_AND_TOOL, context_turns=2, max_items=8) == [
        "U1",
        "U1\nA1\nU2",
    ]
    assert prompt_items(request, roles=USER_AND_TOOL, context_turns=0, max_items=8) == ["U1", "U2"]
    with_system = prompt_items(request, roles=("user", "system"), context_turns=0, max_items=8)
    assert with_system == ["S", "U1", "U2"]


def test_unchanged_history_gives_the_same_items_next_turn() -> None:
    first = [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}]
    second = [*first, {"role": "user", "content": "U2"}]
    items_1 = prompt_items(
        request_text({"messages": first}), roles=USER_AND_TOOL, context_turns=2, max_items=8
    )
    items_2 = prompt_items(
        request_text({"messages": second}), roles=USER_AND_TOOL, context_turns=2, max_items=8
    )
    assert items_2[: len(items_1)] == items_1


def test_prompt_items_are_capped_and_keep_all_text() -> None:
    request = request_text({"messages": [{"role": "user", "content": f"m{i}"} for i in range(10)]})
    items = prompt_items(request, roles=USER_AND_TOOL, context_turns=0, max_items=4)
    assert len(items) == 4
    assert items[0] == "\n".join(f"m{i}" for i in range(7))
    assert items[1:] == ["m7", "m8", "m9"]


def test_pair_prompt_is_the_recent_non_system_turns() -> None:
    request = request_text(
        {
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "U1"},
                {"role": "assistant", "content": "A1"},
                {"role": "user", "content": "U2"},
            ]
        }
    )
    assert pair_prompt(request, context_turns=1) == "A1\nU2"
    assert pair_prompt(request, context_turns=5) == "U1\nA1\nU2"


def test_response_text_chat_with_tool_calls() -> None:
    response = ModelResponse(
        choices=[
            {
                "message": {
                    "role": "assistant",
                    "content": "calling",
                    "tool_calls": [
                        {
                            "id": "1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": 1}'},
                        }
                    ],
                }
            }
        ]
    )
    assert response_text(response) == 'calling\nf: {"a": 1}'


def test_response_text_completions_and_responses_api() -> None:
    assert response_text(TextCompletionResponse(choices=[{"text": "abc", "index": 0}])) == "abc"
    responses_api = {
        "output": [
            {"type": "reasoning", "summary": []},
            {"type": "message", "content": [{"type": "output_text", "text": "answer"}]},
            {"type": "function_call", "name": "g", "arguments": "{}"},
        ]
    }
    assert response_text(responses_api) == "answer\ng: {}"
    assert response_text(ModelResponse(choices=[{"message": {"content": None}}])) == ""


def test_chunk_text_of_chat_completion_and_responses_events() -> None:
    chat = ModelResponseStream(choices=[{"delta": {"content": "he"}, "index": 0}])
    assert chunk_text(chat) == "he"
    call = ModelResponseStream(
        choices=[{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"x'}}]}}]
    )
    assert chunk_text(call) == '{"x'
    assert chunk_text({"choices": [{"text": "llo", "index": 0}]}) == "llo"
    assert chunk_text({"type": "response.output_text.delta", "delta": "wor"}) == "wor"
    assert chunk_text({"type": "response.completed", "response": {}}) == ""
    assert chunk_text(ModelResponseStream(choices=[{"delta": {}, "index": 0}])) == ""


# -- Anthropic /v1/messages --------------------------------------------------------------------


def test_anthropic_messages_request_with_system_and_content_blocks() -> None:
    data = {
        "system": [{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind"}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is in"},
                    {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
                    {"type": "document", "source": {"type": "text", "data": "x"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "tool_use", "id": "t1", "name": "look", "input": {"q": "it"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "a cat"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "t2",
                        "content": [{"type": "text", "text": "a dog"}, {"type": "image"}],
                    },
                ],
            },
        ],
    }
    got = request_text(data)
    assert got.turns == (
        Turn("system", "be brief\nbe kind"),
        Turn("user", "what is in"),
        Turn("tool", 'look: {"q": "it"}'),
        Turn("tool", "a cat"),
        Turn("tool", "a dog"),
    )
    assert got.skipped_parts == 4  # image, document, thinking, the nested image
    assert request_text({"system": "be brief", "messages": []}).turns == (
        Turn("system", "be brief"),
    )
    with pytest.raises(MalformedRequest, match="system"):
        request_text({"system": 7, "messages": []})


def test_response_text_of_an_anthropic_message() -> None:
    message = {
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "not screened", "signature": "s"},
            {"type": "text", "text": "let me look"},
            {"type": "tool_use", "id": "t1", "name": "search", "input": {"q": "x"}},
        ],
    }
    assert response_text(message) == 'let me look\nsearch: {"q": "x"}'
    assert response_text({"type": "message", "content": []}) == ""


def frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


ANTHROPIC_STREAM = [
    frame("message_start", {"type": "message_start", "message": {"content": []}}),
    frame(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    frame(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hé"}},
    ),
    frame(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
        },
    ),
    frame(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a": 1}'},
        },
    ),
    frame("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
    frame("message_stop", {"type": "message_stop"}),
]


def test_chunk_text_of_anthropic_events_as_dicts_and_raw_frames() -> None:
    delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}}
    assert chunk_text(delta) == "hi"
    assert chunk_text(b"".join(ANTHROPIC_STREAM)) == "hé" + 'f: {"a": 1}'
    assert chunk_text(ANTHROPIC_STREAM[2].decode()) == "hé"
    assert chunk_text(b'event: ping\ndata: {"type": "ping"}\n\n') == ""
    assert chunk_text(b"data: [DONE]\n\n") == ""
    assert chunk_text(b"data: {not json\n\n") == ""


def test_finishes_marks_the_chunk_with_the_stop_reason() -> None:
    assert [finishes(chunk) for chunk in ANTHROPIC_STREAM] == [False] * 5 + [True, False]
    assert finishes(
        ModelResponseStream(choices=[{"delta": {}, "index": 0, "finish_reason": "stop"}])
    )
    assert not finishes(ModelResponseStream(choices=[{"delta": {"content": "x"}, "index": 0}]))


async def test_stream_reader_regroups_torn_reads_into_whole_frames() -> None:
    raw = b"".join(ANTHROPIC_STREAM)

    async def reads(size: int) -> AsyncIterator[bytes]:  # torn anywhere, even inside "é"
        for start in range(0, len(raw), size):
            yield raw[start : start + size]

    for size in (1, 7, len(raw)):
        reader = StreamReader()
        assert [chunk async for chunk in reader.read(reads(size))] == ANTHROPIC_STREAM
        assert reader.anthropic

    async def chat() -> AsyncIterator[Any]:
        yield ModelResponseStream(choices=[{"delta": {"content": "x"}, "index": 0}])

    reader = StreamReader()
    assert len([chunk async for chunk in reader.read(chat())]) == 1
    assert not reader.anthropic
