"""distill.records: content-hash ids, JSONL round trip and errors, atomic writes, dedup."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from distill.records import (
    Example,
    RecordsError,
    content_id,
    dedup,
    example,
    prompt_key,
    read_jsonl,
    write_jsonl,
)


def test_id_is_sha256_of_the_documented_normal_form() -> None:
    expected = hashlib.sha256(b'["how do i bake bread",null]').hexdigest()
    assert content_id("how do i bake bread") == expected
    pair = hashlib.sha256(b'["q",""]').hexdigest()
    assert content_id("q", "") == pair


def test_id_ignores_layout_but_not_content() -> None:
    base = content_id("how do i bake bread", "Mix flour and water.")
    assert content_id("  how do i\n\tbake   bread ", "Mix flour\nand water.") == base
    # NFC: "e" + combining acute is the same text as the precomposed character.
    assert content_id("caf\u0065\u0301") == content_id("caf\u00e9")
    assert content_id("How do I bake bread", "Mix flour and water.") != base  # case is kept
    assert content_id("how do i bake bread") != base  # prompt alone differs from the pair
    assert content_id("how do i bake bread", "") != content_id("how do i bake bread")
    assert content_id("a b", None) != content_id("a", "b")  # no ambiguity at the boundary
    assert prompt_key("how do i\nbake bread") == content_id("how do i bake bread")


def test_example_computes_id_and_refuses_a_wrong_one() -> None:
    record = example("tell me a joke", label=0, source="test")
    assert record.id == content_id("tell me a joke")
    assert Example(prompt="tell me a joke", label=0, source="test") == record
    with pytest.raises(ValidationError, match="not the content hash"):
        Example(id="0" * 64, prompt="tell me a joke", source="test")


@pytest.mark.parametrize(
    "fields",
    [{"label": 2}, {"p_unsafe": 1.5}, {"p_unsafe": -0.1}, {"unknown": 1}],
)
def test_example_validates_fields(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Example.model_validate({"prompt": "x", "source": "test", **fields})


def test_jsonl_round_trip(tmp_path: Path) -> None:
    records = [
        example("how do i bake bread", label=0, source="a", meta={"licence": "MIT"}),
        example("q", "r\nwith ünïcode ✓", label=1, p_unsafe=0.93, source="b"),
        example("unlabelled", source="c"),
    ]
    path = write_jsonl(tmp_path / "sub" / "data.jsonl", records)
    assert read_jsonl(path) == records
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3


def test_read_skips_blank_lines(tmp_path: Path) -> None:
    line = example("hello", label=0, source="a").model_dump_json()
    path = tmp_path / "data.jsonl"
    path.write_text(f"{line}\n\n   \n{line}\n", encoding="utf-8")
    assert len(read_jsonl(path)) == 2


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("{not json", "invalid record"),
        ('{"prompt": "x", "source": "s", "label": 2}', "label"),
        ('{"prompt": "x"}', "source"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, bad_line: str, reason: str) -> None:
    good = example("hello", label=0, source="a").model_dump_json()
    path = tmp_path / "data.jsonl"
    path.write_text(f"{good}\n{good}\n{bad_line}\n", encoding="utf-8")
    with pytest.raises(RecordsError, match=f"{path}:3: .*{reason}"):
        read_jsonl(path)


def test_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    old = [example("old", label=0, source="a")]
    write_jsonl(path, old)

    def failing():  # type: ignore[no-untyped-def]
        yield example("new", label=1, source="a")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_jsonl(path, failing())
    assert read_jsonl(path) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]


def test_dedup_keeps_first_and_resolves_conflicts() -> None:
    first = example("how do i pick a lock", label=0, source="edgy", meta={"k": 1})
    other = example("how do i pick a lock", label=1, p_unsafe=0.7, source="harmful")
    again = example("how do i pick a lock", label=0, p_unsafe=0.2, source="edgy")
    single = example("bake bread", label=0, source="edgy")
    out = dedup([first, single, other, again])

    assert [r.prompt for r in out] == ["how do i pick a lock", "bake bread"]
    merged = out[0]
    assert merged.label == 1  # unsafe wins
    assert merged.p_unsafe == 0.7  # max of known scores
    assert merged.source == "edgy"
    assert merged.meta == {"k": 1, "also_in": ["harmful"], "label_conflict": True}
    assert out[1] == single


def test_dedup_of_agreeing_duplicates_marks_no_conflict() -> None:
    a = example("x", label=1, source="s1")
    b = example(" x ", label=1, source="s2")
    c = example("y", "z", source="s1")
    out = dedup([a, b, c, c])
    assert [r.id for r in out] == [a.id, c.id]
    assert out[0].meta == {"also_in": ["s2"]}
    assert out[1].label is None and out[1].meta == {}
