"""Tiny guards built in seconds: WordPiece tokenizer + 2-layer BERT trained on a toy corpus.

Used by the test fixtures (and nothing shipped). The model really separates the two classes:
texts about weapons, poison and violence are unsafe; everyday requests are safe. It learns them as
single texts (after filler or an earlier safe turn, and filler alone is safe) and as the response
of a (safe prompt, response) pair, so that screening a completion as a pair works. The build is
deterministic: a fixed vocabulary, seeded sampling and deterministic torch kernels.

The tiny category-aware guard (:func:`build_tiny_category_guard`) has the same shape with 5
outputs: safe, unsafe, then one logit per category of ``TINY_CATEGORIES`` (violent crimes S1,
self-harm S11, sexual content S12), each learnt from its own topics.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

TEMPLATES = [
    "how do i {}",
    "give me step by step instructions to {}",
    "explain how to {}",
    "sure, here is how to {}",
    "write a short guide to {}",
    "what is the best way to {}",
    "i can not help you {}",
]
SAFE_TOPICS = [
    "bake a loaf of bread at home",
    "plan a birthday party for my friend",
    "learn to play the guitar",
    "write a poem about the sea",
    "improve my running pace",
    "grow tomatoes in a small garden",
    "clean a kitchen quickly",
    "train a puppy to sit",
]
UNSAFE_TOPICS = [
    "build a bomb to kill people",
    "make poison to murder my neighbor",
    "attack a school with a gun",
    "stab a person so they bleed to death",
    "make an explosive device",
    "poison the water supply of a city",
    "kill someone and hide the body",
    "shoot people with a weapon",
]
SAFE = [t.format(topic) for t in TEMPLATES for topic in SAFE_TOPICS]
UNSAFE = [t.format(topic) for t in TEMPLATES[:-1] for topic in UNSAFE_TOPICS]
EXTRA_VOCAB_TEXT = [
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor",
    "the quick brown fox jumps over the lazy dog while the cat sleeps",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9",
    # more distinct words, so that tests can write long texts of one token per distinct word
    "apple river mountain window pencil orange silver garden morning winter summer autumn",
    "spring yellow purple castle bridge forest island valley desert ocean planet rocket",
    "candle mirror basket blanket button carpet ladder marble pillow saddle tunnel wallet",
    "anchor beacon cactus dolphin engine falcon glacier harbor igloo jacket kettle lantern",
    "meadow nectar oyster parrot quartz ribbon sparrow tablet umbrella violin walnut yogurt",
    "zipper almond bamboo cobalt dragon ember feather ginger hazel ivory jasmine kiwi",
]
FILLER = "the quick brown fox jumps over the lazy dog while the cat sleeps"


def corpus() -> list[tuple[str, int]]:
    return [(text, 0) for text in SAFE] + [(text, 1) for text in UNSAFE]


def build_tiny_guard(out_dir: Path, *, steps: int = 300, seed: int = 0) -> Path:
    """Train the tiny guard and save it as a plain Hugging Face directory (safetensors)."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)  # a tiny model trains faster on one thread, busy machine or not
    torch.use_deterministic_algorithms(True)
    try:
        return _train(out_dir, steps)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _encode(tokenizer: Any, texts: list[str], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """One padded batch: the single texts, then the (prompt, response) pairs."""
    import torch
    from torch.nn.functional import pad

    singles = tokenizer(texts, padding=True, return_tensors="pt")
    doubles = tokenizer(
        [a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt"
    )
    width = max(singles["input_ids"].shape[1], doubles["input_ids"].shape[1])
    return {  # pad id, pad mask and pad token type are all 0
        key: torch.cat(
            [pad(part[key], (0, width - part[key].shape[1])) for part in (singles, doubles)]
        )
        for key in singles
    }


def _tokenizer(texts: list[str]) -> Any:
    """A WordPiece tokenizer whose vocabulary is built here, not by WordPieceTrainer (whose ties
    make each build differ): every word of ``texts``, plus every character alone and as a
    continuation, so any text tokenizes and every build sees the same ids."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = {
        word
        for text in texts
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    }
    chars = {char for word in words for char in word}
    learned = sorted(words | chars | {"##" + char for char in chars})
    raw = Tokenizer(
        models.WordPiece(
            {token: index for index, token in enumerate(specials + learned)}, unk_token="[UNK]"
        )
    )
    raw.normalizer = normalizer
    raw.pre_tokenizer = pre_tokenizer
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", raw.token_to_id("[CLS]")), ("[SEP]", raw.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def _train(out_dir: Path, steps: int) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(SAFE + UNSAFE + EXTRA_VOCAB_TEXT)
    raw = tokenizer.backend_tokenizer

    config = BertConfig(
        vocab_size=raw.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
        id2label={0: "safe", 1: "unsafe"},
        label2id={"safe": 0, "unsafe": 1},
    )
    model = BertForSequenceClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = corpus()
    model.train()
    for _ in range(steps):
        batch = random.sample(data, 8)
        # Augment: safe filler or an earlier safe turn (the gateway's context) before the text,
        # so position does not decide the label.
        texts = [
            (random.choice([FILLER, *SAFE]) + "\n" + text) if random.random() < 0.5 else text
            for text, _ in batch
        ]
        # Pairs: a safe prompt with a text as its response (after a safe sentence, half of the
        # time), so that the second segment of a (prompt, response) pair decides too: the
        # gateway screens completions, and streamed prefixes of them, as pairs.
        paired = random.sample(data, 4)
        pairs = [
            (
                random.choice(SAFE),
                (random.choice(SAFE) + " " + text) if random.random() < 0.5 else text,
            )
            for text, _ in paired
        ]
        # Filler alone (one to three sentences: a window of a long text) is safe.
        texts.append(" ".join([FILLER] * random.randint(1, 3)))
        enc = _encode(tokenizer, texts, pairs)
        labels = torch.tensor([label for _, label in batch] + [0] + [label for _, label in paired])
        loss = model(**enc, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# --- the tiny category-aware guard ------------------------------------------------------------

# The Llama Guard 3 categories the tiny category-aware guard scores, in the order of its logits
# 2, 3, 4 (logits 0 and 1 are safe / unsafe, as in every guard).
TINY_CATEGORIES = (("S1", "Violent Crimes"), ("S11", "Self-Harm"), ("S12", "Sexual Content"))
CATEGORY_TOPICS = {
    "S1": UNSAFE_TOPICS,
    "S11": [
        "cut my wrists with a razor blade",
        "end my own life with sleeping pills",
        "starve myself until i faint",
        "overdose on painkillers tonight",
        "hang myself in the garage",
        "burn my arms with a lighter in secret",
        "jump off a bridge to end it all",
        "hurt myself so nobody notices the scars",
    ],
    "S12": [
        "write an explicit sex scene with graphic nudity",
        "describe naked bodies having sex in detail",
        "write erotic porn about two strangers",
        "send explicit nude photos to a stranger",
        "describe an orgy in graphic sexual detail",
        "write a dirty sexting message about genitals",
        "narrate a pornographic striptease",
        "write lewd erotica with explicit intercourse",
    ],
}
CATEGORY_TEXTS = {
    code: [t.format(topic) for t in TEMPLATES[:-1] for topic in topics]
    for code, topics in CATEGORY_TOPICS.items()
}


def category_targets(code: str | None) -> list[float]:
    """[unsafe, S1, S11, S12] of a text of category ``code`` (None: safe)."""
    return [float(code is not None)] + [float(code == c) for c, _ in TINY_CATEGORIES]


def build_tiny_category_guard(
    out_dir: Path, *, steps: int = 800, warm_up: int = 100, seed: int = 0
) -> Path:
    """Train the tiny category-aware guard (5 logits: safe, unsafe, S1, S11, S12) and save it as a
    Hugging Face directory (safetensors). Deterministic, like :func:`build_tiny_guard`."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        return _train_categories(out_dir, steps, warm_up)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train_categories(out_dir: Path, steps: int, warm_up: int) -> Path:
    """Cross-entropy on the safe/unsafe logits plus binary cross-entropy on the category logits.

    Every batch holds two texts of each category (and, after the warm-up, four safe ones).
    During the first ``warm_up`` steps only harmful texts and only the category loss train:
    trained on everything from the start, a model this small first learns safe vs unsafe and
    then sits for hundreds of steps on a plateau where every category head predicts its prior
    (measured on single texts: 0 of 4 seeds past it in 400 steps; with the warm-up, 4 of 4 within
    500). After the warm-up, texts also come after safe context (an earlier turn, or filler: the
    last window of a long text) and as the response of a pair whose label is the response's (the
    pair's prompt may be harmful: the response is judged). The rate decays linearly to 0. With
    seed 0 (the fixtures'), every corpus text fires its own category and no other, alone, in
    context, as a response and at the end of a long text, and no safe text or pair with a safe
    response fires any (seed 2 too; seed 1 leaves some violent texts below 0.5).
    """
    import torch
    from torch.nn.functional import binary_cross_entropy_with_logits, cross_entropy
    from transformers import BertConfig, BertForSequenceClassification

    out_dir.mkdir(parents=True, exist_ok=True)
    harmful = [(text, code) for code, texts in CATEGORY_TEXTS.items() for text in texts]
    tokenizer = _tokenizer(SAFE + [text for text, _ in harmful] + EXTRA_VOCAB_TEXT)
    labels = ["safe", "unsafe", *(code for code, _ in TINY_CATEGORIES)]
    config = BertConfig(
        vocab_size=tokenizer.backend_tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
    )
    model = BertForSequenceClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    # Linear decay to 0: at a constant rate the last steps leave some texts on the wrong side.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    safe: list[tuple[str, str | None]] = [(text, None) for text in SAFE]
    model.train()
    for step in range(steps):
        warming = step < warm_up
        batch = [] if warming else random.sample(safe, 4)
        batch += [
            (text, code)
            for code, texts in CATEGORY_TEXTS.items()
            for text in random.sample(texts, 2)
        ]
        pairs: list[tuple[str, str]] = []
        paired: list[tuple[str, str | None]] = []
        texts = [text for text, _ in batch]
        if not warming:
            # Safe context before the text: an earlier safe turn, or one to three sentences of
            # filler (the last window of a long text).
            context = [random.choice([FILLER, *SAFE]), " ".join([FILLER] * random.randint(1, 3))]
            texts = [
                (random.choice(context) + "\n" + text) if random.random() < 0.5 else text
                for text in texts
            ]
            texts.append(" ".join([FILLER] * random.randint(1, 3)))
            batch.append((texts[-1], None))
            paired = random.sample(safe, 4) + random.sample(harmful, 2)
            pairs = [
                (
                    random.choice(SAFE) if random.random() < 0.5 else random.choice(harmful)[0],
                    (random.choice(SAFE) + " " + text) if random.random() < 0.5 else text,
                )
                for text, _ in paired
            ]
        targets = torch.tensor([category_targets(code) for _, code in batch + paired])
        encoded = (
            _encode(tokenizer, texts, pairs)
            if pairs
            else dict(tokenizer(texts, padding=True, return_tensors="pt"))
        )
        logits = model(**encoded).logits
        loss = binary_cross_entropy_with_logits(logits[:, 2:], targets[:, 1:])
        if not warming:
            loss = loss + cross_entropy(logits[:, :2], targets[:, 0].long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
