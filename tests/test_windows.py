"""Token windows: layout identical to the tokenizer's, overlap, coverage, pair context, cap."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from guard_plugin.model import load_tokenizer
from guard_plugin.windows import (
    Window,
    WindowBuilder,
    clean_text,
    cut_text,
    head_tail,
    pick_evenly,
    spans,
)
from tests.tiny_guard import FILLER, SAFE, UNSAFE

MAX_LENGTH, STRIDE, MAX_WINDOWS = 64, 16, 8


@pytest.fixture(scope="module")
def tokenizer(tiny_hf_dir: Path):  # type: ignore[no-untyped-def]
    return load_tokenizer(tiny_hf_dir)


@pytest.fixture(scope="module")
def builder(tokenizer) -> WindowBuilder:  # type: ignore[no-untyped-def]
    return WindowBuilder(tokenizer, max_length=MAX_LENGTH, stride=STRIDE, max_windows=MAX_WINDOWS)


def plain(tokenizer, text: str) -> list[int]:  # type: ignore[no-untyped-def]
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def segments(tokenizer, window: Window) -> list[list[int]]:  # type: ignore[no-untyped-def]
    """The text segments of a BERT window: [CLS] first [SEP] (second [SEP])."""
    assert window.input_ids[0] == tokenizer.cls_token_id
    parts: list[list[int]] = [[]]
    for token in window.input_ids[1:]:
        if token == tokenizer.sep_token_id:
            parts.append([])
        else:
            parts[-1].append(token)
    return parts[:-1]


@pytest.fixture(scope="module")
def long_text(tokenizer):  # type: ignore[no-untyped-def]
    """Text of n words, each one vocabulary token, all distinct for n < 180 (positions are exact)."""
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and len(w) > 1)

    def make(n: int) -> str:
        return " ".join(words[i % len(words)] for i in range(n))

    return make


@pytest.mark.parametrize(
    ("prompt", "response"),
    [(SAFE[0], None), (UNSAFE[3], SAFE[5]), (SAFE[1], ""), ("", None), (FILLER, "ok")],
)
def test_short_items_are_laid_out_exactly_like_the_tokenizer(
    tokenizer, builder: WindowBuilder, prompt: str, response: str | None
) -> None:  # type: ignore[no-untyped-def]
    (item,) = builder.build([(prompt, response)])
    expected = tokenizer(prompt, response or None, return_token_type_ids=True)
    assert not item.cap_hit
    assert item.windows == [Window(expected["input_ids"], expected["token_type_ids"])]


@pytest.mark.parametrize(
    ("length", "size", "overlap"), [(0, 5, 2), (5, 5, 2), (100, 30, 10), (31, 30, 29)]
)
def test_spans_cover_everything_with_the_overlap(length: int, size: int, overlap: int) -> None:
    result = spans(length, size, overlap)
    assert result[0][0] == 0 and result[-1][1] == length
    assert all(end - start == min(size, length) for start, end in result)
    for (_, end), (start, _) in itertools.pairwise(result):
        assert end - start >= overlap  # consecutive spans share at least `overlap` items


def test_pick_evenly_keeps_first_and_last() -> None:
    assert pick_evenly(5, 8) == [0, 1, 2, 3, 4]
    picked = pick_evenly(100, 8)
    assert len(picked) == 8 and picked[0] == 0 and picked[-1] == 99
    gaps = [b - a for a, b in itertools.pairwise(picked)]
    assert max(gaps) - min(gaps) <= 1
    assert pick_evenly(10, 1) == [0]


def test_head_tail_cuts_the_middle() -> None:
    assert head_tail(list(range(10)), 4) == [0, 1, 8, 9]
    assert head_tail(list(range(10)), 5) == [0, 1, 2, 8, 9]
    assert head_tail([1, 2], 5) == [1, 2]
    assert head_tail([1, 2], 0) == []


def test_long_prompt_windows_overlap_and_cover_every_token(tokenizer, builder, long_text) -> None:  # type: ignore[no-untyped-def]
    ids = plain(tokenizer, long_text(150))
    assert len(set(ids)) == len(ids) == 150  # distinct tokens: a window's position is exact
    (item,) = builder.build([(long_text(150), None)])
    assert len(item.windows) > 2 and not item.cap_hit
    assert all(len(window.input_ids) <= MAX_LENGTH for window in item.windows)
    assert_overlapping_cover(ids, [segments(tokenizer, w)[0] for w in item.windows])


def assert_overlapping_cover(ids: list[int], parts: list[list[int]]) -> None:
    """``parts`` are slices of ``ids`` (distinct tokens) covering it, neighbours sharing >= STRIDE."""
    found = []
    for part in parts:
        start = ids.index(part[0])
        assert ids[start : start + len(part)] == part
        found.append((start, start + len(part)))
    assert found[0][0] == 0 and found[-1][1] == len(ids)
    for (_, end), (start, _) in itertools.pairwise(found):
        assert end - start >= STRIDE


def test_every_pair_window_sees_a_response_chunk_and_both_ends_of_the_prompt(
    tokenizer, builder, long_text
) -> None:  # type: ignore[no-untyped-def]
    prompt, response = long_text(120), long_text(90)
    prompt_ids, response_ids = plain(tokenizer, prompt), plain(tokenizer, response)
    (item,) = builder.build([(prompt, response)])
    budget = MAX_LENGTH - 3
    chunks = []
    for window in item.windows:
        assert len(window.input_ids) == MAX_LENGTH
        context, chunk = segments(tokenizer, window)
        assert len(chunk) >= budget // 2  # at least half the window is response
        head = (len(context) + 1) // 2
        assert context[:head] == prompt_ids[:head]
        assert context[head:] == prompt_ids[len(prompt_ids) - (len(context) - head) :]
        chunks.append(chunk)
    assert_overlapping_cover(response_ids, chunks)


def test_short_response_after_long_prompt_is_seen_whole(tokenizer, builder, long_text) -> None:  # type: ignore[no-untyped-def]
    prompt = long_text(300)
    (item,) = builder.build([(prompt, UNSAFE[0])])
    assert len(item.windows) == 1
    context, chunk = segments(tokenizer, item.windows[0])
    assert chunk == plain(tokenizer, UNSAFE[0])
    assert context[:5] == plain(tokenizer, prompt)[:5]


def test_whitespace_response_windows_the_prompt(tokenizer, builder, long_text) -> None:  # type: ignore[no-untyped-def]
    (item,) = builder.build([(long_text(150), "   ")])
    assert len(item.windows) > 2
    assert all(segments(tokenizer, w)[1] == [] for w in item.windows)


def test_window_cap_keeps_first_and_last(tokenizer, long_text) -> None:  # type: ignore[no-untyped-def]
    prompt = long_text(400)
    full = WindowBuilder(tokenizer, max_length=MAX_LENGTH, stride=STRIDE, max_windows=1000)
    capped = WindowBuilder(tokenizer, max_length=MAX_LENGTH, stride=STRIDE, max_windows=3)
    (all_windows,) = full.build([(prompt, None)])
    (item,) = capped.build([(prompt, None)])
    assert len(all_windows.windows) > 3 and not all_windows.cap_hit
    assert item.cap_hit and len(item.windows) == 3
    assert item.windows[0] == all_windows.windows[0]
    assert item.windows[-1] == all_windows.windows[-1]


def test_bad_text_does_not_crash(builder) -> None:  # type: ignore[no-untyped-def]
    assert clean_text("a\ud800b") == "a?b"
    assert clean_text("héllo") == "héllo"
    items = builder.build([("", None), ("", ""), ("\ud800", "\udfff"), ("\x00\uffff", None)])
    assert [len(item.windows) for item in items] == [1, 1, 1, 1]


def test_huge_text_is_cut_before_tokenizing(builder, long_text) -> None:  # type: ignore[no-untyped-def]
    text = "start " + "x" * 5_000_000 + " end"
    cut, was_cut = cut_text(text, 1000, 8)
    assert was_cut and len(cut) < 1100
    assert cut.startswith("start ") and cut.endswith(" end")
    assert cut_text("short", 1000, 8) == ("short", False)

    started = time.perf_counter()
    (item,) = builder.build([(long_text(1_000_000), None)])  # ~6 MB
    assert time.perf_counter() - started < 5.0
    assert item.cap_hit and len(item.windows) == MAX_WINDOWS


def test_layout_follows_other_special_token_templates(tiny_hf_dir: Path) -> None:
    """A RoBERTa-style template (two separators between the texts, no token types) works too."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer.from_file(str(tiny_hf_dir / "tokenizer.json"))
    cls, sep = raw.token_to_id("[CLS]"), raw.token_to_id("[SEP]")
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    roberta_like = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        model_input_names=["input_ids", "attention_mask"],
    )
    builder = WindowBuilder(roberta_like, max_length=MAX_LENGTH, stride=STRIDE, max_windows=4)
    assert builder.pair.num_specials == 4
    for prompt, response in [(SAFE[0], UNSAFE[0]), (UNSAFE[1], None)]:
        (item,) = builder.build([(prompt, response)])
        expected = roberta_like(prompt, response, return_token_type_ids=True)
        assert item.windows == [Window(expected["input_ids"], expected["token_type_ids"])]
    (long_pair,) = builder.build([(FILLER * 10, FILLER * 10)])
    assert all(len(w.input_ids) == MAX_LENGTH for w in long_pair.windows)
    assert all(w.input_ids.count(sep) == 3 for w in long_pair.windows)
