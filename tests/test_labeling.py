"""Labelling: teacher scores cached by (teacher id, content id): hits, misses, resume after a
crash, nothing half-written, and the CLI with a guard bundle as teacher."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from adapters.openai_http import ServerError
from adapters.settings import AdapterSettings
from adapters.teachers import TeacherError
from adapters.teachers.openai_compat import OpenAICompatTeacher
from distill.labeling import LabelCache, TeacherLabeler, add_command
from distill.records import Example, example, read_jsonl, write_jsonl
from distill.settings import LabelingSettings
from tests.fake_openai import FakeServer, Reply, completion_logprobs
from tests.tiny_guard import SAFE, UNSAFE


class FixedTeacher:
    """Scores 0.9 for the toy corpus's unsafe texts, 0.1 otherwise; counts what it scored."""

    def __init__(self, teacher_id: str = "fixed-1", fail_on_call: int | None = None) -> None:
        self.teacher_id = teacher_id
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.scored: list[tuple[str, str | None]] = []

    def score(self, pairs: Sequence[tuple[str, str | None]]) -> list[float]:
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise TeacherError("teacher crashed")
        self.scored += list(pairs)
        return [0.9 if (p in UNSAFE or r in UNSAFE) else 0.1 for p, r in pairs]

    async def ascore(self, pairs: Sequence[tuple[str, str | None]]) -> list[float]:
        return self.score(pairs)


def corpus() -> list[Example]:
    records = [example(t, source="toy") for t in SAFE[:6] + UNSAFE[:6]]
    records.append(example(SAFE[0], UNSAFE[0], source="toy"))
    records.append(example(SAFE[1], label=1, source="gold"))  # same content, a human label
    records.append(example(SAFE[2], source="again"))  # same content, another source
    return records


@pytest.fixture()
def cache(tmp_path: Path) -> Iterator[LabelCache]:
    store = LabelCache(tmp_path / "labels.sqlite")
    yield store
    store.close()


def test_cache_roundtrip_in_chunks(cache: LabelCache) -> None:
    scores = {f"id-{i}": i / 1500 for i in range(1200)}
    cache.put_many("t1", scores)
    assert cache.get_many("t1", list(scores)) == scores
    assert cache.get_many("t2", list(scores)) == {}
    assert cache.count("t1") == 1200 and cache.count() == 1200


def test_first_run_scores_each_content_once_and_labels(cache: LabelCache) -> None:
    teacher = FixedTeacher()
    records, stats = TeacherLabeler(teacher, cache, LabelingSettings(batch_size=4)).label(
        corpus(), progress=False
    )
    assert stats.records == 15 and stats.distinct == 13
    assert stats.cache_hits == 0 and stats.scored == 13 and len(teacher.scored) == 13
    by_source = {(r.source, r.prompt, r.response): r for r in records}
    unsafe = by_source[("toy", UNSAFE[0], None)]
    assert unsafe.p_unsafe == 0.9 and unsafe.label == 1
    assert unsafe.meta == {"teacher": "fixed-1", "label_source": "teacher"}
    assert by_source[("toy", SAFE[0], UNSAFE[0])].label == 1
    gold = by_source[("gold", SAFE[1], None)]
    assert gold.label == 1 and gold.p_unsafe == 0.1 and "label_source" not in gold.meta
    assert by_source[("again", SAFE[2], None)].p_unsafe == 0.1
    assert stats.labels_set == 14 and stats.unsafe == 8

    relabelled, _ = TeacherLabeler(
        teacher, cache, LabelingSettings(relabel=True, threshold=0.05)
    ).label(corpus(), progress=False)
    assert all(r.label == 1 for r in relabelled)  # every score is above 0.05


def test_rerun_is_all_cache_hits_and_teachers_do_not_mix(cache: LabelCache) -> None:
    TeacherLabeler(FixedTeacher(), cache).label(corpus(), progress=False)
    again = FixedTeacher()
    first, _ = TeacherLabeler(FixedTeacher(), LabelCache(cache.path)).label(
        corpus(), progress=False
    )
    records, stats = TeacherLabeler(again, cache).label(corpus(), progress=False)
    assert again.calls == 0 and stats.cache_hits == 13 and stats.scored == 0
    assert records == first
    other = FixedTeacher("fixed-2")
    _, stats = TeacherLabeler(other, cache).label(corpus(), progress=False)
    assert stats.cache_hits == 0 and len(other.scored) == 13


