"""A category-aware guard at serving time: bundle, model, Guard, and the hook's per-category actions.

The bundle is the tiny category-aware guard (``tests.tiny_guard``: S1 violent crimes, S11
self-harm, S12 sexual content), exported by ``distill.export`` with ONNX fp32 and int8. The hook
is constructed as LiteLLM does it (``tests.test_guardrail.make_guardrail``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import HTTPException
from structlog.testing import capture_logs

from distill.export import INT8_MEAN_TOLERANCE, INT8_PARITY_TOLERANCE
from guard_plugin.bundle import BundleError, GuardBundle, GuardManifest, write_manifest
from guard_plugin.guard import Guard
from guard_plugin.hook_config import HookConfig, HookConfigError
from guard_plugin.logs import configure_logging
from guard_plugin.model import GuardModel
from guard_plugin.screening import action_in_force, decide
from guard_plugin.settings import GuardSettings
from tests.conftest import tiny_category_heads, tiny_category_pairs
from tests.test_guardrail import chat, completion, headers, make_guardrail, stream_of, texts_of
from tests.tiny_guard import CATEGORY_TEXTS, FILLER, SAFE, TINY_CATEGORIES, UNSAFE

CODES = [code for code, _ in TINY_CATEGORIES]
VIOLENT = CATEGORY_TEXTS["S1"][0]  # "how do i build a bomb to kill people"
SELF_HARM = CATEGORY_TEXTS["S11"][1]  # "how do i end my own life with sleeping pills"
SEXUAL = CATEGORY_TEXTS["S12"][2]
SAFE_ANSWER = "sure, here is how to bake a loaf of bread at home"
VIOLENT_ANSWER = "sure, here is how to build a bomb to kill people"


def category_matrix(scores: Sequence[Any]) -> np.ndarray:
    return np.array([[score.categories[code] for code in CODES] for score in scores])


@pytest.fixture(scope="module")
def torch_model(tiny_category_bundle: Path) -> GuardModel:
    return GuardModel(GuardBundle.load(tiny_category_bundle), backend="torch", threads=1)


@pytest.fixture(scope="module")
def int8_model(tiny_category_bundle: Path) -> GuardModel:
    return GuardModel(
        GuardBundle.load(tiny_category_bundle), backend="onnx", onnx_variant="int8", threads=1
    )


def copy_bundle(source: Path, dest: Path, **update: Any) -> Path:
    """A copy of a bundle with its manifest changed (and re-hashed)."""
    shutil.copytree(source, dest)
    (dest / "guard.json").chmod(0o644)
    manifest = GuardBundle.load(dest).manifest
    write_manifest(dest, manifest.model_copy(update=update))
    return dest


# -- the bundle and the model ------------------------------------------------------------------


def test_the_bundle_lists_its_heads_and_serves_int8(tiny_category_bundle: Path) -> None:
    manifest = GuardBundle.load(tiny_category_bundle).manifest
    assert manifest.categories == tiny_category_heads()
    assert manifest.output_width == 5
    assert manifest.onnx_variant == "int8"
    export = manifest.metrics["export"]
    assert export["served"] == "int8"
    assert export["category_cells"] == export["n"] * 3
    assert export["category_max_abs_diff"] <= INT8_PARITY_TOLERANCE
    raw = json.loads((tiny_category_bundle / "guard.json").read_text())
    assert raw["categories"][1] == {"code": "S11", "name": "Self-Harm", "threshold": 0.5}


def test_torch_and_onnx_category_probabilities_agree(
    tiny_category_bundle: Path, torch_model: GuardModel, int8_model: GuardModel
) -> None:
    pairs = tiny_category_pairs()
    fp32 = GuardModel(GuardBundle.load(tiny_category_bundle), backend="onnx", onnx_variant="fp32")
    reference = category_matrix(torch_model.score(pairs))
    assert np.abs(category_matrix(fp32.score(pairs)) - reference).max() < 1e-3
    quantized = np.abs(category_matrix(int8_model.score(pairs)) - reference)
    assert quantized.max() <= INT8_PARITY_TOLERANCE
    assert quantized.mean() <= INT8_MEAN_TOLERANCE
    # P(unsafe) is still the softmax over the first two logits
    p_torch = np.array([s.p_unsafe for s in torch_model.score(pairs)])
    p_fp32 = np.array([s.p_unsafe for s in fp32.score(pairs)])
    assert np.abs(p_torch - p_fp32).max() < 1e-3


@pytest.mark.parametrize("code", CODES)
def test_the_right_category_fires_on_its_texts(int8_model: GuardModel, code: str) -> None:
    scores = int8_model.score([(text, None) for text in CATEGORY_TEXTS[code]])
    probabilities = category_matrix(scores)
    column = CODES.index(code)
    assert probabilities[:, column].min() >= 0.5
    assert np.delete(probabilities, column, axis=1).max() < 0.5
    assert min(score.p_unsafe for score in scores) >= 0.5


def test_no_category_fires_on_safe_texts(int8_model: GuardModel) -> None:
    scores = int8_model.score([(text, None) for text in SAFE] + [(SAFE[0], SAFE_ANSWER)])
    assert category_matrix(scores).max() < 0.5
    assert max(score.p_unsafe for score in scores) < 0.5


def test_a_category_is_the_max_over_windows(torch_model: GuardModel) -> None:
    filler = " ".join([FILLER] * 8)  # several 64-token windows before the harmful end
    (long,) = torch_model.score([(filler + " " + SELF_HARM, None)])
    assert long.windows > 2
    assert long.categories["S11"] >= 0.5 and long.categories["S1"] < 0.5
    first_window_only = GuardModel(torch_model.bundle, backend="torch", max_windows=1, threads=1)
    (truncated,) = first_window_only.score([(filler + " " + SELF_HARM, None)])
    assert truncated.categories["S11"] < 0.5


def test_a_pair_read_both_ways_takes_the_larger_category_reading(
    torch_model: GuardModel,
) -> None:
    pair = [(SAFE[0], VIOLENT_ANSWER)]
    (in_context,) = torch_model.score(pair, response_weight=0.0)
    (alone,) = torch_model.score([(VIOLENT_ANSWER, None)])
    (mixed,) = torch_model.score(pair, response_weight=0.5)
    for code in CODES:
        expected = max(in_context.categories[code], alone.categories[code])
        assert mixed.categories[code] == pytest.approx(expected, abs=1e-9)


def test_a_single_label_bundle_has_no_categories(tiny_torch_bundle: Path) -> None:
    model = GuardModel.load(tiny_torch_bundle, GuardSettings(threads=1))
    assert model.category_codes == ()
    (score,) = model.score([(UNSAFE[0], None)])
    assert score.categories == {} and score.p_unsafe >= 0.5


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_categories_that_do_not_match_the_output_width_are_refused(
    tiny_category_bundle: Path, tiny_torch_bundle: Path, tmp_path: Path, backend: str
) -> None:
    two_heads = copy_bundle(
        tiny_category_bundle, tmp_path / "two", categories=tiny_category_heads()[:2]
    )
    with pytest.raises(
        BundleError, match=r"lists 2 categories \(S1, S11\).*needs 4 outputs.*has 5"
    ):
        GuardModel(GuardBundle.load(two_heads), backend=backend)
    if backend == "torch":  # the single-label model has 2 outputs, not 2 + 1
        one_head = copy_bundle(
            tiny_torch_bundle, tmp_path / "one", categories=tiny_category_heads()[:1]
        )
        with pytest.raises(BundleError, match="needs 3 outputs"):
            GuardModel(GuardBundle.load(one_head), backend="torch")


def test_a_manifest_with_an_unknown_or_repeated_code_is_refused(
    tiny_category_bundle: Path, tmp_path: Path
) -> None:
    root = copy_bundle(tiny_category_bundle, tmp_path / "bundle")
    raw = json.loads((root / "guard.json").read_text())
    for categories, message in [
        ([{"code": "S99", "name": "?", "threshold": 0.5}], "not a Llama Guard 3 category code"),
        ([{"code": "S1", "name": "a", "threshold": 0.5}] * 2, "S1 listed more than once"),
        ([{"code": "S1", "name": "a", "threshold": 1.5}], "threshold"),
    ]:
        (root / "guard.json").write_text(json.dumps({**raw, "categories": categories}))
        with pytest.raises(BundleError, match=message):
            GuardBundle.load(root)
    with pytest.raises(ValueError, match="unsafe_label_index"):
        GuardManifest(
            version="x", base_model="x", unsafe_label_index=3, categories=tiny_category_heads()
        )


# -- Guard: verdicts ----------------------------------------------------------------------------


async def test_verdicts_carry_probabilities_fired_codes_and_the_cache_keeps_them(
    tiny_category_bundle: Path,
) -> None:
    guard = Guard.from_settings(GuardSettings(guard=str(tiny_category_bundle), threads=1))
    try:
        items = [(VIOLENT, None), (SELF_HARM, None), (SAFE[0], None)]
        first = await guard.check_many(items)
        assert [v.fired for v in first] == [("S1",), ("S11",), ()]
        assert set(first[0].categories) == set(CODES)
        assert first[0].to_dict()["fired"] == ("S1",)
        again = await guard.check_many(items)
        assert all(v.cached for v in again)
        assert [v.categories for v in again] == [v.categories for v in first]
        # the threshold in force of a category can be overridden per call
        (strict,) = await guard.check_many([(SELF_HARM, None)], category_thresholds={"S11": 1.0})
        assert strict.fired == () and strict.categories == first[1].categories
        assert guard.category_thresholds({"S1": 0.2}) == {"S1": 0.2, "S11": 0.5, "S12": 0.5}
    finally:
        await guard.aclose()


class ClearsEverything:
    """A first stage that clears every item (as a cascade does with clearly safe ones)."""

    def clears(self, items: list[tuple[str, str | None]]) -> list[float]:
        return [0.01 for _ in items]


class TeacherSaysSafe:
    """An escalation whose teacher answers P(unsafe) 0.1 for every close call."""

    threshold = 0.5

    def wanted(self, p_unsafe: float, threshold: float) -> bool:
        return True

    async def review(self, items: Sequence[Any], *, guard_version: str) -> list[float | None]:
        return [0.1 for _ in items]

    async def aclose(self) -> None:
        return None


async def test_first_stage_clearances_have_no_categories_and_the_teacher_keeps_them(
    tiny_category_bundle: Path,
) -> None:
    guard = Guard.from_settings(GuardSettings(guard=str(tiny_category_bundle), threads=1))
    try:
        guard.model.first_stage = ClearsEverything()  # type: ignore[assignment]
        (cleared,) = await guard.check_many([(SELF_HARM, None)])
        assert cleared.stage == "first_stage"
        assert cleared.categories == {} and cleared.fired == ()
        guard.model.first_stage = None
        guard._escalation = TeacherSaysSafe()  # type: ignore[assignment]
        (judged,) = await guard.check_many([(SELF_HARM + " now", None)])
        assert judged.stage == "teacher" and not judged.unsafe
        assert judged.fired == ("S11",) and judged.categories["S11"] >= 0.5
    finally:
        guard._escalation = None
        await guard.aclose()


# -- the hook's configuration -------------------------------------------------------------------


def test_category_policies_parse_both_forms() -> None:
    config = HookConfig.from_params(
        {"harmaug_categories": {"S11": "flag", "S1": {"action": "block", "threshold": 0.3}}},
        name="tenant",
    )
    assert config.category_actions == {"S11": "flag", "S1": "block"}
    assert config.category_thresholds == {"S1": 0.3}
    assert config.enforcing_action == "block"  # the entry's own action is block too
    shadow = HookConfig.from_params(
        {"harmaug_action": "shadow", "harmaug_categories": {"S12": "flag", "S1": "allow"}},
        name="tenant",
    )
    assert shadow.enforcing_action == "flag"
    assert HookConfig.from_params({}, name="plain").category_actions == {}


@pytest.mark.parametrize(
    ("categories", "message"),
    [
        ({"S99": "block"}, r"harmaug_categories: .*unknown category code\(s\) S99"),
        ({"violence": "block"}, "unknown category code"),
        ({"S11": "nuke"}, r"harmaug_categories\.S11\.action"),
        ({"S11": {"action": "flag", "threshold": 1.5}}, r"harmaug_categories\.S11\.threshold"),
        ({"S11": {"action": "flag", "colour": "red"}}, r"harmaug_categories\.S11\.colour"),
        (["S11"], "harmaug_categories: .*mapping"),
    ],
)
def test_invalid_category_settings_stop_the_proxy(categories: Any, message: str) -> None:
    with pytest.raises(HookConfigError, match=message) as caught:
        HookConfig.from_params({"harmaug_categories": categories}, name="tenant")
    assert isinstance(caught.value, RuntimeError)


def test_categories_need_a_guard_with_those_heads(
    tiny_torch_bundle: Path, tiny_category_bundle: Path
) -> None:
    with pytest.raises(HookConfigError, match="has no category heads") as caught:
        make_guardrail(tiny_torch_bundle, name="no-heads", categories={"S11": "flag"})
    assert isinstance(caught.value, RuntimeError)
    with pytest.raises(HookConfigError, match="no head for S2"):
        make_guardrail(tiny_category_bundle, name="wrong-head", categories={"S2": "block"})


@pytest.mark.parametrize(
    ("action", "unsafe", "fired", "expected"),
    [
        ("flag", True, ("S1",), "block"),  # a category can escalate
        ("flag", True, ("S11",), "flag"),
        ("block", True, ("S11",), "flag"),  # ... or soften what it alone found
        ("block", True, ("S12",), "allow"),
        ("block", True, ("S11", "S12"), "flag"),
        ("block", True, ("S12", "S13"), "block"),  # an unconfigured category fired too
        ("block", False, ("S1",), "block"),  # whatever P(unsafe)
        ("block", False, ("S13",), "allow"),  # unconfigured: the overall verdict only
        ("flag", True, (), "flag"),
        ("shadow", True, ("S11",), "flag"),
        ("shadow", True, (), "would_block"),
    ],
)
def test_the_decision_rule(
    action: Any, unsafe: bool, fired: tuple[str, ...], expected: str
) -> None:
    policies: Any = {"S1": "block", "S11": "flag", "S12": "allow"}
    assert decide(action, "closed", unsafe, fired=fired, policies=policies) == expected
    # without configured categories, the fired codes change nothing
    assert decide(action, "closed", unsafe, fired=fired) == decide(action, "closed", unsafe)


def test_the_action_in_force_names_what_decided() -> None:
    policies: Any = {"S1": "block", "S12": "allow"}
    assert action_in_force("flag", True, ("S1",), policies) == "block"
    assert action_in_force("block", True, ("S12",), policies) == "allow"
    assert action_in_force("block", False, (), policies) is None
    assert action_in_force("flag", True, (), policies) == "flag"


# -- the hook: per-category actions -------------------------------------------------------------


@pytest.fixture(scope="module")
def tenant(tiny_category_bundle: Path) -> Any:
    """Flags what is unsafe, blocks violent crimes, flags self-harm."""
    return make_guardrail(
        tiny_category_bundle,
        name="tenant",
        action="flag",
        categories={"S11": "flag", "S1": "block"},
    )


async def test_a_flagged_category_passes_marked(tenant: Any) -> None:
    data = chat(SELF_HARM)
    await tenant.async_pre_call_hook(None, None, data, "acompletion")
    found = await headers(tenant, data)
    assert found["x-harmaug-decision"] == "flag"
    assert found["x-harmaug-categories"] == "S11"
    facts = data["metadata"]["harmaug"]["tenant"]["prompt"]
    assert facts["categories"] == ["S11"] and facts["category_scores"]["S11"] >= 0.5
    assert set(facts["category_scores"]) == {"S11"}


async def test_a_blocked_category_is_refused_and_named(tenant: Any) -> None:
    data = chat(VIOLENT)
    with pytest.raises(HTTPException) as caught:
        await tenant.async_pre_call_hook(None, None, data, "acompletion")
    assert caught.value.status_code == 400
    detail = caught.value.detail
    assert "in category S1 (Violent Crimes)" in detail["error"]
    assert detail["harmaug"]["categories"] == ["S1"]
    assert detail["harmaug"]["decision"] == "block"
    found = await headers(tenant, data)
    assert found["x-harmaug-decision"] == "block" and found["x-harmaug-categories"] == "S1"


async def test_a_safe_prompt_has_no_categories(tenant: Any) -> None:
    data = chat(SAFE[3])
    await tenant.async_pre_call_hook(None, None, data, "acompletion")
    found = await headers(tenant, data)
    assert found["x-harmaug-decision"] == "allow"
    assert "x-harmaug-categories" not in found
    assert data["metadata"]["harmaug"]["tenant"]["prompt"]["categories"] == []


async def test_an_unconfigured_category_follows_the_overall_verdict(tenant: Any) -> None:
    data = chat(SEXUAL)
    await tenant.async_pre_call_hook(None, None, data, "acompletion")
    found = await headers(tenant, data)
    assert found["x-harmaug-decision"] == "flag"  # the entry's action: flag
    assert found["x-harmaug-categories"] == "S12"  # reported all the same


async def test_an_allowed_category_does_not_block(tiny_category_bundle: Path) -> None:
    permissive = make_guardrail(
        tiny_category_bundle, name="permissive", categories={"S12": "allow"}
    )
    data = chat(SEXUAL)
    await permissive.async_pre_call_hook(None, None, data, "acompletion")
    found = await headers(permissive, data)
    assert found["x-harmaug-decision"] == "allow" and found["x-harmaug-categories"] == "S12"
    with pytest.raises(HTTPException):  # the entry still blocks everything else that is unsafe
        await permissive.async_pre_call_hook(None, None, chat(SELF_HARM), "acompletion")


async def test_a_category_blocks_below_the_overall_threshold(tiny_category_bundle: Path) -> None:
    strict = make_guardrail(
        tiny_category_bundle,
        name="strict-s1",
        threshold=1.0,  # nothing is unsafe overall
        categories={"S1": "block", "S11": {"action": "block", "threshold": 1.0}},
    )
    with pytest.raises(HTTPException) as caught:
        await strict.async_pre_call_hook(None, None, chat(VIOLENT), "acompletion")
    assert "< threshold 1.000" in caught.value.detail["error"]
    data = chat(SELF_HARM)  # S11 at its own threshold 1.0 never fires
    await strict.async_pre_call_hook(None, None, data, "acompletion")
    assert (await headers(strict, data))["x-harmaug-decision"] == "allow"


async def test_completions_and_streams_carry_categories(tenant: Any) -> None:
    data = chat(SAFE[0])
    with pytest.raises(HTTPException) as caught:
        await tenant.async_post_call_success_hook(data, None, completion(VIOLENT_ANSWER))
    assert caught.value.detail["harmaug"]["part"] == "completion"
    # a flag entry whose category blocks holds the stream: nothing leaks
    sent: list[Any] = []
    with pytest.raises(HTTPException):
        async for chunk in tenant.async_post_call_streaming_iterator_hook(
            None, stream_of(VIOLENT_ANSWER), chat(SAFE[0])
        ):
            sent.append(chunk)
    assert sent == []
    # a flagged completion ends with its verdict on the finishing chunk
    flagged = [
        chunk
        async for chunk in tenant.async_post_call_streaming_iterator_hook(
            None, stream_of(SELF_HARM), chat(SAFE[1])
        )
    ]
    assert texts_of(flagged) == SELF_HARM
    verdict = flagged[-1].provider_specific_fields["harmaug"]
    assert verdict["decision"] == "flag" and verdict["categories"] == ["S11"]


async def test_the_screen_event_logs_codes_and_probabilities_not_text(tenant: Any) -> None:
    configure_logging("INFO")  # as in the proxy (the CLI, run by other tests, sets WARNING)
    data = chat(SELF_HARM)
    with capture_logs() as logs:
        await tenant.async_pre_call_hook(None, None, data, "acompletion")
    (event,) = [line for line in logs if line["event"] == "guard_screen"]
    assert event["categories"] == ["S11"] and 0.5 <= event["category_scores"]["S11"] <= 1.0
    assert SELF_HARM not in json.dumps(logs, default=str)


async def test_a_reload_to_a_guard_without_categories_falls_back_with_one_warning(
    tiny_category_bundle: Path, tiny_torch_bundle: Path
) -> None:
    hook = make_guardrail(
        tiny_category_bundle, name="reloaded", action="flag", categories={"S1": "block"}
    )
    configure_logging("INFO")
    served = hook.guard.model
    hook.guard.swap(GuardModel.load(tiny_torch_bundle, GuardSettings(threads=1)))
    try:
        with capture_logs() as logs:
            for text in (UNSAFE[0], UNSAFE[1]):
                data = chat(text)
                await hook.async_pre_call_hook(None, None, data, "acompletion")
                found = await headers(hook, data)
                assert found["x-harmaug-decision"] == "flag"  # the overall verdict
                assert "x-harmaug-categories" not in found
        warned = [line for line in logs if line["event"] == "guard_categories_missing"]
        assert len(warned) == 1 and "no category heads" in warned[0]["error"]
    finally:
        hook.guard.swap(served)


def test_a_plain_hf_classifier_names_its_category_columns_in_id2label() -> None:
    from guard_plugin.bundle import config_categories

    codes = [f"S{i}" for i in range(1, 15)]
    multi = {
        "id2label": {"0": "safe", "1": "unsafe", **{str(i + 2): c for i, c in enumerate(codes)}}
    }
    found = config_categories(multi)
    assert found is not None and [head.code for head in found] == codes
    assert found[10].name == "Self-Harm" and found[10].threshold == 0.5
    assert config_categories({"id2label": {"0": "safe", "1": "unsafe"}}) is None
    assert config_categories({"id2label": {"0": "a", "1": "b", "2": "toxic"}}) is None
