"""The generator protocol of DESIGN.md: sample continuations of chat prompts, optionally with the
assistant turn pre-filled.

``generate(prompts, prefix=..., n=..., max_new_tokens=..., temperature=...)`` returns
``len(prompts) * n`` strings grouped by prompt (the ``n`` samples of ``prompts[0]`` first). Each
prompt is one user message; with a non-empty ``prefix`` the assistant turn starts with it and the
model continues it (HarmAug's affirmative prefix); the strings returned are the continuations
only, without the prefix. ``stop`` strings end a sample once it has some non-blank text (a
leading newline never ends it); the text from the stop string on is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


class GeneratorError(RuntimeError):
    """A generator that cannot run (bad model, server refusing the request form, ...)."""


@runtime_checkable
class Generator(Protocol):
    generator_id: str
    top_p: float

    def generate(
        self,
        prompts: Sequence[str],
        *,
        prefix: str = "",
        n: int = 1,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        stop: Sequence[str] = (),
    ) -> list[str]: ...


def stop_index(text: str, stops: Sequence[str]) -> int | None:
    """Where the first stop string after the first non-blank character starts, if any."""
    start = len(text) - len(text.lstrip())
    if start == len(text):
        return None
    found = [i for stop in stops if stop and (i := text.find(stop, start)) >= 0]
    return min(found) if found else None


def truncate_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = stop_index(text, stops)
    return text if cut is None else text[:cut]


def chat_messages(prompt: str, prefix: str, system: str | None = None) -> list[dict[str, str]]:
    """The messages of one request: optional system, the user prompt, the pre-filled answer."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    if prefix:
        messages.append({"role": "assistant", "content": prefix})
    return messages


def render_chat(tokenizer: object, prompt: str, prefix: str, system: str | None = None) -> str:
    """The templated text a causal LM continues: the chat template, the assistant turn opened
    (and pre-filled with ``prefix`` when given, left open so the model continues it)."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise GeneratorError(
            "the tokenizer has no chat template; a generator needs a chat (instruct) model"
        )
    messages = chat_messages(prompt, prefix, system)
    apply = tokenizer.apply_chat_template  # type: ignore[attr-defined]
    if prefix:
        return str(apply(messages, tokenize=False, continue_final_message=True))
    return str(apply(messages, tokenize=False, add_generation_prompt=True))
