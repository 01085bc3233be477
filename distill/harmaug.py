"""``harmaug distill augment``: HarmAug synthetic data (Lee et al., ICLR 2025).

Steps, each a function below:

1. request: the generation instruction with ``k`` exemplars sampled from the harmful seed
   prompts (label 1 of the seed train split), the assistant turn pre-filled with the affirmative
   prefix "I have an idea for a prompt:" (``distill.settings.GenerationTemplate``, versioned);
2. generate: one sample per request from the generator LLM, ending at the end of the instruction;
3. clean: the first line that is not a lead-in ("Here is a prompt:"), without list markers,
   "Prompt:" labels and quotes; token soup (replacement or control characters, under 75%
   letters and spaces), refusals that slipped through, echoes of an exemplar or of the request,
   and too short or too long texts are rejected (the reason is counted);
4. dedup: exact (case and punctuation folded), then near-duplicates by embedding cosine
   (``near_duplicate_cosine``) against the kept instructions and the seed exemplars;
5. respond: a responder LLM answers each instruction without any prefix, so compliant answers
   and refusals both occur (refusals are flagged in ``meta``, not removed).

Output: Example JSONL, ``source="harmaug"``, unlabelled (``harmaug distill label`` adds teacher
scores): each kept instruction alone (``include_prompt_only``) and with its answer. Every record
keeps its provenance in ``meta``: generator, template version, prefix, exemplar ids, sampling
parameters, responder. A ``<out>.stats.json`` beside the output counts every step: ``usable`` (and
``usable_fraction``) are the generations that passed cleaning, i.e. were an instruction;
``kept_instructions`` what is left after dedup; ``rejected`` the count of each reason.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from tqdm import tqdm

from adapters.generators import Generator
from distill.embeddings import Embedder, load_embedder
from distill.records import Example, atomic_writer, example, normalize, prompt_key, read_jsonl
from distill.settings import DistillSettings, GenerationTemplate, HarmAugSettings

log = structlog.get_logger("harmaug.augment")
SOURCE = "harmaug"

REFUSAL = re.compile(
    "|".join(
        [
            r"^(?:sorry|i'?m sorry|i am sorry|i apologi[sz]e|unfortunately)\b",
            r"\b(?:i'?m|i am) sorry,? but\b",
            r"\bas an ai\b",
            r"\bi (?:can ?not|can't|won't|will not|am unable to|'m unable to|am not able to|"
            r"'m not able to|must decline to|refuse to) (?:help|assist|provide|create|generate|"
            r"write|fulfill|comply|make|produce|do that|support|engage)",
            r"\bnot (?:appropriate|ethical) (?:for me )?to\b",
            r"\bagainst (?:my|the|our) (?:guidelines|polic(?:y|ies)|principles|programming)\b",
        ]
    ),
    re.IGNORECASE,
)
LIST_MARKER = re.compile(r"^\s*(?:[-*•]+|\d+[.):]|\(\d+\)|#+)\s+")
LABEL = re.compile(r"^\s*(?:new |harmful |instruction )?(?:prompt|instruction)\s*\d*\s*:\s*", re.I)
QUOTES = " \t\"'`*“”‘’«»"


def is_refusal(text: str) -> bool:
    return bool(REFUSAL.search(text.replace("’", "'")))


def looks_like_text(text: str, min_letters: float = 0.75) -> bool:
    """No replacement or control characters, and mostly letters and spaces (not token soup)."""
    if "\ufffd" in text or any(ord(c) < 32 and c != "\t" for c in text):
        return False
    letters = sum(c.isalpha() or c.isspace() for c in text)
    return letters >= min_letters * len(text)


def fold(text: str) -> str:
    """The exact-dedup key: normalised, case-folded, punctuation removed."""
    return " ".join(re.sub(r"[^\w\s]", " ", normalize(text).casefold()).split())


# -- 1. request --------------------------------------------------------------------------------
# Unsafe seed texts that are not requests (statements, harmful answers kept as messages) are no
# exemplars of a harmful instruction.
NOT_REQUESTS = frozenset({"statement", "response_text"})


def harmful_seed_prompts(records: Sequence[Example]) -> dict[str, str]:
    """{prompt id: prompt} of the unsafe seed requests (label 1), one per distinct prompt."""
    out: dict[str, str] = {}
    for record in records:
        if record.label == 1 and record.meta.get("kind") not in NOT_REQUESTS:
            out.setdefault(prompt_key(record.prompt), record.prompt)
    return out


def request_text(exemplars: Sequence[str], template: GenerationTemplate) -> str:
    """The user message of one generation request."""
    parts = [template.instruction]
    if exemplars:
        lines = [template.exemplar_line.format(prompt=" ".join(e.split())) for e in exemplars]
        parts.append("\n".join([template.exemplar_intro, *lines]))
    if template.closing:
        parts.append(template.closing)
    return "\n\n".join(parts)


# -- 3. clean ----------------------------------------------------------------------------------
@dataclass
class Candidate:
    raw: str
    exemplar_ids: list[str]
    text: str | None = None
    reason: str = "ok"


def clean_instruction(
    raw: str,
    *,
    exemplars: Sequence[str] = (),
    request: str = "",
    min_chars: int = 15,
    max_chars: int = 400,
) -> tuple[str | None, str]:
    """(instruction, "ok") or (None, why it is not usable)."""
    lines = [line.strip() for line in raw.replace("\r", "\n").split("\n") if line.strip()]
    while len(lines) > 1 and lines[0].rstrip(QUOTES).endswith(":"):
        lines.pop(0)  # a lead-in such as "Here is a prompt:"
    if not lines:
        return None, "empty"
    text = lines[0]
    for _ in range(3):  # markers can nest: '1. "Prompt: ..."'
        text = LABEL.sub("", LIST_MARKER.sub("", text)).strip(QUOTES)
    if not text:
        return None, "empty"
    if not looks_like_text(text):
        return None, "not_text"
    if is_refusal(text):
        return None, "refusal"
    if len(text) < min_chars or len(text.split()) < 3:
        return None, "too_short"
    if len(text) > max_chars:
        return None, "too_long"
    key = fold(text)
    if key in {fold(e) for e in exemplars} or (request and key in fold(request)):
        return None, "copied"
    return text, "ok"


# -- 4. dedup ----------------------------------------------------------------------------------
def dedup_instructions(
    texts: Sequence[str],
    embedder: Embedder,
    cutoff: float,
    reference: Sequence[str] = (),
) -> list[str]:
    """Per text "ok", "exact_duplicate", "near_duplicate" (of an earlier kept text) or
    "near_seed" (of a reference text); greedy in order, the first of a group is kept."""
    status = ["ok"] * len(texts)
    seen: set[str] = set()
    for i, text in enumerate(texts):
        key = fold(text)
        if key in seen:
            status[i] = "exact_duplicate"
        seen.add(key)
    candidates = [i for i, s in enumerate(status) if s == "ok"]
    vectors = embedder.embed([*reference, *(texts[i] for i in candidates)])
    refs, rows = vectors[: len(reference)], vectors[len(reference) :]
    kept: list[np.ndarray] = []
    for index, vector in zip(candidates, rows, strict=True):
        if len(refs) and float((refs @ vector).max()) >= cutoff:
            status[index] = "near_seed"
        elif kept and float((np.stack(kept) @ vector).max()) >= cutoff:
            status[index] = "near_duplicate"
        else:
            kept.append(vector)
    return status


# -- the pipeline ------------------------------------------------------------------------------
@dataclass
class AugmentResult:
    records: list[Example]
    candidates: list[Candidate]
    stats: dict[str, Any] = field(default_factory=dict)


def generate_instructions(
    generator: Generator,
    seeds: dict[str, str],
    n: int,
    settings: HarmAugSettings,
    *,
    progress: bool = True,
) -> list[Candidate]:
    """``n`` generations, each from its own request with freshly sampled exemplars, cleaned."""
    template = settings.template
    rng = random.Random(settings.seed)
    seed_ids = sorted(seeds)
    k = min(settings.exemplars, len(seed_ids))
    if settings.exemplars and not seed_ids:
        raise ValueError("no harmful seed prompts (label 1) to draw exemplars from")
    picks = [rng.sample(seed_ids, k) for _ in range(n)]
    prefix = template.prefix if settings.use_prefix else ""
    candidates: list[Candidate] = []
    bar = tqdm(total=n, desc="instructions", unit="gen", disable=not progress)
    for start in range(0, n, settings.chunk_size):
        chunk = picks[start : start + settings.chunk_size]
        requests = [request_text([seeds[i] for i in ids], template) for ids in chunk]
        raws = generator.generate(
            requests,
            prefix=prefix,
            n=1,
            max_new_tokens=settings.instruction_max_new_tokens,
            temperature=settings.instruction_temperature,
            stop=settings.instruction_stop,
        )
        for ids, request, raw in zip(chunk, requests, raws, strict=True):
            text, reason = clean_instruction(
                raw,
                exemplars=[seeds[i] for i in ids],
                request=request,
                min_chars=settings.min_chars,
                max_chars=settings.max_chars,
            )
            candidates.append(Candidate(raw=raw, exemplar_ids=ids, text=text, reason=reason))
        bar.update(len(chunk))
    bar.close()
    return candidates


def augment(
    generator: Generator,
    responder: Generator | None,
    seed_records: Sequence[Example],
    n: int,
    settings: HarmAugSettings | None = None,
    *,
    embedder: Embedder | None = None,
    progress: bool = True,
) -> AugmentResult:
    """Generate, clean, dedup and answer ``n`` synthetic instructions (see the module docstring).

    ``responder=None`` writes the instructions alone (no answers).
    """
    settings = settings or HarmAugSettings()
    embedder = embedder or load_embedder(settings.embedder)
    started = time.perf_counter()
    seeds = harmful_seed_prompts(seed_records)
    candidates = generate_instructions(generator, seeds, n, settings, progress=progress)

    usable = [c for c in candidates if c.text is not None]
    shown = sorted({i for c in usable for i in c.exemplar_ids})
    verdicts = dedup_instructions(
        [c.text for c in usable if c.text],
        embedder,
        settings.near_duplicate_cosine,
        reference=[seeds[i] for i in shown],
    )
    for candidate, verdict in zip(usable, verdicts, strict=True):
        candidate.reason = verdict
    kept = [c for c in candidates if c.reason == "ok" and c.text]

    template = settings.template
    provenance = {
        "generator": generator.generator_id,
        "template_version": template.version,
        "prefix": template.prefix if settings.use_prefix else "",
        "sampling": {
            "temperature": settings.instruction_temperature,
            "top_p": generator.top_p,
            "max_new_tokens": settings.instruction_max_new_tokens,
            "exemplars": settings.exemplars,
            "seed": settings.seed,
        },
    }
    records: list[Example] = []
    if settings.include_prompt_only:
        records += [
            example(
                c.text, None, source=SOURCE, meta={**provenance, "exemplar_ids": c.exemplar_ids}
            )
            for c in kept
            if c.text
        ]
    responses = respond(responder, [c.text for c in kept if c.text], settings, progress=progress)
    for candidate, response in zip(kept, responses, strict=False):  # [] without a responder
        if not response or not candidate.text:
            continue
        meta = {
            **provenance,
            "exemplar_ids": candidate.exemplar_ids,
            "responder": responder.generator_id if responder else None,
            "response_sampling": {
                "temperature": settings.response_temperature,
                "top_p": responder.top_p if responder else None,
                "max_new_tokens": settings.response_max_new_tokens,
            },
            "response_refusal": is_refusal(response[:300]),
        }
        records.append(example(candidate.text, response, source=SOURCE, meta=meta))

    reasons = Counter(c.reason for c in candidates)
    n_usable = len(usable)
    stats = {
        "generated": len(candidates),
        "usable": n_usable,
        "usable_fraction": round(n_usable / len(candidates), 4) if candidates else 0.0,
        "rejected": {k: v for k, v in sorted(reasons.items()) if k != "ok"},
        "kept_instructions": len(kept),
        "responses": sum(1 for r in records if r.response is not None),
        "response_refusals": sum(bool(r.meta.get("response_refusal")) for r in records),
        "records": len(records),
        "prefix": provenance["prefix"],
        "template_version": template.version,
        "generator": generator.generator_id,
        "responder": responder.generator_id if responder else None,
        "embedder": embedder.name,
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info("augmented", **{k: v for k, v in stats.items() if not isinstance(v, dict)})
    return AugmentResult(records=records, candidates=candidates, stats=stats)


def respond(
    responder: Generator | None,
    instructions: Sequence[str],
    settings: HarmAugSettings,
    *,
    progress: bool = True,
) -> list[str]:
    """The responder's answer to each instruction (no prefix); [] without a responder."""
    if responder is None:
        return []
    answers: list[str] = []
    bar = tqdm(total=len(instructions), desc="responses", unit="gen", disable=not progress)
    for start in range(0, len(instructions), settings.chunk_size):
        chunk = instructions[start : start + settings.chunk_size]
        answers += [
            text.strip()
            for text in responder.generate(
                chunk,
                prefix="",
                n=1,
                max_new_tokens=settings.response_max_new_tokens,
                temperature=settings.response_temperature,
            )
        ]
        bar.update(len(chunk))
    bar.close()
    return answers


