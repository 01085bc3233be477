"""Llama Guard 3 as a teacher, through transformers (any Llama-Guard-style causal LM directory).

One forward pass per batch, no generation: the batch is left-padded, so the last position of every
row is its own last prompt token, and P(unsafe) is the softmax over the logits of the "safe" and
"unsafe" tokens at that position, divided by ``temperature``. Position ids follow the attention
mask, so a pair scores the same alone and in any padded batch. ``assess`` also generates the
category line when it is wanted (labelling asks for it with ``with_categories``, SPEC option
``categories=true``). Weights load from safetensors only, never remote code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.settings import AdapterSettings
from adapters.spec import fingerprint, model_files
from adapters.teachers.llama_guard_prompt import (
    LLAMA_GUARD_3_CATEGORIES,
    PROMPT_FORMAT_VERSION,
    categories_hash,
    llama_guard_prompt,
    p_unsafe_from_logits,
    parse_assessment,
)
from adapters.teachers.protocol import (
    CATEGORY_TOKENS,
    Assessment,
    Pair,
    TeacherError,
    ThreadedTeacher,
)

__all__ = ["Assessment", "LlamaGuardTeacher", "verdict_token_id"]


def verdict_token_id(tokenizer: Any, word: str) -> int:
    """The id of ``word`` as the first generated token; it must be a single token."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise TeacherError(
            f"the tokenizer splits {word!r} into {len(ids)} tokens; a Llama Guard tokenizer "
            "has it as one token (is this a Llama Guard model?)"
        )
    return int(ids[0])


class LlamaGuardTeacher(ThreadedTeacher):
    def __init__(
        self,
        model_dir: str | Path,
        *,
        temperature: float = 1.0,
        categories: tuple[tuple[str, str], ...] = LLAMA_GUARD_3_CATEGORIES,
        with_categories: bool = False,
        settings: AdapterSettings | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if temperature <= 0:
            raise TeacherError(f"temperature must be positive, got {temperature}")
        settings = settings or AdapterSettings()
        self.model_dir = Path(model_dir)
        self.temperature = temperature
        self.categories = categories
        self.with_categories = with_categories
        self.batch_size = settings.local_batch_size
        self.device = torch.device(settings.device)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                self.model_dir, local_files_only=True, trust_remote_code=False
            )
            model: Any = AutoModelForCausalLM.from_pretrained(
                self.model_dir,
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=True,
                dtype="auto",
                **settings.model_kwargs(),
            )
        except (OSError, ValueError) as exc:
            raise TeacherError(
                f"{self.model_dir}: cannot load the Llama Guard model ({exc})"
            ) from exc
        self.model = model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.safe_id = verdict_token_id(self.tokenizer, "safe")
        self.unsafe_id = verdict_token_id(self.tokenizer, "unsafe")
        self.teacher_id = (
            f"llama-guard:{fingerprint(model_files(self.model_dir))[:16]}:{PROMPT_FORMAT_VERSION}"
            f":cats={categories_hash(categories)}:T={temperature:g}"
        )

    def prompts(self, pairs: Sequence[Pair]) -> list[str]:
        return [llama_guard_prompt(prompt, response, self.categories) for prompt, response in pairs]

    def encode(self, pairs: Sequence[Pair]) -> dict[str, Any]:
        """Left-padded input ids, attention mask and mask-following position ids."""
        batch = self.tokenizer(
            self.prompts(pairs), add_special_tokens=False, padding=True, return_tensors="pt"
        )
        mask = batch["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return {
            "input_ids": batch["input_ids"].to(self.device),
            "attention_mask": mask.to(self.device),
            "position_ids": positions.to(self.device),
        }

    def verdict_logits(self, pairs: Sequence[Pair]) -> list[tuple[float, float]]:
        """(safe, unsafe) first-token logits of each pair."""
        import torch

        out: list[tuple[float, float]] = []
        for start in range(0, len(pairs), self.batch_size):
            inputs = self.encode(pairs[start : start + self.batch_size])
            with torch.inference_mode():
                last = self.model(**inputs).logits[:, -1, :].float()
            out += [(float(row[self.safe_id]), float(row[self.unsafe_id])) for row in last]
        return out

    def score(self, pairs: Sequence[Pair]) -> list[float]:
        return [
            p_unsafe_from_logits(safe, unsafe, self.temperature)
            for safe, unsafe in self.verdict_logits(pairs)
        ]

    def assess(
        self, pairs: Sequence[Pair], *, max_new_tokens: int = CATEGORY_TOKENS
    ) -> list[Assessment]:
        """P(unsafe) plus the generated verdict and category line (greedy decoding)."""
        import torch

        scores = self.score(pairs)
        results: list[Assessment] = []
        for start in range(0, len(pairs), self.batch_size):
            inputs = self.encode(pairs[start : start + self.batch_size])
            inputs.pop("position_ids")  # generate() derives them from the mask
            with torch.inference_mode():
                generated = self.model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            width = inputs["input_ids"].shape[1]
            for offset, row in enumerate(generated[:, width:]):
                text = str(self.tokenizer.decode(row, skip_special_tokens=True))
                verdict, codes = parse_assessment(text)
                results.append(Assessment(scores[start + offset], verdict, codes))
        return results
