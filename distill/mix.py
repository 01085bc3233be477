"""The training mix: the seed splits plus the records built from them for what the seeds lack.

The seeds are mostly requests on their own; gateway traffic is (request, response) pairs, often
wrapped in a jailbreak. Four stages, each adding to the one before (the quality ablation trains
one student per stage):

``seeds``      the prompt-only records of the seed splits, and the split's share of the benign
               prompts written for this project (``distill.edgy_prompts``); in the train split,
               half of them with their final punctuation flipped (``vary_end_punctuation``);
``pairs``      + every seed (request, response) pair (human-scored answers, paired benign and
               harmful Q&A, refused requests), and refusal pairs built here: a request of the
               split (harmful, and some benign: over-refusal is not unsafe) answered with a
               refusal drawn from the split's own refusals is a safe pair, so the same harmful
               request is seen unsafe alone and safe when refused; in the train split, the
               pairs' responses alone with the pair's label (``responses_alone``);
``jailbreak``  + requests and pairs wrapped in the training family of jailbreak templates
               (``distill.jailbreaks``): a wrapped harmful request stays unsafe, a wrapped benign
               one stays safe (the wrapper is not the harm), a wrapped pair keeps its label (and
               its Llama Guard 3 categories, ``meta["categories"]``);
``harmaug``    + the HarmAug synthetic records, labelled by the offline teacher.

Everything here is a pure function of (split records, templates, seed): every split is mixed
from its own records only, so nothing crosses from test or validation into train.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Literal

from distill.categories import category_targets
from distill.edgy_prompts import edgy_records
from distill.harmaug import is_refusal
from distill.jailbreaks import Template, wrap_record
from distill.records import Example, dedup, example

Stage = Literal["seeds", "pairs", "jailbreak", "harmaug"]
STAGES: tuple[Stage, ...] = ("seeds", "pairs", "jailbreak", "harmaug")

REFUSED_HARMFUL_SHARE = 0.5  # harmful requests that also get a refused pair
REFUSED_BENIGN_SHARE = 0.05  # benign requests refused (over-refusal, still safe)
WRAPPED_HARMFUL_SHARE = 0.5  # harmful requests wrapped in a jailbreak
WRAPPED_PAIR_SHARE = 0.5  # pairs whose request is wrapped
MAX_WRAPPED_REQUEST_CHARS = 1_000  # longer requests are not wrapped
WRAPPED_SOURCE = "jailbreak"  # the source tag of wrapped records
# Easy negatives (everyday questions) dominate the seeds' safe side; in the train split only this
# many of each are kept (by content hash), so that the safe half of every class-balanced batch
# holds the hard cases: edgy questions, refused requests, wrapped benign requests, safe answers.
EASY_SAFE_CAPS = {"s_labs_benign": 2_000, "neuralchemy_benign": 1_000}


def _rng(split: str, step: str, seed: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}\0{split}\0{step}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def refusal_texts(records: Sequence[Example]) -> list[str]:
    """The refusals among the split's responses: safe answers that refuse (human-labelled
    refusals, and answers of safe pairs that read as a refusal), deduplicated, sorted."""
    found = set()
    for record in records:
        if record.response is None or record.label != 0:
            continue
        if record.meta.get("kind") == "refusal" or is_refusal(record.response[:300]):
            found.add(record.response.strip())
    return sorted(found)


def refusal_pairs(records: Sequence[Example], split: str, seed: int = 0) -> list[Example]:
    """Requests of the split answered with one of the split's refusals: safe pairs."""
    refusals = refusal_texts(records)
    if not refusals:
        return []
    rng = _rng(split, "refusal", seed)
    out = []
    for record in records:
        if record.response is not None or record.label is None:
            continue
        share = REFUSED_HARMFUL_SHARE if record.label == 1 else REFUSED_BENIGN_SHARE
        if rng.random() < share:
            response = rng.choice(refusals)
            meta = {"kind": "refused", "request_source": record.source}
            out.append(example(record.prompt, response, label=0, source="refused", meta=meta))
    return out


