"""Tiny random causal LMs for adapter tests, built in about a second (nothing shipped).

* a Llama-Guard-style model: a byte-level BPE tokenizer with the Llama 3 header tokens in which
  "safe" and "unsafe" are single tokens, and a 2-layer random ``LlamaForCausalLM``;
* a chat model: the same kind of tokenizer with ChatML tokens and a ChatML chat template (the
  SmolLM2 format), and a 2-layer random ``LlamaForCausalLM``;
* a decoder classifier, the larger judge's architecture (``benchmarks/larger_judge.py``): the
  ChatML tokenizer reading every text up to ``<|im_end|>`` and a 2-layer random
  ``LlamaForSequenceClassification`` that classifies from that token.
"""

from __future__ import annotations

from pathlib import Path

from adapters.teachers.llama_guard_prompt import llama_guard_prompt
from tests.tiny_guard import SAFE, UNSAFE

LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] }}"
    "{% if not loop.last or add_generation_prompt or message['role'] != 'assistant' %}"
    "{{ '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _corpus() -> list[str]:
    texts = SAFE + UNSAFE
    guard = [llama_guard_prompt(t) for t in texts[:8]] + [
        llama_guard_prompt(a, b) for a, b in zip(SAFE[:4], UNSAFE[:4], strict=True)
    ]
    verdicts = ["safe", "unsafe\nS1", "unsafe\nS9,S10", "safe"] * 50
    return texts + guard + verdicts + ["I have an idea for a prompt:"] * 20


def _tokenizer(specials: list[str], **kwargs: str) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=900,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, model_max_length=4096, **kwargs)


def _save_model(out_dir: Path, tokenizer: object, seed: int, classifier: bool = False) -> Path:
    """A random 2-layer Llama with ``tokenizer``: a causal LM, or with ``classifier`` a
    2-label sequence classifier whose logits are of order 1 (so tolerances mean something)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    torch.manual_seed(seed)
    head = {"num_labels": 2, "initializer_range": 0.5} if classifier else {}
    config = LlamaConfig(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,  # type: ignore[attr-defined]
        eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
        pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
        **head,
    )
    model_class = LlamaForSequenceClassification if classifier else LlamaForCausalLM
    model = model_class(config).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)  # type: ignore[attr-defined]
    return out_dir


def build_tiny_llama_guard(out_dir: Path, seed: int = 0) -> Path:
    tokenizer = _tokenizer(
        LLAMA3_SPECIALS,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|end_of_text|>",
    )
    for word in ("safe", "unsafe"):
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1, word  # type: ignore[attr-defined]
    return _save_model(out_dir, tokenizer, seed)


def build_tiny_chat_lm(out_dir: Path, seed: int = 1) -> Path:
    tokenizer = _tokenizer(
        CHATML_SPECIALS,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE  # type: ignore[attr-defined]
    return _save_model(out_dir, tokenizer, seed)


def build_tiny_decoder_classifier(out_dir: Path, seed: int = 2) -> Path:
    from benchmarks.larger_judge import end_every_text

    tokenizer = end_every_text(_tokenizer(CHATML_SPECIALS, eos_token="<|im_end|>"))
    return _save_model(out_dir, tokenizer, seed, classifier=True)
