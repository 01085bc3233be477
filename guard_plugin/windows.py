"""Token windows for (prompt, response) pairs: long text is scored in overlapping windows, never cut.

A window is what the classifier sees in one forward pass: at most ``max_length`` tokens, special
tokens included, laid out exactly as ``tokenizer(prompt, response)`` would lay them out.

* Prompt only (``response`` is None or ""): overlapping windows over the prompt; consecutive
  windows share ``stride`` tokens.
* Pairs: the response is cut into overlapping chunks and EVERY window holds one chunk plus as much
  prompt context as fits (at least half the window goes to the response when both are long).
  The prompt context is its head and its tail, cut in the middle: jailbreak templates put the
  request at the start or at the end.
* At most ``max_windows`` windows per item: when more are needed, evenly spaced ones are kept,
  always including the first and the last, and the item reports ``cap_hit``.
* Huge text is cut to a character budget (evenly spaced segments, start and end kept) before it is
  tokenized, so a 5 MB prompt costs about as much as a few windows. Lone surrogates are replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CHARS_PER_TOKEN = 16
"""Character budget per token slot: generous (English averages ~4), so only absurd inputs are cut."""
CUT_MARKER = " ... "
_PROBE_FIRST, _PROBE_SECOND = "a", "b"


@dataclass(frozen=True)
class Window:
    input_ids: list[int]
    token_type_ids: list[int]


@dataclass(frozen=True)
class ItemWindows:
    windows: list[Window]
    cap_hit: bool


@dataclass(frozen=True)
class Specials:
    """A run of special tokens and their token type ids."""

    ids: tuple[int, ...] = ()
    types: tuple[int, ...] = ()


@dataclass(frozen=True)
class SpecialLayout:
    """Where a tokenizer puts its special tokens: ``prefix first middle second suffix``.

    For a single text there is no second text and ``middle`` holds the closing specials.
    """

    prefix: Specials
    middle: Specials
    suffix: Specials
    first_type: int
    second_type: int

    @property
    def num_specials(self) -> int:
        return len(self.prefix.ids) + len(self.middle.ids) + len(self.suffix.ids)

    def assemble(self, first: Sequence[int], second: Sequence[int] = ()) -> Window:
        return Window(
            input_ids=[*self.prefix.ids, *first, *self.middle.ids, *second, *self.suffix.ids],
            token_type_ids=[
                *self.prefix.types,
                *[self.first_type] * len(first),
                *self.middle.types,
                *[self.second_type] * len(second),
                *self.suffix.types,
            ],
        )


def special_layouts(tokenizer: PreTrainedTokenizerBase) -> tuple[SpecialLayout, SpecialLayout]:
    """The (single, pair) layouts of ``tokenizer``, read off by encoding two probe texts.

    Works for any Hugging Face tokenizer (BERT, DeBERTa, RoBERTa, ...) through its public call.
    """
    first = _plain_ids(tokenizer, _PROBE_FIRST)
    second = _plain_ids(tokenizer, _PROBE_SECOND)
    single = tokenizer(_PROBE_FIRST, return_special_tokens_mask=True, return_token_type_ids=True)
    pair = tokenizer(
        _PROBE_FIRST, _PROBE_SECOND, return_special_tokens_mask=True, return_token_type_ids=True
    )
    return _read_layout(single, first, None), _read_layout(pair, first, second)


def _plain_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _read_layout(encoding: Any, first: list[int], second: list[int] | None) -> SpecialLayout:
    ids = list(encoding["input_ids"])
    types = list(encoding.get("token_type_ids") or [0] * len(ids))
    special = list(encoding["special_tokens_mask"])
    cursor = 0

    def specials() -> Specials:
        nonlocal cursor
        start = cursor
        while cursor < len(ids) and special[cursor]:
            cursor += 1
        return Specials(tuple(ids[start:cursor]), tuple(types[start:cursor]))

    def text(expected: list[int]) -> int:
        nonlocal cursor
        if ids[cursor : cursor + len(expected)] != expected:
            raise ValueError(f"unsupported tokenizer: cannot find the text tokens in {ids}")
        type_id = types[cursor] if expected else 0
        cursor += len(expected)
        return type_id

    prefix = specials()
    first_type = text(first)
    middle = specials()
    second_type = text(second) if second is not None else first_type
    suffix = specials() if second is not None else Specials()
    if cursor != len(ids):
        raise ValueError(f"unsupported tokenizer: unexpected special-token layout {ids}")
    return SpecialLayout(prefix, middle, suffix, first_type, second_type)


def clean_text(text: str) -> str:
    """The text as valid UTF-8: lone surrogates (e.g. '\\ud800') become '?'."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="replace").decode("utf-8")
    return text


