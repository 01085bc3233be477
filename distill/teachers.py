"""Every teacher a SPEC names: those of ``adapters.teachers``, and a sequence classifier as
teacher: any guard bundle or Hugging Face sequence-classification directory (a larger student, the
published HarmAug-Guard, the registry champion), ``classifier:champion|VERSION|DIR``.

The classifier teacher lives here, not in ``adapters``, because it is built on the guard runtime
(``guard_plugin``), which itself depends on ``adapters``: dependencies stay one-way.

Scored through ``guard_plugin.model.GuardModel``, exactly as the gateway would serve it: the same
windows for long text (maximum over windows), the same backend. The teacher id carries the
content of the model (the bundle's file hashes, or a fingerprint of a plain HF directory), the
backend and the window settings, since each of them changes the scores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.settings import AdapterSettings
from adapters.spec import fingerprint, model_files, parse_spec
from adapters.teachers import TEACHER_KINDS, Pair, Teacher, TeacherError, ThreadedTeacher
from adapters.teachers import load_teacher as load_adapter_teacher

if TYPE_CHECKING:
    from guard_plugin.model import GuardModel


def model_digest(model: GuardModel) -> str:
    """Content digest of the served files (bundle hashes, else a directory fingerprint)."""
    bundle = model.bundle
    if bundle.manifest.files:
        payload = json.dumps(sorted(bundle.manifest.files.items())).encode()
        return hashlib.sha256(payload).hexdigest()
    return fingerprint(model_files(bundle.path))


def load_teacher(text: str, settings: AdapterSettings | None = None) -> Teacher:
    """The teacher a SPEC names: ``classifier:...`` here, the other kinds from
    ``adapters.teachers.load_teacher``; raises SpecError or TeacherError."""
    spec = parse_spec(text, (*TEACHER_KINDS, "classifier"))
    if spec.kind != "classifier":
        return load_adapter_teacher(text, settings)
    spec.no_leftovers()
    return ClassifierTeacher.load(spec.target, settings)


class ClassifierTeacher(ThreadedTeacher):
    def __init__(self, model: GuardModel, *, batch_size: int = 64) -> None:
        self.model = model
        self.batch_size = batch_size
        windows = model.windows
        self.teacher_id = (
            f"classifier:{model.version}:{model_digest(model)[:16]}:{model.backend.name}"
            f":w={windows.max_length}/{windows.stride}/{windows.max_windows}"
        )

    @classmethod
    def load(cls, target: str | Path, settings: AdapterSettings | None = None) -> ClassifierTeacher:
        """``target``: 'champion', a registry version, or a bundle / HF directory."""
        from guard_plugin.bundle import BundleError
        from guard_plugin.locate import resolve_guard_path
        from guard_plugin.model import GuardModel
        from guard_plugin.settings import GuardSettings

        settings = settings or AdapterSettings()
        guard_settings = GuardSettings(guard=str(target), threads=settings.torch_threads or 2)
        try:
            path = resolve_guard_path(guard_settings)
            model = GuardModel.load(path, guard_settings)
        except BundleError as exc:
            raise TeacherError(f"classifier teacher {target}: {exc}") from exc
        return cls(model, batch_size=max(settings.local_batch_size, 32))

    def score(self, pairs: Sequence[Pair]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            scores += [s.p_unsafe for s in self.model.score(pairs[start : start + self.batch_size])]
        return scores


__all__ = ["ClassifierTeacher", "load_teacher", "model_digest"]
