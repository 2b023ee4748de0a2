"""Conversations -> token ids, labels and the place where the video goes.

A conversation is the LLaVA/VideoChat2 list of turns
``[{"from": "human", "value": ...}, {"from": "gpt", "value": ...}, ...]``. It is
rendered with the recipe's chat template into one string, split once at the video
placeholder, and tokenized; answer tokens are found by their character offsets (not by
tokenizing pieces separately, which shifts spaces at the boundaries with SentencePiece
tokenizers). Labels are -100 everywhere but the assistant's answers and their end marker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.config.recipe import PromptSpec
from components.errors import UserError

IGNORE = -100


class ConversationError(UserError, ValueError):
    """A conversation that cannot be encoded (no turns, a turn of unknown role, two videos)."""


@dataclass
class EncodedConversation:
    ids: list[int]
    labels: list[int]
    video_position: int  # index in ``ids`` where the visual tokens are inserted
    question: str  # the first user message without the placeholder (InstructBLIP's Q-Former input)
    # Per token: where a continuous coordinate lies between its token and the next one (LAPE), -1 elsewhere.
    fractions: list[float] | None = None

    @property
    def parts(self) -> dict[str, int]:
        answer = sum(1 for label in self.labels if label != IGNORE)
        return {"text_before_video": self.video_position, "text_after_video": len(self.ids) - self.video_position,
                "answer": answer}


HUMAN_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "assistant"}


def render(template: PromptSpec, turns: list[dict], for_generation: bool = False) -> tuple[str, list[tuple[int, int]], str]:
    """The conversation as text, the character spans of the answers, and the first question."""
    if not turns:
        raise ConversationError("the conversation has no turns")
    text = template.system
    answers: list[tuple[int, int]] = []
    question = ""
    placeholder = template.video_placeholder
    seen_video = template.video_position == "before_conversation"
    if seen_video:
        text += placeholder
    for index, turn in enumerate(turns):
        role = turn.get("from", turn.get("role"))
        message = turn.get("value", turn.get("content"))
        if not isinstance(message, str):
            raise ConversationError(f"turn {index} has no text ('value')")
        if role in HUMAN_ROLES:
            if placeholder in message:
                if template.video_position == "before_conversation":
                    message = message.replace(placeholder, "").strip()  # the video already stands before the conversation
                elif seen_video or message.count(placeholder) > 1:
                    raise ConversationError(f"turn {index}: more than one {placeholder} in the conversation")
                else:
                    seen_video = True
                question = question or message.replace(placeholder, "").strip()
            else:
                question = question or message.strip()
                if not seen_video:
                    before = template.video_position == "before_question"
                    message = f"{placeholder}\n{message}" if before else f"{message}\n{placeholder}"
                    seen_video = True
            text += template.user.format(message=message) + template.assistant
        elif role in ASSISTANT_ROLES:
            start = len(text)
            text += message + template.answer_end
            answers.append((start, len(text)))
        else:
            raise ConversationError(f"turn {index} has role {role!r}; expected human/user or gpt/assistant")
    if for_generation and turns[-1].get("from", turns[-1].get("role")) in ASSISTANT_ROLES:
        raise ConversationError("a prompt for generation must end with a user turn")
    return text, answers, question


def encode(tokenizer, template: PromptSpec, turns: list[dict], for_generation: bool = False, add_bos: bool = True,
           codec=None) -> EncodedConversation:
    """``codec`` (a position scheme's text codec) rewrites coordinate markup into coordinate tokens first."""
    text, answers, question = render(template, turns, for_generation)
    coordinates: list[tuple[int, int, float]] = []
    if codec is not None:
        text, answers, coordinates = _rewrite(codec, text, answers)
    before, _, after = text.partition(template.video_placeholder)
    ids_before = _ids(tokenizer, before)
    if add_bos and tokenizer.bos_token_id is not None:
        ids_before = [tokenizer.bos_token_id] + ids_before
    offset = len(before) + len(template.video_placeholder)
    encoded_after = tokenizer(after, add_special_tokens=False, return_offsets_mapping=True)
    ids_after = list(encoded_after["input_ids"])
    spans = np.asarray(encoded_after["offset_mapping"], dtype=np.int64).reshape(-1, 2) + offset
    in_answer = _covered(spans, answers, len(text))
    labels_after = [token if keep else IGNORE for token, keep in zip(ids_after, in_answer.tolist())]
    fractions_after = _coordinate_fractions(spans, coordinates, len(text))
    return EncodedConversation(
        ids=ids_before + ids_after,
        labels=[IGNORE] * len(ids_before) + labels_after,
        video_position=len(ids_before),
        question=question,
        fractions=[-1.0] * len(ids_before) + fractions_after if codec is not None else None,
    )


def _covered(spans: np.ndarray, answers: list[tuple[int, int]], length: int) -> np.ndarray:
    """Per token (character span [start, end)): does it overlap an answer? An empty token counts
    when its position lies inside one. Vectorised: a sample's tokens times its turns add up."""
    inside = np.zeros(length + 1, dtype=bool)
    for start, end in answers:
        inside[start:end] = True
    prefix = np.concatenate([[0], np.cumsum(inside)])
    starts, ends = spans[:, 0], spans[:, 1]
    return np.where(ends > starts, prefix[ends] - prefix[starts] > 0, inside[starts])


def _coordinate_fractions(spans: np.ndarray, coordinates: list[tuple[int, int, float]], length: int) -> list[float]:
    """Per token: the fraction of the coordinate token it lies in (LAPE's blend), else -1."""
    if not coordinates:
        return [-1.0] * len(spans)
    owner = np.full(length + 1, -1, dtype=np.int64)
    for index, (start, end, _) in enumerate(coordinates):
        owner[start:end] = index
    ends_of = np.array([end for _, end, _ in coordinates] + [0])
    values = np.array([fraction for _, _, fraction in coordinates] + [-1.0])
    starts, ends = spans[:, 0], spans[:, 1]
    index = owner[starts]
    valid = (ends > starts) & (index >= 0) & (ends <= ends_of[index])
    return np.where(valid, values[index], -1.0).tolist()


def _rewrite(codec, text: str, answers: list[tuple[int, int]]):
    """Apply the codec and carry the answer spans over to the rewritten text."""
    rewritten, coordinates, mapping = codec.rewrite(text)
    return rewritten, [(mapping(a), mapping(b)) for a, b in answers], coordinates


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def question_turns(question: str) -> list[dict]:
    return [{"from": "human", "value": question}]


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters a token for English BPE vocabularies)."""
    return max(1, round(len(text) / 4))
