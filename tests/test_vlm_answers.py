"""The token-probability reader and the answer parser, on crafted logits and texts."""
import math

import numpy as np
import pytest

from featurestore.extractors._vlm_answers import (
    Answer, expected_answer, mean_of_samples, option_token_ids, parse_answer, spelling_variants,
)

YESNO = {"Yes": 1.0, "No": 0.0}
SCORE = {str(i): float(i) for i in range(6)}
VOCAB = {"Yes": 10, " Yes": 11, "yes": 12, "No": 20, " no": 21, "0": 30, "1": 31, "2": 32, "3": 33, "4": 34, "5": 35}


def encode(text):
    """Words in VOCAB are one token; anything else splits into one token per character."""
    return [VOCAB[text]] if text in VOCAB else [1000 + ord(c) for c in text]


def logits_with(probabilities: dict[int, float], vocab: int = 64) -> np.ndarray:
    """Logits whose softmax puts exactly `probabilities` on those ids, nothing on the other answer tokens
    and the rest evenly on the filler ids."""
    filler = [i for i in range(vocab) if i not in VOCAB.values()]
    logits = np.full(vocab, -np.inf)
    logits[filler] = np.log((1.0 - sum(probabilities.values())) / len(filler))
    for i, q in probabilities.items():
        logits[i] = np.log(q) if q > 0 else -np.inf
    return logits + 7.0  # an offset changes nothing after the softmax


def test_option_token_ids_collects_single_token_spellings():
    ids, reason = option_token_ids(encode, ["Yes", "No"])
    assert reason == ""
    assert ids == [[10, 12, 11], [20, 21]]


def test_option_token_ids_reports_multi_token_and_shared_options():
    ids, reason = option_token_ids(encode, ["Yes", "Maybe"])
    assert ids == [] and "'Maybe' is not a single token" in reason
    ids, reason = option_token_ids(lambda s: [5], ["Yes", "No"])
    assert ids == [] and "share token id 5" in reason


def test_spelling_variants_include_case_and_leading_space():
    assert set(spelling_variants("yes")) == {"yes", "Yes", "YES", " yes", " Yes", " YES"}
    assert spelling_variants("3") == ["3", " 3"]


def test_expected_answer_is_the_renormalised_expectation():
    ids, _ = option_token_ids(encode, list(SCORE))
    logits = logits_with({30 + i: p for i, p in enumerate([0.0, 0.0, 0.1, 0.2, 0.3, 0.2])})
    answer = expected_answer(logits, ids, list(SCORE.values()))
    assert answer.mass == pytest.approx(0.8)
    assert answer.value == pytest.approx((2 * 0.1 + 3 * 0.2 + 4 * 0.3 + 5 * 0.2) / 0.8)
    assert answer.reason == ""


def test_expected_answer_sums_the_spellings_of_one_option():
    ids, _ = option_token_ids(encode, list(YESNO))
    # P(Yes) = 0.2 + 0.3 (two spellings), P(No) = 0.25
    answer = expected_answer(logits_with({10: 0.2, 11: 0.3, 21: 0.25}), ids, list(YESNO.values()))
    assert answer.value == pytest.approx(0.5 / 0.75)
    assert answer.mass == pytest.approx(0.75)


def test_expected_answer_is_stable_for_huge_logits():
    ids, _ = option_token_ids(encode, list(YESNO))
    logits = np.zeros(64)
    logits[10], logits[20] = 1000.0, 999.0
    answer = expected_answer(logits, ids, [1.0, 0.0])
    assert answer.value == pytest.approx(1 / (1 + math.exp(-1)))


def test_expected_answer_nan_with_reason():
    ids, _ = option_token_ids(encode, list(YESNO))
    low = expected_answer(logits_with({10: 0.01, 20: 0.01}), ids, [1.0, 0.0], min_mass=0.5)
    assert math.isnan(low.value) and "0.02 probability" in low.reason
    zero = np.zeros(64)
    zero[[10, 11, 12, 20, 21]] = -np.inf
    assert "zero probability" in expected_answer(zero, ids, [1.0, 0.0]).reason
    bad = np.zeros(64)
    bad[3] = np.nan
    assert expected_answer(bad, ids, [1.0, 0.0]).reason == "non-finite logits"
    assert "outside the vocabulary" in expected_answer(np.zeros(16), ids, [1.0, 0.0]).reason
    assert expected_answer(np.zeros(64), [], []).reason == "no answer tokens"


@pytest.mark.parametrize("text, value", [
    ("Yes", 1.0), ("no.", 0.0), ("  YES, the dog is still there", 1.0),
    ("The dog is gone, so the answer is no", 0.0),
    ("Looking closely: yes", 1.0),
])
def test_parse_yes_no(text, value):
    assert parse_answer(text, YESNO).value == value


@pytest.mark.parametrize("text, value", [
    ("4", 4.0), (" 3.", 3.0), ("Score: 2", 2.0), ("4/5", 4.0), ("3 out of 5", 3.0),
    ("The layout has 2 people and 1 dog moved. Rating: 3. Mostly kept.", 3.0),
    ("Two objects are lost, the rest is kept; I give it 4", 4.0),
    ("the answer is five", 5.0),
])
def test_parse_scores(text, value):
    assert parse_answer(text, SCORE).value == value


@pytest.mark.parametrize("text, options, reason", [
    ("", YESNO, "empty answer"),
    ("maybe", YESNO, "none of ['no', 'yes']"),
    ("I cannot tell", SCORE, "no number"),
    ("7", SCORE, "7 is not one of"),
    ("2.5", SCORE, "2.5 is not one of"),
])
def test_unparseable_answers_are_nan_with_reason(text, options, reason):
    answer = parse_answer(text, options)
    assert math.isnan(answer.value) and reason in answer.reason


def test_mean_of_samples_skips_unreadable_answers():
    answers = [parse_answer(t, SCORE) for t in ["4", "5", "no idea", "3"]]
    mean = mean_of_samples(answers)
    assert mean.value == pytest.approx(4.0) and mean.mass == pytest.approx(0.75)
    none = mean_of_samples([Answer(math.nan, "no number in 'x'")] * 3)
    assert math.isnan(none.value) and none.reason.startswith("3/3 sampled answers unreadable")