def wrapped(
    records: Sequence[Example], templates: Sequence[Template], split: str, seed: int = 0
) -> list[Example]:
    """Requests and pairs of the split wrapped in jailbreak templates, labels kept.

    Every wrapped harmful request is matched by a wrapped benign one, so the wrapper itself
    carries no label.
    """
    if not templates:
        return []
    rng = _rng(split, "jailbreak", seed)
    labelled = [
        r for r in records if r.label is not None and len(r.prompt) <= MAX_WRAPPED_REQUEST_CHARS
    ]
    harmful = [r for r in labelled if r.response is None and r.label == 1]
    benign = [r for r in labelled if r.response is None and r.label == 0]
    pairs = [r for r in labelled if r.response is not None]
    chosen = [r for r in harmful if rng.random() < WRAPPED_HARMFUL_SHARE]
    chosen += rng.sample(benign, min(len(chosen), len(benign)))
    chosen += [r for r in pairs if rng.random() < WRAPPED_PAIR_SHARE]
    return [
        wrap_record(
            record,
            rng.choice(templates),
            source=WRAPPED_SOURCE,
            kind="jailbreak",
            **_categories_meta(record),
        )
        for record in chosen
    ]


def _categories_meta(record: Example) -> dict[str, list[str]]:
    """``{"categories": codes}`` of an unsafe record whose codes are known (a wrapper keeps the
    harm, and its source tag no longer says which), else nothing."""
    codes = category_targets(record)
    return {"categories": list(codes)} if codes else {}


def cap_easy_safe(records: Sequence[Example]) -> list[Example]:
    """``records`` with at most ``EASY_SAFE_CAPS[source]`` of each easy-negative source (the ones
    with the smallest content hashes: a stable choice)."""
    kept: dict[str, set[str]] = {
        source: set(sorted(r.id for r in records if r.source == source)[:cap])
        for source, cap in EASY_SAFE_CAPS.items()
    }
    return [r for r in records if r.source not in kept or r.id in kept[r.source]]


END_PUNCTUATION = ".!?"


def vary_end_punctuation(records: Sequence[Example], seed: int = 0) -> list[Example]:
    """Texts alone with their final punctuation flipped for half of them (by a hash of the id):
    a final ".", "!" or "?" removed, or a "." added where there was none.

    Most toxic statements of the seeds end without punctuation (slur sentences, ToxiGen-style
    statements) while most safe ones end with a full stop, so a student learns the full stop; the
    mix-v6 guard gave "people need to be able to be proud of what they do" 0.98. Flipping half of
    every source, both labels, leaves the punctuation no label to carry. Pairs are left as they are.
    """
    out = []
    for record in records:
        digest = hashlib.sha256(f"{seed}\0punctuation\0{record.id}".encode()).digest()
        flip = record.response is None and digest[0] % 2 == 0
        varied = flipped_end(record.prompt) if flip else ""
        if not varied.strip():
            out.append(record)
            continue
        meta = {**record.meta, "end_punctuation": "flipped"}
        out.append(
            example(
                varied,
                label=record.label,
                p_unsafe=record.p_unsafe,
                source=record.source,
                meta=meta,
            )
        )
    return out


def flipped_end(text: str) -> str:
    """``text`` without its final ".", "!" or "?", or with a "." where it had none ("" if blank)."""
    text = text.rstrip()
    if not text:
        return ""
    return text.rstrip(END_PUNCTUATION) if text[-1] in END_PUNCTUATION else f"{text}."


def responses_alone(records: Sequence[Example]) -> list[Example]:
    """The responses of labelled pairs read alone, with the pair's label.

    The runtime reads a completion in its pair and alone (``response_weight`` of the bundle): a
    complying answer is unsafe and a refusal or harmless answer safe either way, so the student
    learns the second reading too."""
    return [
        example(
            record.response,
            label=record.label,
            source=record.source,
            meta={**record.meta, "kind": "response_alone"},
        )
        for record in records
        if record.response and record.label is not None
    ]


def build_mix(
    records: Sequence[Example],
    stage: Stage,
    *,
    split: str,
    templates: Sequence[Template] = (),
    synthetic: Sequence[Example] = (),
    seed: int = 0,
) -> list[Example]:
    """The records of one split at ``stage`` (see the module docstring), deduplicated."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {list(STAGES)}")
    level = STAGES.index(stage)
    if split == "train":
        records = cap_easy_safe(records)
    out = [r for r in records if r.response is None] + edgy_records(split)
    if split == "train":
        out = vary_end_punctuation(out, seed)
    if level >= 1:
        pairs = [r for r in records if r.response is not None] + refusal_pairs(records, split, seed)
        out += pairs + (responses_alone(pairs) if split == "train" else [])
    if level >= 2:
        if not templates:
            raise ValueError("the jailbreak stage needs the jailbreak templates")
        out += wrapped(out, templates, split, seed)
    if level >= 3:
        out += synthetic
    return dedup(out)
