"""Turn a vision-language model's answer into a number: from next-token logits, or from sampled text.

Both readers are pure functions (no model, no tokenizer object) so they can be tested on crafted input.

- `option_token_ids` finds the single tokens that spell each answer option ("Yes", " yes", "YES", "3", " 3").
- `expected_answer` reads the probability of each option from the logits at the answer position and returns
  the expected value over the options: deterministic, one forward pass, no sampling. It also returns the
  probability mass the model put on valid answers, a measure of how well it followed the instruction.
- `parse_answer` reads one sampled text ("Yes.", "Score: 4/5", "... so the answer is no"); `mean_of_samples`
  averages K of them (test-time scaling).

Anything that cannot be read becomes NaN together with a one-line reason; nothing here raises on model output.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}
_NUMBER = r"\d+(?:\.\d+)?|" + "|".join(NUMBER_WORDS)
# "4/5", "4 / 5", "4 out of 5": the denominator is the scale, not the answer
_DENOMINATOR = re.compile(rf"\s*(?:/|out\s+of)\s*(?:{_NUMBER})\b", re.IGNORECASE)
_NUMBER_TOKEN = re.compile(rf"(?<![\w.])(?:{_NUMBER})(?![\w])", re.IGNORECASE)
# a number right after one of these words is the answer even when the text goes on ("Score: 3. The ...")
_CUE = re.compile(rf"\b(?:score|rating|answer|rate|grade)\b\W*(?:is\W*)?({_NUMBER})\b", re.IGNORECASE)


@dataclass(frozen=True)
class Answer:
    value: float           # NaN when unreadable
    reason: str = ""       # why it is NaN; empty when the value is valid
    mass: float = math.nan  # logits reader: probability the model put on any valid option


def is_numeric_option(option: str) -> bool:
    try:
        float(option)
    except ValueError:
        return False
    return True


def spelling_variants(option: str) -> list[str]:
    """The spellings a chat model may start its answer with: as written, lower, Capitalised, UPPER,
    each with and without a leading space (byte-level BPE tokenizers fold the space into the token)."""
    cases = dict.fromkeys([option, option.lower(), option.capitalize(), option.upper()])
    return list(dict.fromkeys([c for c in cases] + [" " + c for c in cases]))


def option_token_ids(encode: Callable[[str], Sequence[int]], options: Sequence[str]) -> tuple[list[list[int]], str]:
    """For each option, the ids of its spellings that are exactly one token under `encode`.

    Returns `(ids_per_option, reason)`; `reason` is non-empty when an option has no single-token spelling
    or two options share a token (then the logits cannot tell them apart)."""
    ids_per_option: list[list[int]] = []
    owner: dict[int, str] = {}
    for option in options:
        ids = []
        for spelling in spelling_variants(option):
            encoded = list(encode(spelling))
            if len(encoded) == 1 and encoded[0] not in ids:
                ids.append(int(encoded[0]))
        if not ids:
            return [], f"answer option {option!r} is not a single token for this tokenizer"
        for i in ids:
            if i in owner:
                return [], f"answer options {owner[i]!r} and {option!r} share token id {i}"
            owner[i] = option
        ids_per_option.append(ids)
    return ids_per_option, ""


def expected_answer(logits: np.ndarray, ids_per_option: Sequence[Sequence[int]], values: Sequence[float],
                    min_mass: float = 0.0) -> Answer:
    """Expected value of the answer under the model's next-token distribution, renormalised over the options.

    `logits` is the (vocab,) row at the answer position. The softmax runs over the whole vocabulary so
    `mass` is the real probability of answering with a valid option; below `min_mass` the model is not
    answering the question and the value is NaN."""
    logits = np.asarray(logits, dtype=np.float64).ravel()
    if not ids_per_option:
        return Answer(math.nan, "no answer tokens")
    if len(ids_per_option) != len(values):
        raise ValueError(f"{len(ids_per_option)} options but {len(values)} values")
    flat = [i for ids in ids_per_option for i in ids]
    if min(flat) < 0 or max(flat) >= logits.size:
        return Answer(math.nan, f"answer token id {max(flat)} outside the vocabulary of {logits.size}")
    if np.isnan(logits).any() or np.isposinf(logits).any():  # -inf is a masked token: probability 0
        return Answer(math.nan, "non-finite logits")
    finite = logits[np.isfinite(logits)]
    top = finite.max()
    log_z = top + math.log(np.sum(np.exp(finite - top)))
    probs = np.array([np.sum(np.exp(logits[list(ids)] - log_z)) for ids in ids_per_option])
    mass = float(probs.sum())
    if not mass > 0.0:
        return Answer(math.nan, "zero probability on every answer option", mass)
    if mass < min_mass:
        return Answer(math.nan, f"only {mass:.3g} probability on the answer options (min_answer_mass {min_mass})", mass)
    value = float(np.dot(probs / mass, np.asarray(values, dtype=np.float64)))
    return Answer(value, "", mass)


def parse_answer(text: str, options: Mapping[str, float]) -> Answer:
    """Read one generated answer.

    Numeric options ("0".."5"): the number after a cue word ("score: 4", "the answer is 3"), else the last
    number (chain-of-thought ends with its conclusion); "4/5" and "4 out of 5" count as 4. It must be one of
    the options' values. Word options ("Yes"/"No"): the first word if it is an option, else the last option
    word in the text."""
    if not options:
        raise ValueError("no answer options")
    stripped = text.strip()
    if not stripped:
        return Answer(math.nan, "empty answer")
    if all(is_numeric_option(o) for o in options):
        return _parse_number(stripped, {float(o): float(v) for o, v in options.items()})
    return _parse_word(stripped, {o.lower(): float(v) for o, v in options.items()})


def _as_number(token: str) -> float:
    token = token.lower()
    return float(NUMBER_WORDS[token]) if token in NUMBER_WORDS else float(token)


def _parse_number(text: str, values: dict[float, float]) -> Answer:
    cleaned = _DENOMINATOR.sub("", text)
    cue = _CUE.search(cleaned)
    if cue:
        number = _as_number(cue.group(1))
    else:
        found = _NUMBER_TOKEN.findall(cleaned)
        if not found:
            return Answer(math.nan, f"no number in {_excerpt(text)}")
        number = _as_number(found[-1])
    if number not in values:
        return Answer(math.nan, f"{number:g} is not one of {sorted(values)} in {_excerpt(text)}")
    return Answer(values[number])


def _parse_word(text: str, values: dict[str, float]) -> Answer:
    words = re.findall(r"[a-z]+", text.lower())
    if words and words[0] in values:
        return Answer(values[words[0]])
    hits = [w for w in words if w in values]
    if not hits:
        return Answer(math.nan, f"none of {sorted(values)} in {_excerpt(text)}")
    return Answer(values[hits[-1]])


def _excerpt(text: str, limit: int = 60) -> str:
    one_line = " ".join(text.split())
    return repr(one_line if len(one_line) <= limit else one_line[: limit - 1] + "…")


def mean_of_samples(answers: Sequence[Answer]) -> Answer:
    """Average of the readable sampled answers; NaN (with the first reason) when none is readable."""
    readable = [a.value for a in answers if not math.isnan(a.value)]
    if not answers:
        return Answer(math.nan, "no samples")
    if not readable:
        return Answer(math.nan, f"{len(answers)}/{len(answers)} sampled answers unreadable, e.g. {answers[0].reason}")
    return Answer(float(np.mean(readable)), "", len(readable) / len(answers))
