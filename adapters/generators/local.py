"""A local transformers generator: any causal LM directory, or a GGUF file (via ``gguf``).

The chat-templated prompt (``render_chat``) is left-padded into batches of
``AdapterSettings.local_batch_size`` sequences and sampled with temperature / top-p (greedy at
temperature 0); a sample stops at EOS, at ``max_new_tokens``, or at a stop string after its first
non-blank text. Sampling is seeded per call (``seed`` + call number), so a run is repeatable.
Weights load from safetensors or GGUF (de-quantized to float32), never pickle or remote code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.generators.protocol import GeneratorError, render_chat, stop_index, truncate_at_stop
from adapters.settings import AdapterSettings
from adapters.spec import fingerprint, model_files


class StopAfterText:
    """A transformers stopping criterion: per row, a stop string after non-blank new text."""

    def __init__(self, tokenizer: Any, prompt_width: int, stops: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.stops = list(stops)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        texts = self.tokenizer.batch_decode(
            input_ids[:, self.prompt_width :], skip_special_tokens=True
        )
        done = [stop_index(text, self.stops) is not None for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class LocalGenerator:
    def __init__(
        self,
        path: str | Path,
        *,
        top_p: float = 0.95,
        system: str | None = None,
        settings: AdapterSettings | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        settings = settings or AdapterSettings()
        path = Path(path)
        gguf = path.name if path.suffix == ".gguf" else None
        model_dir = path.parent if gguf else path
        self.top_p = top_p
        self.system = system
        self.batch_size = settings.local_batch_size
        self.seed = settings.seed
        self.calls = 0
        self.device = torch.device(settings.device)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        source: dict[str, Any] = {"gguf_file": gguf} if gguf else {}  # GGUF holds both parts
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                model_dir, local_files_only=True, trust_remote_code=False, **source
            )
            model: Any = AutoModelForCausalLM.from_pretrained(
                model_dir,
                local_files_only=True,
                trust_remote_code=False,
                **(source or {"use_safetensors": True}),
                **settings.model_kwargs(),
            )
        except (OSError, ValueError) as exc:
            raise GeneratorError(f"{path}: cannot load the causal LM ({exc})") from exc
        self.model = model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        files = [path] if gguf else model_files(model_dir)
        self.generator_id = f"local:{path.name}:{fingerprint(files)[:16]}"

    def render(self, prompt: str, prefix: str = "") -> str:
        return render_chat(self.tokenizer, prompt, prefix, self.system)

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
        import torch
        from transformers import StoppingCriteriaList

        texts = [self.render(prompt, prefix) for prompt in prompts for _ in range(n)]
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_p": self.top_p}
            if temperature > 0
            else {"do_sample": False}
        )
        torch.manual_seed(self.seed + self.calls)
        self.calls += 1
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                add_special_tokens=False,
                padding=True,
                return_tensors="pt",
            ).to(self.device)
            width = batch["input_ids"].shape[1]
            criteria = StoppingCriteriaList([StopAfterText(self.tokenizer, width, stop)])
            with torch.inference_mode():
                generated = self.model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    stopping_criteria=criteria if stop else None,
                    **sampling,
                )
            decoded = self.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            out += [truncate_at_stop(text, stop) for text in decoded]
        return out
