"""Tokenised conversations kept across epochs, compactly, up to a token budget.

Why: at the tiny sizes the suite and the benchmarks run, tokenising a sample's conversation costs as much
as a sixth of loading it (benchmarks/README.md, the loader's profile), and the result never changes: the
entry, the tokenizer and the template are fixed for the dataset's life. Kept as int32 arrays (about 8 bytes
a token for ids and labels, where Python lists of ints take over 70), so the default budget of 16M tokens
stays near 130 MB per process; what does not fit is tokenised each time, as before.
"""

from __future__ import annotations

import numpy as np

from zoo.data.prompting import EncodedConversation

TOKEN_BUDGET = 16_000_000


class EncodedTextCache:
    def __init__(self, token_budget: int = TOKEN_BUDGET):
        self.token_budget = token_budget
        self.tokens = 0
        self.kept: dict[int, tuple] = {}

    def get(self, index: int) -> EncodedConversation | None:
        """A fresh EncodedConversation (its lists are the caller's to change), or None if not kept."""
        packed = self.kept.get(index)
        if packed is None:
            return None
        ids, labels, video_position, question, fractions = packed
        return EncodedConversation(ids.tolist(), labels.tolist(), video_position, question,
                                   None if fractions is None else fractions.tolist())

    def put(self, index: int, encoded: EncodedConversation) -> None:
        if index in self.kept or self.tokens + len(encoded.ids) > self.token_budget:
            return
        fractions = None if encoded.fractions is None else np.asarray(encoded.fractions, dtype=np.float64)
        self.kept[index] = (np.asarray(encoded.ids, dtype=np.int32), np.asarray(encoded.labels, dtype=np.int32),
                            encoded.video_position, encoded.question, fractions)
        self.tokens += len(encoded.ids)
