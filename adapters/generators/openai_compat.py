"""A generator on vLLM or any OpenAI-compatible server.

One request per prompt (``n`` samples each), at most ``http_concurrency`` in flight, with the
retries and timeouts of ``adapters.openai_http``. The assistant pre-fill takes one of two forms:

* ``chat``: ``/chat/completions`` with the prefix as a final assistant message and
  ``continue_final_message=true, add_generation_prompt=false`` (vLLM's extension fields); the
  server's chat template renders the prompt and the model continues the prefix;
* ``completions``: ``/completions`` with the prompt rendered here by the model's chat template
  (``tokenizer=DIR``, a local tokenizer of the served model), the prefix at its end.

``prefill=auto`` (the default) tries ``chat`` and, when the server refuses it (HTTP 400, 404 or
422: no ``continue_final_message``), switches to ``completions`` for the rest of the run if a
tokenizer was given. Without a prefix a plain chat request is sent. Stop strings are applied
here, after the first non-blank text (see ``adapters.generators.protocol``), not sent to the
server, whose stop would also end a sample on a leading newline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import structlog

from adapters.generators.protocol import (
    GeneratorError,
    chat_messages,
    render_chat,
    truncate_at_stop,
)
from adapters.openai_http import (
    MalformedResponse,
    OpenAICompatClient,
    ServerError,
    gather_or_cancel,
    run_sync,
)
from adapters.settings import AdapterSettings

log = structlog.get_logger("harmaug.adapters")
Prefill = Literal["auto", "chat", "completions"]
REFUSED_PREFILL = {400, 404, 422}


def choice_texts(body: Any, n: int, field: Literal["chat", "completions"]) -> list[str]:
    """The ``n`` generated texts of a response, in choice order."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or len(choices) != n:
        found = len(choices) if isinstance(choices, list) else "no"
        raise MalformedResponse(f"expected {n} choices, got {found}")
    ordered = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
    texts = [c["message"]["content"] if field == "chat" else c["text"] for c in ordered]
    if not all(isinstance(text, str) for text in texts):
        raise MalformedResponse("a choice has no text")
    return texts


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    path = Path(path)
    source = {"gguf_file": path.name} if path.suffix == ".gguf" else {}
    try:
        return AutoTokenizer.from_pretrained(
            path.parent if source else path,
            local_files_only=True,
            trust_remote_code=False,
            **source,
        )
    except (OSError, ValueError) as exc:
        raise GeneratorError(f"{path}: cannot load the tokenizer ({exc})") from exc


class OpenAICompatGenerator:
    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        prefill: Prefill = "auto",
        top_p: float = 0.95,
        tokenizer: Any = None,
        system: str | None = None,
        settings: AdapterSettings | None = None,
    ) -> None:
        if prefill not in ("auto", "chat", "completions"):
            raise GeneratorError(f"prefill must be auto, chat or completions, got {prefill!r}")
        if isinstance(tokenizer, str | Path):
            tokenizer = load_tokenizer(tokenizer)
        if prefill == "completions" and tokenizer is None:
            raise GeneratorError("prefill=completions needs the model's tokenizer (tokenizer=DIR)")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.prefill: Prefill = prefill
        self.top_p = top_p
        self.tokenizer = tokenizer
        self.system = system
        self.settings = settings or AdapterSettings()
        self.generator_id = f"openai:{model}@{self.base_url}"

    def chat_request(self, prompt: str, prefix: str, sampling: dict[str, Any]) -> dict[str, Any]:
        body = {**sampling, "messages": chat_messages(prompt, prefix, self.system)}
        if prefix:
            body |= {"continue_final_message": True, "add_generation_prompt": False}
        return body

    def completions_request(
        self, prompt: str, prefix: str, sampling: dict[str, Any]
    ) -> dict[str, Any]:
        text = render_chat(self.tokenizer, prompt, prefix, self.system)
        return {**sampling, "prompt": text}

    async def _sample(
        self, client: OpenAICompatClient, prompt: str, prefix: str, sampling: dict[str, Any]
    ) -> list[str]:
        n = sampling["n"]
        if prefix and self.prefill != "completions":
            try:
                body = self.chat_request(prompt, prefix, sampling)
                texts = await client.post(
                    "chat/completions", body, lambda b: choice_texts(b, n, "chat")
                )
            except ServerError as exc:
                if self.prefill == "chat" or exc.status not in REFUSED_PREFILL:
                    raise
                if self.tokenizer is None:
                    raise GeneratorError(
                        f"{self.base_url} refused the assistant pre-fill ({exc}); pass the "
                        "model's tokenizer (tokenizer=DIR) to use the completions endpoint"
                    ) from exc
                if self.prefill == "auto":
                    log.warning("prefill_fallback", server=self.base_url, to="completions")
                    self.prefill = "completions"
            else:
                return [text.removeprefix(prefix) for text in texts]
        if prefix:
            body = self.completions_request(prompt, prefix, sampling)
            return await client.post(
                "completions", body, lambda b: choice_texts(b, n, "completions")
            )
        body = self.chat_request(prompt, prefix, sampling)
        return await client.post("chat/completions", body, lambda b: choice_texts(b, n, "chat"))

    async def agenerate(
        self,
        prompts: Sequence[str],
        *,
        prefix: str = "",
        n: int = 1,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        stop: Sequence[str] = (),
    ) -> list[str]:
        sampling = {
            "model": self.model,
            "n": n,
            "max_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": self.top_p,
        }
        async with OpenAICompatClient(self.base_url, self.settings) as client:
            groups = await gather_or_cancel(
                self._sample(client, prompt, prefix, sampling) for prompt in prompts
            )
        return [truncate_at_stop(text, stop) for group in groups for text in group]

    def generate(
        self,
        prompts: Sequence[str],
        *,
        prefix: str = "",
        n: int = 1,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        stop: Sequence[str] = (),
    ) -> list[str]:
        return run_sync(
            lambda: self.agenerate(
                prompts,
                prefix=prefix,
                n=n,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                stop=stop,
            )
        )
