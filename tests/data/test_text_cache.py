"""Tokenised conversations are kept across epochs: read back equal to a fresh tokenisation, never shared
between callers, and never past the token budget."""

from __future__ import annotations

from zoo.config.recipe import recipe_from_dict
from zoo.data.dataset import build_dataset
from zoo.data.prompting import EncodedConversation
from zoo.data.text_cache import EncodedTextCache
from zoo.model.video_llm import build_model
from tests.helpers import tiny_recipe


def test_a_dataset_tokenises_each_conversation_once_and_reads_back_the_same(direction_dataset):
    recipe = recipe_from_dict(tiny_recipe(frames=4))
    model = build_model(recipe)
    dataset = build_dataset(recipe, model, direction_dataset(4, frames=4))
    calls = []
    tokenizer = dataset.tokenizer

    class Counting:
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, *args, **kwargs):
            calls.append(args[0])
            return tokenizer(*args, **kwargs)

    dataset.tokenizer = Counting()
    first = [dataset.encode_text(i) for i in range(4)]
    tokenised = len(calls)
    again = [dataset.encode_text(i) for i in range(4)]
    assert tokenised > 0 and len(calls) == tokenised  # the second epoch tokenises nothing
    assert again == first and all(a is not b for a, b in zip(again, first))
    again[0].ids.append(7)  # a caller's change stays the caller's
    assert dataset.encode_text(0) == first[0]
    assert dataset[1].conversation == first[1]


def test_the_cache_keeps_nothing_past_its_token_budget():
    cache = EncodedTextCache(token_budget=5)
    three = EncodedConversation([1, 2, 3], [-100, 2, 3], 1, "q", [-1.0, 0.25, -1.0])
    cache.put(0, three)
    cache.put(1, three)  # 3 + 3 > 5: left to be tokenised each time
    assert cache.get(0) == three and cache.get(1) is None and cache.tokens == 3
    assert cache.get(0).fractions == [-1.0, 0.25, -1.0]
