"""The prompts the Fashion-MNIST pipeline is trained on, and its word-level CLIP tokenizer.

Each class has templates over its name ("a photo of a sneaker", "a sneaker", "a picture of a
sneaker"); the generic prompt "a photo of a piece of clothing" covers every class, at the data's
class shares. The tokenizer is a ``CLIPTokenizer`` built offline whose vocabulary holds each
word of these prompts as one token (plus the single letters, so any other lower-case text still
tokenizes, letter by letter).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .data import CLASSES

__all__ = [
    "NAMES",
    "TEMPLATES",
    "GENERIC_PROMPT",
    "class_prompt",
    "class_prompts",
    "all_prompts",
    "vocabulary_words",
    "fashion_tokenizer",
    "fashion_t5_tokenizer",
    "MAX_LENGTH",
]

NAMES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
"""The name each class's prompts use (label k → ``NAMES[k]``)."""

TEMPLATES = ("a photo of {}", "{}", "a picture of {}")
"""The class-prompt templates; the first is the class's default prompt."""

GENERIC_PROMPT = "a photo of a piece of clothing"
"""The prompt trained on every class at once: the base model's class shares π_c come from it."""

MAX_LENGTH = 16
"""Tokens per prompt (bos, words, eos, padding): the longest prompt has 9."""


def _with_article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def class_prompts(c: int) -> tuple[str, ...]:
    """Every training prompt of class ``c`` (one per template)."""
    if not isinstance(c, int) or not 0 <= c < len(CLASSES):
        raise ValueError(f"class must be an integer in 0..{len(CLASSES) - 1}, got {c!r}")
    return tuple(t.format(_with_article(NAMES[c])) for t in TEMPLATES)


def class_prompt(c: int) -> str:
    """The default prompt of class ``c``: "a photo of a sneaker"."""
    return class_prompts(c)[0]


def all_prompts() -> tuple[str, ...]:
    """Every prompt the pipeline was trained on: the class prompts, then the generic one."""
    return tuple(p for c in range(len(CLASSES)) for p in class_prompts(c)) + (GENERIC_PROMPT,)


def vocabulary_words() -> list[str]:
    """The words of all prompts as CLIP's pre-tokenizer splits them ("t-shirt" → t, -, shirt)."""
    import re

    words = {w for p in all_prompts() for w in re.findall(r"[a-z]+|[^\sa-z]", p)}
    return sorted(words)


def fashion_tokenizer(max_length: int = MAX_LENGTH):
    """A CLIPTokenizer whose vocabulary has each prompt word as a single token.

    Built from a temporary folder (no hub access): vocab.json holds CLIP's two special tokens,
    the letters and the words (each word-final with ``</w>``), merges.txt the left-to-right merge
    chain of every word, so BPE assembles each word into its own token. Checked on every word:
    a merge of one word's chain can cut another's, so the chains are reordered until none does.
    """
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    # longest words first: their merge chains then rank before the short words' first merges
    # ("a n" of "an" would cut "sandal"); a word some earlier chain still cuts moves to the front
    order = sorted(vocabulary_words(), key=lambda w: (-len(w), w))
    for _ in range(len(order)):
        tok = _build(order, letters, max_length)
        cut = [w for w in order if len(tok(w, add_special_tokens=False).input_ids) != 1]
        if not cut:
            return tok
        order = cut + [w for w in order if w not in cut]
    raise RuntimeError(f"no merge order keeps {cut} whole")


def _build(words, letters, max_length):
    """A CLIPTokenizer over the letters and ``words``, each word's merge chain in turn."""
    from transformers import CLIPTokenizer

    vocab = ["<|startoftext|>", "<|endoftext|>"] + letters + [f"{c}</w>" for c in letters]
    merges = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        current = parts[0]
        for nxt in parts[1:]:
            merges.append(f"{current} {nxt}")
            current += nxt
            if current not in vocab:
                vocab.append(current)
        if current not in vocab:  # one-character words and punctuation
            vocab.append(current)
    merges = list(dict.fromkeys(merges))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        return CLIPTokenizer.from_pretrained(
            tmp, model_max_length=max_length, local_files_only=True
        )


def fashion_t5_tokenizer(max_length: int = 256):
    """A T5 tokenizer (Unigram over whitespace words, in memory, no sentencepiece file) whose
    vocabulary holds each word of the prompts as one ``▁word`` piece, plus the single letters
    and "-" so any other lower-case text still tokenizes. A whole-word piece scores −1, a
    letter ≤ −2.5, so the best segmentation of a prompt word is the word itself. 256 tokens:
    SD3's pipeline pads T5's input to its ``max_sequence_length`` (default 256)."""
    from transformers import T5TokenizerFast

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(c, -3.0) for c in letters + ["-"]] + [("▁" + c, -2.5) for c in letters]
    seen = {piece for piece, _ in vocab}
    words = sorted({w for p in all_prompts() for w in p.split()})
    vocab += [("▁" + w, -1.0) for w in words if "▁" + w not in seen]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=max_length)
