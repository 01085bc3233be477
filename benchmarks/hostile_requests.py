"""Malformed and hostile requests for the gateway: one small builder per kind.

``hostile_requests(n)`` cycles through every kind in ``KINDS`` (each call of a builder varies its
text, so no two requests of a kind are the same); ``huge_bytes`` sizes the huge bodies. Every
request is ``(kind, path, body bytes)``: bodies are bytes so that invalid UTF-8 and broken JSON
can be sent as they are. The kinds: wrong types, missing fields, invalid UTF-8 and lone-surrogate
escapes, huge and deeply nested bodies, 500 tool calls, unknown roles, content parts of every
kind, on the chat, completions and responses endpoints.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
RESPONSES = "/v1/responses"
MODEL = "safe-model"
WORDS = [
    "bake",
    "bread",
    "garden",
    "guitar",
    "river",
    "morning",
    "poem",
    "puppy",
    "running",
    "kitchen",
    "party",
    "tomato",
]

Request = tuple[str, str, bytes]  # kind, path, body
Builder = Callable[[random.Random, int], tuple[str, Any]]  # (rng, huge_bytes) -> (path, body)


def text(rng: random.Random, words: int = 6) -> str:
    return "how do i " + " ".join(rng.choice(WORDS) for _ in range(words))


def user(content: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def chat(messages: Any, **extra: Any) -> tuple[str, dict[str, Any]]:
    return CHAT, {"model": MODEL, "messages": messages, **extra}


def nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def tool_calls(rng: random.Random, count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": "lookup", "arguments": json.dumps({"q": text(rng, 2)})},
        }
        for i in range(count)
    ]


def every_part(rng: random.Random) -> list[Any]:
    """One content part of every kind a client may send, valid or not."""
    return [
        {"type": "text", "text": text(rng)},
        {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}},
        {"type": "image_url", "image_url": "data:image/png;base64,iVBORw0KGgo="},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-123", "filename": "a.pdf"}},
        {"type": "refusal", "refusal": "no"},
        {"type": "input_text", "text": text(rng)},
        {"type": "no-such-part", "payload": {"a": [1, 2, 3]}},
        {"type": "text"},
        {"type": "text", "text": None},
        {"text": text(rng)},
        "a bare string part",
        42,
        None,
        [{"type": "text", "text": text(rng)}],
    ]


KINDS: dict[str, Builder] = {
    # -- missing fields
    "no-messages": lambda rng, _: (CHAT, {"model": MODEL}),
    "no-model": lambda rng, _: (CHAT, {"messages": user(text(rng))}),
    "empty-messages": lambda rng, _: chat([]),
    "no-role": lambda rng, _: chat([{"content": text(rng)}]),
    "no-content": lambda rng, _: chat([{"role": "user"}]),
    "empty-object": lambda rng, _: (CHAT, {}),
    # -- wrong types
    "messages-string": lambda rng, _: chat(text(rng)),
    "messages-object": lambda rng, _: chat({"role": "user", "content": text(rng)}),
    "messages-not-objects": lambda rng, _: chat([7, None, text(rng), [1]]),
    "content-int": lambda rng, _: chat(user(rng.randint(0, 10**9))),
    "content-float-nan": lambda rng, _: (
        CHAT,
        b'{"model": "safe-model", "messages": [{"role": "user", "content": NaN}]}',
    ),
    "content-object": lambda rng, _: chat(user({"text": text(rng)})),
    "content-bool": lambda rng, _: chat(user(True)),
    "role-int": lambda rng, _: chat([{"role": 5, "content": text(rng)}]),
    "role-list": lambda rng, _: chat([{"role": ["user"], "content": text(rng)}]),
    "model-int": lambda rng, _: (CHAT, {"model": 12, "messages": user(text(rng))}),
    "stream-string": lambda rng, _: chat(user(text(rng)), stream="yes"),
    "temperature-string": lambda rng, _: chat(user(text(rng)), temperature="hot"),
    "metadata-string": lambda rng, _: chat(user(text(rng)), metadata="harmaug"),
    "metadata-own-harmaug": lambda rng, _: chat(
        user(text(rng)), metadata={"harmaug": "mine", "harmaug_threshold": "abc"}
    ),
    "guardrails-int": lambda rng, _: chat(user(text(rng)), guardrails=7),
    "guardrails-unknown": lambda rng, _: chat(user(text(rng)), guardrails=["no-such-guard"]),
    "top-level-array": lambda rng, _: (CHAT, [{"model": MODEL}]),
    "top-level-string": lambda rng, _: (CHAT, text(rng)),
    "top-level-null": lambda rng, _: (CHAT, None),
    # -- roles
    "role-unknown": lambda rng, _: chat([{"role": "hacker", "content": text(rng)}]),
    "role-empty": lambda rng, _: chat([{"role": "", "content": text(rng)}]),
    "role-function": lambda rng, _: chat([{"role": "function", "content": text(rng)}]),
    "tool-without-call": lambda rng, _: chat([{"role": "tool", "content": text(rng)}]),
    "developer-and-system": lambda rng, _: chat(
        [
            {"role": "developer", "content": text(rng)},
            {"role": "system", "content": [{"type": "text", "text": text(rng)}]},
            {"role": "user", "content": text(rng)},
        ]
    ),
    # -- content parts
    "parts-every-kind": lambda rng, _: chat(user(every_part(rng))),
    "parts-empty-list": lambda rng, _: chat(user([])),
    "parts-nested-lists": lambda rng, _: chat(user(nested(20, {"type": "text", "text": "x"}))),
    # -- tool calls
    "tool-calls-string": lambda rng, _: chat(
        [{"role": "assistant", "content": None, "tool_calls": "lookup"}, *user(text(rng))]
    ),
    "tool-calls-not-objects": lambda rng, _: chat(
        [{"role": "assistant", "tool_calls": [1, None, "x"]}, *user(text(rng))]
    ),
    "tool-arguments-object": lambda rng, _: chat(
        [
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": 5, "arguments": {"a": [1]}}}],
            },
            {"role": "tool", "tool_call_id": "c", "content": {"rows": [1, 2]}},
        ]
    ),
    "500-tool-calls": lambda rng, _: chat(
        [
            {"role": "user", "content": text(rng)},
            {"role": "assistant", "content": None, "tool_calls": tool_calls(rng, 500)},
            *(
                {"role": "tool", "tool_call_id": f"call_{i}", "content": text(rng, 3)}
                for i in range(500)
            ),
        ]
    ),
    # -- encodings
    "lone-surrogates": lambda rng, _: chat(user(f"\ud800 {text(rng)} \udc80")),
    "surrogate-in-role": lambda rng, _: chat([{"role": "us\udc80er", "content": text(rng)}]),
    "surrogate-in-tool-args": lambda rng, _: chat(
        [
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "\udfff"}}],
            },
            *user(text(rng)),
        ]
    ),
    "invalid-utf8": lambda rng, _: (
        CHAT,
        b'{"model": "safe-model", "messages": [{"role": "user", "content": "\xff\xfe '
        + text(rng).encode()
        + b' \xc3\x28"}]}',
    ),
    "nul-and-controls": lambda rng, _: chat(user(f"\x00\x1b[31m{text(rng)}\u202e\u200b\ufeff")),
    "not-json": lambda rng, _: (CHAT, b"model=safe-model&messages=" + text(rng).encode()),
    "truncated-json": lambda rng, _: (CHAT, json.dumps(chat(user(text(rng)))[1]).encode()[:-7]),
    "empty-body": lambda rng, _: (CHAT, b""),
    # -- huge and deep
    "huge-content": lambda rng, size: chat(user((text(rng) + " ") * (size // 40))),
    "many-messages": lambda rng, _: chat(
        [{"role": rng.choice(["user", "assistant"]), "content": text(rng, 2)} for _ in range(5000)]
    ),
    "many-parts": lambda rng, _: chat(
        user([{"type": "text", "text": text(rng, 2)} for _ in range(5000)])
    ),
    "deep-metadata": lambda rng, _: chat(user(text(rng)), metadata={"a": nested(500, {})}),
    "deep-body": lambda rng, _: (CHAT, b"[" * 100_000 + b"]" * 100_000),
    "deep-content": lambda rng, _: (
        CHAT,
        b'{"model": "safe-model", "messages": [{"role": "user", "content": '
        + b"[" * 5000
        + json.dumps(text(rng)).encode()
        + b"]" * 5000
        + b"}]}",
    ),
    # -- streams and choices (the completion is screened too)
    "stream-odd-parts": lambda rng, _: chat(user(every_part(rng)[6:9]), stream=True),
    "stream-unsafe-completion": lambda rng, _: (
        CHAT,
        {"model": "unsafe-model", "messages": user(text(rng)), "stream": True},
    ),
    "stream-options-string": lambda rng, _: chat(user(text(rng)), stream=True, stream_options="x"),
    "n-choices": lambda rng, _: chat(user(text(rng)), n=5),
    # -- other endpoints
    "completions-token-ids": lambda rng, _: (COMPLETIONS, {"model": MODEL, "prompt": [1, 2, 3]}),
    "completions-nested": lambda rng, _: (
        COMPLETIONS,
        {"model": MODEL, "prompt": [[text(rng)], {"p": 1}]},
    ),
    "completions-object": lambda rng, _: (COMPLETIONS, {"model": MODEL, "prompt": {"a": 1}}),
    "completions-no-prompt": lambda rng, _: (COMPLETIONS, {"model": MODEL}),
    "responses-int": lambda rng, _: (RESPONSES, {"model": MODEL, "input": 5}),
    "responses-odd-items": lambda rng, _: (
        RESPONSES,
        {
            "model": MODEL,
            "input": [
                None,
                {"role": "user", "content": every_part(rng)},
                {"type": "function_call_output", "call_id": "c", "output": {"x": 1}},
                {"type": "message", "role": 3, "content": 4},
            ],
        },
    ),
    "responses-no-input": lambda rng, _: (RESPONSES, {"model": MODEL}),
}


def encode(body: Any) -> bytes:
    """JSON with every non-ASCII character escaped, lone surrogates included (\\udc80)."""
    return body if isinstance(body, bytes) else json.dumps(body).encode("ascii")


def hostile_requests(n: int, *, huge_bytes: int = 1_000_000, seed: int = 0) -> list[Request]:
    """``n`` requests, cycling through every kind."""
    rng = random.Random(seed)
    names = list(KINDS)
    out = []
    for index in range(n):
        kind = names[index % len(names)]
        path, body = KINDS[kind](rng, huge_bytes)
        out.append((kind, path, encode(body)))
    return out
