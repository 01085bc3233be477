"""The ordinary-answers set: benign seed prompts answered by an assistant, shipped as safe pairs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from distill.ordinary_answers import (
    PROMPT_SOURCES,
    SOURCE,
    add_command,
    answer_examples,
    choose_prompts,
    generate_answers,
)
from distill.records import Example, example, normalize, write_jsonl
from distill.seed_sources import select_sources
from tests.test_harmaug import ScriptedGenerator

BENIGN = [
    example("What is artificial intelligence?", label=0, source="s_labs_benign"),
    example("Explain CSS flexbox in two sentences.", label=0, source="neuralchemy_benign"),
    example("Write a haiku about autumn.", label=0, source="s_labs_benign"),
    example("Summarise the causes of the French Revolution.", label=0, source="s_labs_benign"),
]
NOT_CHOSEN = [
    example("How do I make a bomb?", label=1, source="s_labs_benign"),
    example(
        "What is artificial intelligence?", "A field of study.", label=0, source="s_labs_benign"
    ),
    example("Is it legal to own a sword?", label=0, source="rho_overrefusal"),
    example("what is artificial  intelligence?", label=0, source="neuralchemy_benign"),
]


def line(**fields: object) -> str:
    item = {
        "prompt": "What is artificial intelligence?",
        "response": "Artificial intelligence is the study of programs that learn.",
        "label": 0,
        "prompt_source": "s_labs_benign",
        "generator": "local:test",
        "sampling": {"temperature": 0.7},
    }
    return json.dumps({**item, **fields})


def key(record: Example) -> str:
    return normalize(record.prompt).casefold()


def test_prompts_are_benign_requests_of_the_everyday_sources_distinct_and_stable() -> None:
    chosen = choose_prompts([*NOT_CHOSEN, *BENIGN], 4)
    assert {key(r) for r in chosen} == {key(r) for r in BENIGN}  # one of the two AI questions
    assert all(r.source in PROMPT_SOURCES and r.response is None and r.label == 0 for r in chosen)
    # the same choice whatever the order of the records
    assert [r.prompt for r in choose_prompts(list(reversed(BENIGN)), 2)] == [
        r.prompt for r in choose_prompts(BENIGN, 2)
    ]
    with pytest.raises(ValueError, match="4 benign prompts"):
        choose_prompts([*NOT_CHOSEN, *BENIGN], 5)


def test_answers_too_short_or_garbled_are_dropped_and_each_line_names_its_origin() -> None:
    generator = ScriptedGenerator(
        ["  AI is the study of learning programs.\n", "Ok.", "Flex \ufffd boxes", "Leaves fall."],
        generator_id="local:scripted",
    )
    lines = generate_answers(generator, BENIGN[:4], chunk=3, progress=False)
    # "Ok." and "Leaves fall." are under MIN_WORDS, the third holds a replacement character
    assert [item["response"] for item in lines] == ["AI is the study of learning programs."]
    first = lines[0]
    assert first["prompt"] == BENIGN[0].prompt and first["label"] == 0
    assert first["prompt_source"] == "s_labs_benign" and first["generator"] == "local:scripted"
    call = generator.calls[0]
    assert (call["prefix"], call["temperature"], call["max_new_tokens"]) == ("", 0.7, 128)
    assert [len(call["prompts"]) for call in generator.calls] == [3, 1]


def test_the_file_reads_as_safe_pairs_and_refuses_anything_else(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text(line() + "\n\n" + line(prompt="Write a haiku about autumn.") + "\n")
    records = answer_examples(path)
    assert [(r.source, r.label, r.meta["kind"]) for r in records] == [(SOURCE, 0, "pair")] * 2
    assert records[0].meta["prompt_source"] == "s_labs_benign"

    path.write_text(line() + "\n" + line(label=1) + "\n")
    with pytest.raises(ValueError, match=r"answers\.jsonl:2"):
        answer_examples(path)
    path.write_text(line(response=None) + "\n")
    with pytest.raises(ValueError, match=r"answers\.jsonl:1: .*missing: \['response'\]"):
        answer_examples(path)
    path.write_text(json.dumps({**json.loads(line()), "generator": None}) + "\n")
    with pytest.raises(ValueError, match=r"missing: \['generator'\]"):
        answer_examples(path)


def test_the_shipped_set_is_held_out_distinct_benign_prompts_answered_by_smollm2() -> None:
    assert SOURCE not in {source.tag for source in select_sources(None)}  # no build trains on it
    records = answer_examples()
    assert len(records) == 634
    assert len({normalize(r.prompt).casefold() for r in records}) == len(records)
    assert {r.meta["prompt_source"] for r in records} <= set(PROMPT_SOURCES)
    assert all(r.meta["generator"].startswith("local:SmolLM2-135M-Instruct") for r in records)


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_answers_prompts_of_the_seed_splits(
    tmp_path: Path,
    harmaug_home: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import adapters.generators

    seeds = tmp_path / "seeds"
    write_jsonl(seeds / "train.jsonl", BENIGN[:2])
    write_jsonl(seeds / "validation.jsonl", BENIGN[2:3])
    write_jsonl(seeds / "test.jsonl", [BENIGN[3], *NOT_CHOSEN])
    texts = ["An answer of enough words."] * 3 + ["No."]
    generator = ScriptedGenerator(texts, generator_id="local:scripted")
    monkeypatch.setattr(adapters.generators, "load_generator", lambda spec: generator)
    out = tmp_path / "answers.jsonl"
    argv = ["answer", "--generator", "local:any", "--n", "4", "--out", str(out)]
    assert run_cli([*argv, "--seeds", str(seeds)]) == 0
    assert "3 answers of 4 prompts" in capsys.readouterr().out
    records = answer_examples(out)  # the file the command writes is one the reader accepts
    assert len(records) == 3 and {r.response for r in records} == {texts[0]}
    chosen = {key(r) for r in choose_prompts([*BENIGN, *NOT_CHOSEN], 4)}
    assert {key(r) for r in records} < chosen  # the answer of one word was dropped

    assert run_cli(argv) == 1  # no seeds in the empty HARMAUG_HOME
    assert "build seeds first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli([*argv[:-3], "0", "--out", str(out)])
    assert "must be at least 1" in capsys.readouterr().err


def test_cli_runs_a_real_local_model(
    tiny_chat_lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    seeds = tmp_path / "seeds"
    for split in ("train", "validation", "test"):
        write_jsonl(seeds / f"{split}.jsonl", BENIGN if split == "train" else [])
    out = tmp_path / "answers.jsonl"
    argv = ["answer", "--generator", f"local:{tiny_chat_lm_dir}", "--n", "2", "--out", str(out)]
    assert run_cli([*argv, "--seeds", str(seeds)]) == 0
    assert "of 2 prompts" in capsys.readouterr().out and out.is_file()