def write_result(result: AugmentResult, out: Path) -> Path:
    """The records as JSONL at ``out`` and the stats beside it (``<out>.stats.json``)."""
    from distill.records import write_jsonl

    write_jsonl(out, result.records)
    stats_path = stats_file(out)
    with atomic_writer(stats_path) as handle:
        json.dump(result.stats, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    return stats_path


def stats_file(out: Path) -> Path:
    return out.with_name(out.name + ".stats.json")


# -- CLI ---------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from adapters.generators import GeneratorError, load_generator
    from adapters.spec import SpecError

    settings = DistillSettings()
    harmaug = settings.harmaug
    if args.no_prefix:
        harmaug.use_prefix = False
    if args.embedder:
        harmaug.embedder = args.embedder
    seeds_path = Path(args.seeds) if args.seeds else settings.seeds_dir() / "train.jsonl"
    try:
        seed_records = read_jsonl(seeds_path)
        generator = load_generator(args.generator)
        responder = None
        if not args.no_responses:
            same = args.responder in (None, args.generator)
            responder = generator if same else load_generator(args.responder)
        result = augment(generator, responder, seed_records, args.n, harmaug)
    except FileNotFoundError as exc:
        print(f"harmaug distill augment: error: {exc} (build seeds first)", file=sys.stderr)
        return 1
    except (SpecError, GeneratorError, ValueError, RuntimeError) as exc:
        print(f"harmaug distill augment: error: {exc}", file=sys.stderr)
        return 1
    stats_path = write_result(result, Path(args.out))
    stats = result.stats
    print(
        f"{stats['generated']} generated, {stats['usable']} usable "
        f"({stats['usable_fraction']:.0%}), {stats['kept_instructions']} kept after dedup, "
        f"{stats['records']} records -> {args.out} (stats: {stats_path})"
    )
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "augment",
        help="generate HarmAug synthetic instructions and answers (Example JSONL)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--generator",
        metavar="SPEC",
        required=True,
        help="instruction writer: local:DIR, local:FILE.gguf or openai:MODEL@URL "
        "(see adapters.generators)",
    )
    parser.add_argument(
        "--responder", metavar="SPEC", help="answer writer (default: the generator)"
    )
    parser.add_argument("--n", type=int, required=True, help="generations to request")
    parser.add_argument("--out", metavar="FILE", required=True, help="output Example JSONL")
    parser.add_argument(
        "--seeds", metavar="FILE", help="seed records (default <home>/seeds/train.jsonl)"
    )
    parser.add_argument("--no-prefix", action="store_true", help="no affirmative pre-fill")
    parser.add_argument("--no-responses", action="store_true", help="instructions only")
    parser.add_argument("--embedder", choices=["minilm", "hashing"], help="near-dup embeddings")
    parser.set_defaults(func=_run)