def cut_text(text: str, budget: int, segments: int) -> tuple[str, bool]:
    """Cut ``text`` longer than ``budget`` characters into evenly spaced segments (start and end kept).

    Returns the text and whether it was cut.
    """
    if len(text) <= budget:
        return text, False
    segments = max(2, segments)
    size = max(1, budget // segments)
    starts = [round(i * (len(text) - size) / (segments - 1)) for i in range(segments)]
    return CUT_MARKER.join(text[start : start + size] for start in starts), True


def spans(length: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """``[start, end)`` spans of at most ``size`` covering ``range(length)``, consecutive ones
    sharing at least ``overlap`` items (the last span is aligned to the end)."""
    if length <= size:
        return [(0, length)]
    step = max(1, size - min(overlap, size - 1))
    starts = [*range(0, length - size, step), length - size]
    return [(start, start + size) for start in starts]


def pick_evenly(count: int, cap: int) -> list[int]:
    """Indices of at most ``cap`` of ``count`` items, evenly spaced, first and last included."""
    if count <= cap:
        return list(range(count))
    if cap == 1:
        return [0]
    return [round(i * (count - 1) / (cap - 1)) for i in range(cap)]


def head_tail(ids: Sequence[int], keep: int) -> list[int]:
    """``keep`` tokens of ``ids``: its head and its tail, cut in the middle."""
    if len(ids) <= keep:
        return list(ids)
    if keep <= 0:
        return []
    head = (keep + 1) // 2
    return [*ids[:head], *ids[len(ids) - (keep - head) :]]


class WindowBuilder:
    """Turns (prompt, response) pairs into capped token windows for one tokenizer."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int,
        stride: int,
        max_windows: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.single, self.pair = special_layouts(tokenizer)
        if max_length <= self.pair.num_specials + 1:
            raise ValueError(f"max_length {max_length} leaves no room for text")
        self.max_length = max_length
        self.stride = stride
        self.max_windows = max_windows
        self.char_budget = max_windows * max_length * CHARS_PER_TOKEN  # per text, before tokenizing
        # A fast tokenizer keeps its truncation/padding settings as mutable state; the guard's
        # worker threads must not change them under each other.
        self._lock = threading.Lock()

    def build(self, pairs: Sequence[tuple[str, str | None]]) -> list[ItemWindows]:
        texts: list[str] = []
        cut_any: list[bool] = []
        for prompt, response in pairs:
            item_texts = [prompt, response] if response else [prompt]
            cut = [cut_text(text, self.char_budget, self.max_windows) for text in item_texts]
            texts.extend(clean_text(text) for text, _ in cut)
            cut_any.append(any(was_cut for _, was_cut in cut))
        ids = self._tokenize(texts)
        items: list[ItemWindows] = []
        cursor = 0
        for (_, response), was_cut in zip(pairs, cut_any, strict=True):
            prompt_ids = ids[cursor]
            if response:
                windows, cap_hit = self.pair_windows(prompt_ids, ids[cursor + 1])
                cursor += 2
            else:
                windows, cap_hit = self.prompt_windows(prompt_ids)
                cursor += 1
            items.append(ItemWindows(windows, cap_hit or was_cut))
        return items

    def prompt_windows(self, prompt: Sequence[int]) -> tuple[list[Window], bool]:
        budget = self.max_length - self.single.num_specials
        chosen, cap_hit = self._capped(spans(len(prompt), budget, self.stride))
        return [self.single.assemble(prompt[start:end]) for start, end in chosen], cap_hit

    def pair_windows(
        self, prompt: Sequence[int], response: Sequence[int]
    ) -> tuple[list[Window], bool]:
        budget = self.max_length - self.pair.num_specials
        if len(prompt) + len(response) <= budget:
            return [self.pair.assemble(prompt, response)], False
        if not response:  # e.g. a whitespace-only response: window over the prompt instead
            chosen, cap_hit = self._capped(spans(len(prompt), budget, self.stride))
            return [self.pair.assemble(prompt[s:e], ()) for s, e in chosen], cap_hit
        chunk = min(len(response), max(budget - len(prompt), budget - budget // 2))
        chosen, cap_hit = self._capped(spans(len(response), chunk, self.stride))
        windows = []
        for start, end in chosen:
            context = head_tail(prompt, budget - (end - start))
            windows.append(self.pair.assemble(context, response[start:end]))
        return windows, cap_hit

    def _capped(self, all_spans: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], bool]:
        picked = pick_evenly(len(all_spans), self.max_windows)
        return [all_spans[i] for i in picked], len(picked) < len(all_spans)

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        with self._lock:
            encoded = self.tokenizer(
                texts,
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
        return [list(ids) for ids in encoded["input_ids"]]