def test_resume_after_a_crash_scores_only_what_is_missing(cache: LabelCache) -> None:
    settings = LabelingSettings(batch_size=5)
    crashing = FixedTeacher(fail_on_call=2)
    with pytest.raises(TeacherError, match="crashed"):
        TeacherLabeler(crashing, cache, settings).label(corpus(), progress=False)
    assert cache.count("fixed-1") == 5  # the first batch only, the failed one not at all

    resumed = FixedTeacher()
    records, stats = TeacherLabeler(resumed, cache, settings).label(corpus(), progress=False)
    assert stats.cache_hits == 5 and stats.scored == 8 and len(resumed.scored) == 8
    assert not set(resumed.scored) & set(crashing.scored)
    assert all(r.p_unsafe is not None for r in records)


@pytest.mark.parametrize("scores", [[0.5, math.nan], [0.5, 1.5], [0.5]])
def test_invalid_teacher_scores_are_refused_and_not_cached(
    cache: LabelCache, scores: list[float]
) -> None:
    class BadTeacher(FixedTeacher):
        def score(self, pairs: Sequence[tuple[str, str | None]]) -> list[float]:
            return scores

    with pytest.raises(TeacherError):
        TeacherLabeler(BadTeacher(), cache).label(corpus()[:2], progress=False)
    assert cache.count() == 0


def test_server_failure_leaves_no_half_written_batch(cache: LabelCache) -> None:
    """One pair of the second batch always gets a 500: its whole batch stays uncached."""

    def handler(path: str, body: dict) -> Reply:
        if UNSAFE[5] in body["prompt"]:
            return Reply(status=500, body={"error": "boom"})
        return Reply(completion_logprobs({"safe": math.log(0.7), "unsafe": math.log(0.3)}))

    records = [example(t, source="toy") for t in SAFE[:4] + UNSAFE[4:8]]
    settings = AdapterSettings(http_max_retries=1, http_backoff_s=0.01, http_timeout_s=2)
    with FakeServer(handler) as server:
        teacher = OpenAICompatTeacher("lg", server.url, settings=settings)
        labeller = TeacherLabeler(teacher, cache, LabelingSettings(batch_size=4))
        with pytest.raises(ServerError, match="HTTP 500"):
            labeller.label(records, progress=False)
    cached = cache.get_many(teacher.teacher_id, [r.id for r in records])
    assert set(cached) == {r.id for r in records[:4]}
    assert all(p == pytest.approx(0.3) for p in cached.values())


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_labels_with_a_guard_bundle_and_reuses_the_cache(
    tiny_torch_bundle: Path, tmp_path: Path, harmaug_home: Path, capsys: pytest.CaptureFixture
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", corpus())
    out = tmp_path / "out.jsonl"
    argv = ["label", "--teacher", f"classifier:{tiny_torch_bundle}", "--in", str(source)]
    assert run_cli([*argv, "--out", str(out)]) == 0
    labelled = read_jsonl(out)
    assert len(labelled) == 15 and all(r.p_unsafe is not None for r in labelled)
    teacher_id = labelled[0].meta["teacher"]
    assert teacher_id.startswith("classifier:tiny-torch-1:")
    toy = [r for r in labelled if r.source == "toy" and r.response is None]
    assert [r.label for r in toy] == [0] * 6 + [1] * 6  # the tiny guard separates its corpus
    summary = json.loads((tmp_path / "out.jsonl.labeling.json").read_text())
    assert summary["teacher_id"] == teacher_id and summary["scored"] == 13
    assert (harmaug_home / "cache" / "labels" / "labels.sqlite").is_file()
    assert "0 from the cache" in capsys.readouterr().out

    assert run_cli([*argv, "--out", str(tmp_path / "again.jsonl")]) == 0
    assert "13 from the cache, 0 scored" in capsys.readouterr().out
    assert read_jsonl(tmp_path / "again.jsonl") == labelled

    assert (
        run_cli(
            ["label", "--teacher", "classifier:champion", "--in", str(source), "--out", str(out)]
        )
        == 1
    )
    assert "no champion" in capsys.readouterr().err
