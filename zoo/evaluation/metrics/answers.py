"""Reading a model's free text as a yes/no answer or as one option of a multiple-choice question.

Both readers prefer to say "could not tell" (None) over guessing: an unreadable answer is
scored as wrong, and a wrong guess that happens to match would inflate a score.

Yes / no (``parse_yes_no``)
    The answer's opening decides. Choices, in the order they are checked:

    * a hedge at the start ("not sure", "I don't know", "maybe", "it is unclear", "cannot
      tell") -> None, even when a yes or no follows: the model did not commit;
    * "yes and no" / "yes or no" -> None;
    * a polite denial ("I don't think so", "I don't believe so", "not really") -> False,
      a polite assent ("I think so", "I believe so", "of course") -> True;
    * a leading yes-word (yes, yeah, yep, yup, correct, true, indeed, certainly, definitely,
      absolutely, affirmative, sure) -> True; a leading no-word (no, nope, nah, not, never,
      false, incorrect, negative, nobody, none) -> False. "No one is in the video" and
      "Nobody is skiing" therefore read as no: UNSCENE asks "Is the person ...?" / "Is
      this ...?", where a denial of the person is a no;
    * otherwise the first yes/no that opens a later sentence ("The video shows a beach.
      No, ...") or follows "answer is" / "answer:";
    * otherwise None: a statement such as "The person is skiing" is not read, because
      deciding whether it agrees with the question would need the question.

Multiple choice (``parse_choice``)
    In order: a letter that opens the answer ("(B)", "B.", "B)", "B:", "B" alone); a letter
    after "answer", "option" or "choice" ("Answer: B", "Best option: (C)", "option b");
    a parenthesised letter anywhere ("I pick (C)"); then the option text itself (exact,
    then the one option the answer contains, the longest when options contain one
    another, then the one option that contains the whole answer). Two different letters
    at the same level, or two unrelated options mentioned, -> None. A bare capital letter
    followed by words ("A person ...") is read as a letter only when those words are that
    option's text, because otherwise it is usually the article "a". Letters beyond the
    number of candidates are ignored.
"""

from __future__ import annotations

import re
import string

_HEDGES = (
    "not sure", "unsure", "i'm not sure", "i am not sure", "im not sure", "i don't know", "i do not know",
    "i dont know", "i can't tell", "i cannot tell", "can't tell", "cannot tell", "hard to say",
    "difficult to say", "impossible to say", "it is unclear", "it's unclear", "unclear", "uncertain", "unknown",
    "maybe", "perhaps", "possibly", "it is possible", "it's possible", "cannot be determined",
    "can't be determined", "cannot determine", "can't determine", "i cannot determine", "i can't determine",
    "it is not possible to determine", "it is not possible to tell", "it's not possible to tell",
    "i am unable", "i'm unable", "unable to",
)
_POLITE_NO = ("i don't think so", "i do not think so", "i dont think so", "i don't believe so",
              "i do not believe so", "not really", "not at all", "of course not", "certainly not",
              "definitely not", "absolutely not")
_POLITE_YES = ("i think so", "i believe so", "of course")
_YES_WORDS = ("yes", "yeah", "yep", "yup", "correct", "true", "indeed", "certainly", "definitely",
              "absolutely", "affirmative", "sure")
_NO_WORDS = ("no", "nope", "nah", "not", "never", "false", "incorrect", "negative", "nobody", "none")

# Text a model may put before the answer itself: "Answer: yes", "**Yes**", "Assistant: (B)".
_ANSWER_PREFIX = re.compile(
    r"^(?:(?:the\s+)?(?:final\s+|correct\s+|best\s+)?answer(?:\s+is)?\s*[:\-]?|my\s+answer\s+is\s*:?"
    r"|response\s*:|assistant\s*:)\s*",
    re.IGNORECASE,
)
_DECORATION = "*_`\"'“”‘’ \t\n"
NOT_FOUND = "not found"  # a step found nothing, as opposed to None: it found something ambiguous


def normalised(text: str) -> str:
    """Lower case, straight apostrophes, markdown and quotes stripped from the ends."""
    text = text.replace("’", "'").replace("‘", "'").strip(_DECORATION).lower()
    return re.sub(r"\s+", " ", text)


def opens_with(text: str, phrase: str) -> bool:
    """``text`` starts with ``phrase`` as whole words ("no" opens "no, ..." but not "noon")."""
    return text.startswith(phrase) and (len(text) == len(phrase) or not text[len(phrase)].isalnum())


def strip_answer_prefix(text: str) -> str:
    """ "answer: yes" -> "yes"; a prefix is only removed when something follows it."""
    stripped = _ANSWER_PREFIX.sub("", text, count=1).strip(_DECORATION)
    return stripped or text


def opening_yes_no(text: str) -> bool | None | str:
    """The verdict of the answer's opening words; NOT_FOUND when the opening has none."""
    for phrase in sorted(_HEDGES, key=len, reverse=True):
        if opens_with(text, phrase):
            return None
    if re.match(r"yes\s*(?:and|or|/)\s*no\b", text):
        return None
    if any(opens_with(text, phrase) for phrase in _POLITE_NO):
        return False
    if any(opens_with(text, phrase) for phrase in _POLITE_YES):
        return True
    if any(opens_with(text, word) for word in _YES_WORDS):
        return True
    if any(opens_with(text, word) for word in _NO_WORDS):
        return False
    return NOT_FOUND


