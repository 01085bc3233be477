"""The offline composition teacher: a harm classifier and a refusal detector, composed.

With no Llama Guard weights at hand, pairs are judged the way the label is defined: a response
is unsafe when it complies (does not refuse) and either the request or the response itself is
harmful::

    P(unsafe | prompt)           = harm(prompt)
    P(unsafe | prompt, response) = (1 - refusal(response))
                                   * (1 - (1 - harm(prompt)) * (1 - harm(response)))

``harm`` is a guard classifier scoring one text alone (a student trained on the labelled public
data, served through ``GuardModel``); ``refusal`` is ``distill.refusal.RefusalDetector``. The
composition sees the response whole (the classifier gets it as its own text) and cannot be
talked out of a refusal by a long role-play prompt, which a 256-token pair window can miss.

The bootstrap builds it from the first-stage student and a refusal detector trained on the
same train split, and labels the HarmAug records with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.teachers.protocol import Pair, ThreadedTeacher
from distill.teachers import model_digest

if TYPE_CHECKING:
    from distill.records import Example
    from distill.refusal import RefusalDetector
    from guard_plugin.model import GuardModel


def recalibrate(p: float, threshold: float) -> float:
    """Shift ``p`` on the logit scale so that ``threshold`` maps to 0.5: the harm judge is
    trained with balanced classes, so its scores run high; its calibrated threshold is where a
    text is as likely unsafe as safe."""
    eps = 1e-6
    p = min(max(p, eps), 1 - eps)
    t = min(max(threshold, eps), 1 - eps)
    return 1.0 / (1.0 + math.exp(-(math.log(p / (1 - p)) - math.log(t / (1 - t)))))


def compose(harm_prompt: float, harm_response: float | None, refusal: float | None) -> float:
    if harm_response is None or refusal is None:
        return harm_prompt
    return (1.0 - refusal) * (1.0 - (1.0 - harm_prompt) * (1.0 - harm_response))


class CompositionTeacher(ThreadedTeacher):
    def __init__(
        self,
        harm: GuardModel,
        refusal: RefusalDetector,
        *,
        harm_threshold: float = 0.5,
        batch_size: int = 64,
    ) -> None:
        self.harm = harm
        self.refusal = refusal
        self.harm_threshold = harm_threshold
        self.batch_size = batch_size
        self.teacher_id = (
            f"composition:harm={harm.version}:{model_digest(harm)[:16]}:{harm.backend.name}"
            f"@{harm_threshold:.4f}:refusal={refusal.digest[:16]}"
        )

    def _harm(self, texts: Sequence[str]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [(text, None) for text in texts[start : start + self.batch_size]]
            scores += [s.p_unsafe for s in self.harm.score(chunk)]
        return [recalibrate(p, self.harm_threshold) for p in scores]

    def score(self, pairs: Sequence[Pair]) -> list[float]:
        harm_prompt = self._harm([prompt for prompt, _ in pairs])
        responses = [response for _, response in pairs if response is not None]
        harm_response = iter(self._harm(responses))
        refusal = iter(self.refusal.scores(responses))
        return [
            compose(
                p,
                None if response is None else next(harm_response),
                None if response is None else next(refusal),
            )
            for p, (_, response) in zip(harm_prompt, pairs, strict=True)
        ]


def trained_guard(
    model_dir: Path, *, max_length: int, max_windows: int | None = None, threads: int = 2
) -> GuardModel:
    """A trained student (a plain HF directory) on PyTorch, scored in the ``max_length``-token
    windows it was trained with (a plain directory would default to the model's 512)."""
    from distill.categories import head_categories, manifest_categories
    from guard_plugin.bundle import GuardBundle
    from guard_plugin.model import GuardModel

    bundle = GuardBundle.load(model_dir)
    update: dict[str, Any] = {"max_length": max_length}
    if max_windows is not None:
        update["max_windows"] = max_windows
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    if bundle.is_plain_hf and head_categories(config) is not None:
        update["categories"] = manifest_categories()  # P(unsafe): columns 0/1 only
    bundle.manifest = bundle.manifest.model_copy(update=update)
    return GuardModel(bundle, backend="torch", threads=threads)


def build_offline_teacher(
    harm_model_dir: Path,
    train_records: Sequence[Example],
    out_dir: Path,
    *,
    max_length: int,
    validation: Sequence[Example] = (),
    threads: int = 2,
) -> CompositionTeacher:
    """The composition teacher of a trained student (an HF directory, scored with ``max_length``
    windows as it was trained) and a refusal detector trained on ``train_records`` (saved in
    ``out_dir``, reused when already there). With ``validation`` records, the harm judge's
    scores are recalibrated so that its max-F1 threshold on them maps to 0.5."""
    from distill.embeddings import MiniLMEmbedder
    from distill.evaluation import calibrate_threshold
    from distill.refusal import RefusalDetector, train_refusal_detector, training_rows

    embedder = MiniLMEmbedder()
    if (out_dir / "refusal.json").is_file():
        detector = RefusalDetector.load(out_dir, embedder)
    else:
        texts, labels = training_rows(train_records)
        detector = train_refusal_detector(train_records, embedder)
        detector.save(out_dir, {"responses": len(texts), "refusals": sum(labels)})
    harm = trained_guard(harm_model_dir, max_length=max_length, threads=threads)
    threshold = 0.5
    labelled = [r for r in validation if r.label is not None]
    if labelled:
        scores = [s.p_unsafe for s in harm.score([(r.prompt, r.response) for r in labelled])]
        threshold = calibrate_threshold([int(r.label or 0) for r in labelled], scores)
    return CompositionTeacher(harm, detector, harm_threshold=threshold)
