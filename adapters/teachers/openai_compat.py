"""Llama Guard served by vLLM (or any OpenAI-compatible server) as a teacher.

One request per pair, at most ``http_concurrency`` in flight, ``max_tokens=1`` with the top
log-probabilities of the first token; P(unsafe) is the softmax over the "safe" and "unsafe"
log-probabilities divided by ``temperature`` (a token missing from the top list counts as
probability 0). Two request forms:

* ``completions`` (default): the exact Llama Guard 3 prompt of ``llama_guard_prompt`` (the same
  string the transformers teacher scores) on ``/completions`` with ``logprobs=<top_logprobs>`` and
  ``add_special_tokens=false`` (the prompt carries its own ``<|begin_of_text|>``; vLLM reads this
  extension field);
* ``chat``: the bare conversation on ``/chat/completions`` with ``logprobs=true`` and
  ``top_logprobs``; the server's chat template builds the prompt (custom categories then need a
  server-side template).

With ``with_categories`` (SPEC option ``categories=true``), ``assess`` asks for up to
``category_tokens`` tokens instead of one and parses the generated verdict and category line
("unsafe\nS1,S10") with ``parse_assessment``; P(unsafe) still comes from the first token's
log-probabilities, so ``assess`` and ``score`` agree on it (greedy decoding, temperature 0).

Timeouts, 429/5xx and malformed bodies are retried (``adapters.openai_http``); a server that
answers without log-probabilities gets a :class:`TeacherError` at once, as retrying cannot help.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from adapters.openai_http import (
    MalformedResponse,
    OpenAICompatClient,
    gather_or_cancel,
    run_sync,
)
from adapters.settings import AdapterSettings
from adapters.teachers.llama_guard_prompt import (
    LLAMA_GUARD_3_CATEGORIES,
    PROMPT_FORMAT_VERSION,
    categories_hash,
    llama_guard_prompt,
    p_unsafe_from_logits,
    parse_assessment,
)
from adapters.teachers.protocol import CATEGORY_TOKENS, Assessment, Pair, TeacherError

Endpoint = Literal["completions", "chat"]


def first_token_logprobs(body: Any, endpoint: Endpoint, url: str) -> dict[str, float]:
    """{token text: logprob} of the first generated token, from either response form."""
    try:
        choice = body["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise MalformedResponse("no choices[0] in the response") from None
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    if not logprobs:
        raise TeacherError(
            f"{url} returned no logprobs; the teacher needs a server that returns them "
            "(vLLM: allow at least top_logprobs with --max-logprobs)"
        )
    if endpoint == "completions":
        top = logprobs.get("top_logprobs") or []
        if not top or not isinstance(top[0], dict):
            raise TeacherError(f"{url} returned no top_logprobs for the first token")
        return {str(token): float(value) for token, value in top[0].items()}
    content = logprobs.get("content") or []
    if not content or not content[0].get("top_logprobs"):
        raise TeacherError(f"{url} returned no top_logprobs for the first token")
    return {str(item["token"]): float(item["logprob"]) for item in content[0]["top_logprobs"]}


def generated_text(body: Any, endpoint: Endpoint) -> str:
    """The generated text of ``choices[0]`` ("" when there is none)."""
    try:
        choice = body["choices"][0]
        text = choice["text"] if endpoint == "completions" else choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    return text if isinstance(text, str) else ""


def verdict_logprob(top: dict[str, float], word: str) -> float:
    """The best logprob of a token that reads ``word`` (surrounding whitespace ignored)."""
    values = [value for token, value in top.items() if token.strip() == word]
    return max(values) if values else -math.inf


class OpenAICompatTeacher:
    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        endpoint: Endpoint = "completions",
        temperature: float = 1.0,
        top_logprobs: int = 20,
        categories: tuple[tuple[str, str], ...] = LLAMA_GUARD_3_CATEGORIES,
        with_categories: bool = False,
        category_tokens: int = CATEGORY_TOKENS,
        settings: AdapterSettings | None = None,
        teacher_id: str | None = None,
    ) -> None:
        if endpoint not in ("completions", "chat"):
            raise TeacherError(f"endpoint must be 'completions' or 'chat', got {endpoint!r}")
        if temperature <= 0:
            raise TeacherError(f"temperature must be positive, got {temperature}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.endpoint: Endpoint = endpoint
        self.temperature = temperature
        self.top_logprobs = top_logprobs
        self.categories = categories
        self.with_categories = with_categories
        if category_tokens < 2:
            raise TeacherError(f"category_tokens must be at least 2, got {category_tokens}")
        self.category_tokens = category_tokens
        self.settings = settings or AdapterSettings()
        self.teacher_id = teacher_id or (
            f"openai-llama-guard:{model}@{self.base_url}:{endpoint}:{PROMPT_FORMAT_VERSION}"
            f":cats={categories_hash(categories)}:T={temperature:g}"
        )

    def request(self, pair: Pair, *, categories: bool = False) -> tuple[str, dict[str, Any]]:
        """(path, JSON body) of the request that scores one pair (with ``categories``: that
        also generates the category line)."""
        prompt, response = pair
        tokens = self.category_tokens if categories else 1
        common = {"model": self.model, "max_tokens": tokens, "temperature": 0.0}
        if self.endpoint == "completions":
            return "completions", {
                **common,
                "prompt": llama_guard_prompt(prompt, response, self.categories),
                "logprobs": self.top_logprobs,
                "add_special_tokens": False,
            }
        messages = [{"role": "user", "content": prompt}]
        if response is not None:
            messages.append({"role": "assistant", "content": response})
        return "chat/completions", {
            **common,
            "messages": messages,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }

    def parse(self, body: Any) -> float:
        path = "completions" if self.endpoint == "completions" else "chat/completions"
        url = f"{self.base_url}/{path}"
        top = first_token_logprobs(body, self.endpoint, url)
        safe, unsafe = verdict_logprob(top, "safe"), verdict_logprob(top, "unsafe")
        if safe == unsafe == -math.inf:
            raise TeacherError(
                f"{url}: neither 'safe' nor 'unsafe' among the top {len(top)} first tokens "
                f"({sorted(top)[:5]}...); is {self.model} a Llama Guard model?"
            )
        return p_unsafe_from_logits(safe, unsafe, self.temperature)

    def parse_assessment(self, body: Any) -> Assessment:
        """P(unsafe) from the first token's log-probabilities, verdict and codes from the text."""
        verdict, codes = parse_assessment(generated_text(body, self.endpoint))
        return Assessment(self.parse(body), verdict, codes)

    async def aassess(
        self, pairs: Sequence[Pair], *, client: OpenAICompatClient | None = None
    ) -> list[Assessment]:
        """``assess`` for asyncio code (``client`` as in ``ascore``)."""
        if client is None:
            async with OpenAICompatClient(self.base_url, self.settings) as own:
                return await self.aassess(pairs, client=own)
        requests = [self.request(pair, categories=True) for pair in pairs]
        return await gather_or_cancel(
            client.post(path, body, self.parse_assessment) for path, body in requests
        )

    def assess(self, pairs: Sequence[Pair]) -> list[Assessment]:
        """P(unsafe) plus the generated verdict and category line of each pair."""
        return run_sync(lambda: self.aassess(pairs))

    async def ascore(
        self, pairs: Sequence[Pair], *, client: OpenAICompatClient | None = None
    ) -> list[float]:
        """``score`` for asyncio code; ``client``: a long-lived client of this teacher's server
        (the gateway's escalation keeps one), else one is opened for this call."""
        if client is None:
            async with OpenAICompatClient(self.base_url, self.settings) as own:
                return await self.ascore(pairs, client=own)
        requests = [self.request(pair) for pair in pairs]
        return await gather_or_cancel(
            client.post(path, body, self.parse) for path, body in requests
        )

    def score(self, pairs: Sequence[Pair]) -> list[float]:
        return run_sync(lambda: self.ascore(pairs))