_LATER_YES_NO = re.compile(r"(?:[.!?;:\n]\s*|\banswer\s+is\s+|\banswer\s*:\s*)[*\"']*(yes|no)\b")


def parse_yes_no(text: str | None) -> bool | None:
    """True for yes, False for no, None when the answer does not commit (see the module notes)."""
    if not text or not text.strip():
        return None
    text = strip_answer_prefix(normalised(text))
    verdict = opening_yes_no(text)
    if verdict != NOT_FOUND:
        return verdict
    later = _LATER_YES_NO.search(text)
    if later:
        return later.group(1) == "yes"
    return None


def option_text(text: str) -> str:
    """An option or answer reduced to its words, for comparing texts."""
    text = normalised(text)
    text = re.sub(r"[^\w\s']", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def contains_words(haystack: str, needle: str) -> bool:
    return bool(needle) and re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack) is not None


_LEADING_LETTER = re.compile(r"^\(([a-z])\)|^([a-z])\s*[.):,](?=\s|$)|^([a-z])$", re.IGNORECASE)
_KEYWORD_LETTER = re.compile(
    r"\b(?:answer|option|choice)\b\s*(?:is\s*)?[:\-]?\s*(?:option\s*)?"
    r"(?:\(([a-z])\)|([a-z])(?=\s*[.):,]|\s*$)|([A-Z])\b)",
    re.IGNORECASE,
)
_PARENTHESISED_LETTER = re.compile(r"\(([a-z])\)", re.IGNORECASE)


def letter_index(letter: str, count: int) -> int | None:
    index = string.ascii_uppercase.index(letter.upper())
    return index if index < count else None


def single_letter(letters: list[str], count: int) -> int | None | str:
    """The one option named by ``letters`` (out-of-range ones ignored); None if several; NOT_FOUND if none."""
    indices = {i for i in (letter_index(letter, count) for letter in letters) if i is not None}
    if not indices:
        return NOT_FOUND
    return indices.pop() if len(indices) == 1 else None


def keyword_letters(text: str) -> list[str]:
    letters = []
    for match in _KEYWORD_LETTER.finditer(text):
        parenthesised, punctuated, capital = match.groups()
        # A bare letter after a keyword counts only in capitals: "answer is a man" is not option A.
        if capital is not None and not capital.isupper():
            continue
        letters.append(parenthesised or punctuated or capital)
    return letters


def choice_by_letter(text: str, candidates: list[str]) -> int | None | str:
    count = len(candidates)
    leading = _LEADING_LETTER.match(text)
    if leading:
        index = letter_index(next(g for g in leading.groups() if g), count)
        if index is not None:
            # "(A) skiing (B) surfing" echoes the options rather than choosing one.
            rest = text[leading.end():]
            others = single_letter(keyword_letters(rest) + _PARENTHESISED_LETTER.findall(rest), count)
            return index if others in (NOT_FOUND, index) else None
    bare = re.match(r"^([A-Z])\s+(\S.*)$", text)
    if bare:
        index = letter_index(bare.group(1), count)
        if index is not None and option_text(bare.group(2)) == option_text(candidates[index]):
            return index
    for letters in (keyword_letters(text), _PARENTHESISED_LETTER.findall(text)):
        found = single_letter(letters, count)
        if found != NOT_FOUND:
            return found
    return NOT_FOUND


def choice_by_text(text: str, candidates: list[str]) -> int | None:
    answer = option_text(text)
    options = [option_text(c) for c in candidates]
    if not answer:
        return None
    exact = [i for i, option in enumerate(options) if option == answer]
    if exact:
        return exact[0] if len(exact) == 1 else None
    mentioned = [i for i, option in enumerate(options) if contains_words(answer, option)]
    # An option inside a longer mentioned option ("ski" in "ski jumping") is not a second answer.
    mentioned = [i for i in mentioned
                 if not any(j != i and options[j] != options[i] and contains_words(options[j], options[i])
                            for j in mentioned)]
    if mentioned:
        return mentioned[0] if len(mentioned) == 1 else None
    if len(answer) >= 3:
        containing = [i for i, option in enumerate(options) if contains_words(option, answer)]
        if len(containing) == 1:
            return containing[0]
    return None


def parse_choice(text: str | None, candidates: list[str]) -> int | None:
    """The index of the option ``text`` picks among ``candidates``; None when absent or ambiguous."""
    if not text or not text.strip() or not candidates:
        return None
    cleaned = strip_answer_prefix(text.replace("’", "'").strip(_DECORATION))
    cleaned = re.sub(r"^(?:best\s+option|option|choice)\s*(?:is\s*)?:?\s*(?=\(?[A-Za-z]\b)", "", cleaned,
                     flags=re.IGNORECASE)
    by_letter = choice_by_letter(cleaned, candidates)
    if by_letter != NOT_FOUND:
        return by_letter
    return choice_by_text(cleaned, candidates)
