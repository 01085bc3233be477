"""Teachers: P(unsafe) of (prompt, response) pairs from a large guard, behind one protocol.

``load_teacher(SPEC)`` builds one from a SPEC (``adapters.spec``):

| SPEC                                   | teacher                                                   |
|----------------------------------------|-----------------------------------------------------------|
| ``llama-guard:DIR``                    | Llama Guard 3 through transformers (``llama_guard``)      |
| ``openai:MODEL@URL``                   | Llama Guard served by vLLM / an OpenAI-compatible server  |

``distill.teachers.load_teacher`` adds ``classifier:champion|VERSION|DIR`` (a guard bundle or HF
sequence classifier as teacher, scored by the guard runtime).

Options: ``temperature=T`` (llama-guard, openai), ``categories=true`` (llama-guard, openai:
labelling also asks for the generated category line and stores the codes), ``endpoint=
completions|chat``, ``top_logprobs=K``, ``category_tokens=N`` (tokens generated with
``categories=true``, default 20) and ``id=TEACHER_ID`` (openai). Examples::

    llama-guard:/models/Llama-Guard-3-8B?temperature=2
    openai:meta-llama/Llama-Guard-3-8B@http://127.0.0.1:8000/v1?categories=true
"""

from __future__ import annotations

from adapters.settings import AdapterSettings
from adapters.spec import Spec, SpecError, parse_spec, resolve_path
from adapters.teachers.protocol import (
    CATEGORY_TOKENS,
    Assessment,
    CategoryTeacher,
    Pair,
    Teacher,
    TeacherError,
    ThreadedTeacher,
)

TEACHER_KINDS = ("llama-guard", "openai")


def _pop_bool(spec: Spec, key: str) -> bool:
    value = spec.pop(key)
    if value is None:
        return False
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise SpecError(f"option {key}={value!r} is not true or false")


def load_teacher(text: str, settings: AdapterSettings | None = None) -> Teacher:
    """The teacher a SPEC names (see the module docstring); raises SpecError or TeacherError."""
    spec = parse_spec(text, TEACHER_KINDS)
    settings = settings or AdapterSettings()
    teacher: Teacher
    if spec.kind == "llama-guard":
        from adapters.teachers.llama_guard import LlamaGuardTeacher

        temperature = spec.pop_float("temperature", 1.0)
        with_categories = _pop_bool(spec, "categories")
        spec.no_leftovers()
        teacher = LlamaGuardTeacher(
            resolve_path(spec.target),
            temperature=temperature,
            with_categories=with_categories,
            settings=settings,
        )
    else:  # openai
        from adapters.teachers.openai_compat import OpenAICompatTeacher

        model, url = spec.server()
        endpoint = spec.pop("endpoint", "completions")
        if endpoint not in ("completions", "chat"):
            raise SpecError(f"endpoint must be completions or chat, got {endpoint!r}")
        teacher = OpenAICompatTeacher(
            model,
            url,
            endpoint=endpoint,  # type: ignore[arg-type]
            temperature=spec.pop_float("temperature", 1.0),
            top_logprobs=spec.pop_int("top_logprobs", 20),
            with_categories=_pop_bool(spec, "categories"),
            category_tokens=spec.pop_int("category_tokens", CATEGORY_TOKENS),
            teacher_id=spec.pop("id"),
            settings=settings,
        )
        spec.no_leftovers()
    return teacher


__all__ = [
    "CATEGORY_TOKENS",
    "TEACHER_KINDS",
    "Assessment",
    "CategoryTeacher",
    "Pair",
    "Teacher",
    "TeacherError",
    "ThreadedTeacher",
    "load_teacher",
]
