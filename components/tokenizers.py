"""Tokenizers: the pretrained model's own, or a byte-level one for tiny offline recipes.

The byte tokenizer is a real Hugging Face fast tokenizer (it saves and loads like any
other) whose vocabulary is the 256 bytes plus a few special tokens, so tiny recipes
train and generate with no download.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from components.config import RecipeError
from components.errors import error_reason

BYTE_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(BYTE_SPECIALS)}
    for char in sorted(alphabet):
        vocab[char] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": []})
    return tokenizer


def load_tokenizer(spec: str | None, pretrained: str | None, owner: str, subfolder: str | None = None):
    """``spec`` "byte", a directory or hub id; None means the pretrained model's own tokenizer."""
    if spec == "byte":
        return byte_tokenizer()
    source = spec or pretrained
    if not source:
        raise RecipeError(f"{owner}: no tokenizer: set tokenizer: (\"byte\", a directory or a hub id) or pretrained:")
    try:
        kwargs = {"subfolder": subfolder} if subfolder and not spec else {}
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        raise RecipeError(
            f"{owner}: could not load the tokenizer from {source!r} ({type(error).__name__}: {error_reason(error, 160)}); "
            "point tokenizer: at a local directory or use tokenizer: byte for tiny recipes"
        ) from None
    if tokenizer.pad_token is None:
        # Llama tokenizers ship without a pad token; padding positions are masked out anyway.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer
