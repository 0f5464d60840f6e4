"""Semantic judgments of a vision-language model (Qwen-VL family) as pair-level features.

Three of the six SeIQA challenge teams used a Qwen vision-language model: structured questions fed to a
gradient-boosting model (rank 3), the mean of sampled chain-of-thought scores (rank 4), hidden states as
features for a small regressor (rank 1). This extractor gives all three to the tabular stage:

- one column per question of `configs/vlm_questions.toml` (presence, attributes, layout, relations, text,
  meaning, an overall 0..5 score): the expected answer under the model's next-token probabilities, read
  from one forward pass (deterministic, no sampling; `featurestore.extractors._vlm_answers`);
- with `k_samples > 0`, `<question>_sampled`: the mean of K sampled and parsed answers (test-time scaling);
- `answer_mass`: the mean probability the model put on valid answers (how well it follows the format);
- `hidden_last` / `hidden_mid`: last-layer and middle-layer hidden states at the answer position, averaged
  over the questions, as dense blocks for the out-of-fold Ridge meta-features.

Both images go into one chat prompt, reference first. Pixel budget rule: an image whose area exceeds
`max_pixels` (or the processor's own limit, if smaller) is downscaled with Lanczos, aspect ratio kept, to the
largest size whose sides are multiples of the vision tower's patch x merge size (28 px for Qwen2/2.5-VL, 32 px
for Qwen3-VL) within the budget; the degraded image has the reference's size already, so both get the same.

Runs on a CUDA GPU in bfloat16 (optionally 4-bit through bitsandbytes): 0.13-0.17 s per pair for the 11
default questions with a Qwen2.5-VL-7B on an H100 (`make bench-gpu-models`), 1.3 s with K=64 sampled answers
each when all 11 x 64 rows decoded at once (measured before `sample_cache_mb`: their key/value cache is ~24 GB at a
600-token prompt; they now decode in chunks within that budget, a few questions at a time).
On a CPU it falls back to float32; a 7B model needs ~25 TFLOP per 448x448 pair (tens of seconds), hence the
extractor is disabled in configs/default.toml. An answer the model does not give in the expected form becomes
NaN with a logged reason.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import inspect
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from typing import Literal
from pathlib import Path

import numpy as np
from huggingface_hub.utils import validate_repo_id
from PIL import Image
from pydantic import Field

from configs import config_file

from ..config import read_toml
from ..devices import pick_device, to_host
from ..errors import SiqaError
from ..weights import Fetch, MissingWeights, WeightSpec, hf_cached_folder, resolve
from ._vlm_answers import Answer, expected_answer, mean_of_samples, option_token_ids, parse_answer
from .base import EXTRACTORS, Column, ExtractorSettings, PairExtractor, WeightSource

log = logging.getLogger(__name__)

DEFAULT_QUESTIONS = config_file("vlm_questions.toml")
_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_RESERVED = {"answer_mass", "hidden_last", "hidden_mid"}
#: what a checkpoint folder needs beside config and weights: the processor, the tokenizer and the chat template
#: (the published repos carry preprocessor_config.json, transformers 5 saves processor_config.json; "a|b" = either)
CHECKPOINT_FILES = ("preprocessor_config.json|processor_config.json", "tokenizer_config.json",
                    "tokenizer.json|vocab.json", "chat_template.json|chat_template.jinja")
#: an instruct model that follows "Answer Yes or No" puts most of its next-token probability on the options;
#: below this it is answering something else, and renormalising over the options would invent a confident value
MIN_ANSWER_MASS = 0.05


# --- question set ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Question:
    id: str
    text: str
    instruction: str
    options: dict[str, float]


@dataclass(frozen=True)
class QuestionSet:
    """The prompt layout and the questions, as read from a TOML file (see configs/vlm_questions.toml)."""

    system: str
    reference: str
    degraded: str
    questions: tuple[Question, ...]

    @classmethod
    def load(cls, path: str | Path) -> "QuestionSet":
        path = Path(path)
        spec = read_toml(path, "question file")
        prompt, kinds = spec.get("prompt", {}), spec.get("answers", {})
        for key in ("reference", "degraded"):
            if not isinstance(prompt.get(key), str):
                raise SiqaError(f"{path}: [prompt] needs a text `{key}` (the caption before that image)")
        for kind, table in kinds.items():
            options = table.get("options")
            if not isinstance(table.get("instruction"), str) or not isinstance(options, dict) or len(options) < 2:
                raise SiqaError(f"{path}: [answers.{kind}] needs an `instruction` and at least two `options`")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in options.values()):
                raise SiqaError(f"{path}: [answers.{kind}] option values must be finite numbers")
        questions, seen = [], set()
        for i, q in enumerate(spec.get("questions", []), start=1):
            if not isinstance(q, dict):
                raise SiqaError(f"{path}: question {i} is not a [[questions]] table")
            qid, kind, text = q.get("id"), q.get("answer"), q.get("text")
            if not isinstance(qid, str) or not _ID.match(qid) or qid in _RESERVED or qid.endswith("_sampled"):
                raise SiqaError(f"{path}: question {i}: id {qid!r} must be lower_snake_case and not a reserved "
                                f"column name")
            if qid in seen:
                raise SiqaError(f"{path}: question {i}: duplicate id {qid!r}")
            if kind not in kinds:
                raise SiqaError(f"{path}: question {qid}: answer {kind!r} is not one of [answers.{', '.join(kinds)}]")
            if not isinstance(text, str) or not text.strip():
                raise SiqaError(f"{path}: question {qid}: empty `text`")
            seen.add(qid)
            options = {str(k): float(v) for k, v in kinds[kind]["options"].items()}
            questions.append(Question(qid, text.strip(), kinds[kind]["instruction"].strip(), options))
        if not questions:
            raise SiqaError(f"{path}: no [[questions]]")
        return cls(prompt.get("system", ""), prompt["reference"], prompt["degraded"], tuple(questions))

    def fingerprint(self) -> str:
        """Hash of everything that changes the answers (not the file's name or comments)."""
        blob = json.dumps([self.system, self.reference, self.degraded,
                           [(q.id, q.text, q.instruction, q.options) for q in self.questions]])
        return hashlib.sha256(blob.encode()).hexdigest()

    def messages(self, question: Question) -> list[dict]:
        """Chat messages for one question: reference first, then the degraded image, then the question."""
        user = [
            {"type": "text", "text": self.reference}, {"type": "image"},
            {"type": "text", "text": "\n" + self.degraded}, {"type": "image"},
            {"type": "text", "text": f"\n{question.text} {question.instruction}"},
        ]
        system = [{"role": "system", "content": [{"type": "text", "text": self.system}]}] if self.system else []
        return system + [{"role": "user", "content": user}]


def budget_size(width: int, height: int, max_pixels: int, factor: int) -> tuple[int, int]:
    """Largest (w, h) with sides multiples of `factor`, aspect kept and w*h <= max_pixels; never larger than the
    image, except that a side shorter than `factor` becomes one `factor`."""
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    snap = lambda side: max(factor, int(side * scale) // factor * factor)  # noqa: E731
    return snap(width), snap(height)


def split_shared_prefix(prompts: list[str], special_tokens) -> tuple[str, list[str]]:
    """The text all prompts begin with, cut at the end of its last special token (a hard token boundary, so
    prefix and rest tokenise exactly as the whole), and what is left of each prompt. ("", prompts) if none."""
    common = os.path.commonprefix(prompts)
    cut = max((common.rfind(t) + len(t) for t in special_tokens if t in common), default=0)
    return common[:cut], [p[cut:] for p in prompts]


# --- inference ------------------------------------------------------------------------------------------

@dataclass
class Judgment:
    answers: dict[str, Answer]      # question id -> expected answer from the logits
    sampled: dict[str, Answer]      # question id -> mean of K sampled answers (empty when k_samples = 0)
    hidden_last: np.ndarray         # (hidden,) float32
    hidden_mid: np.ndarray          # (hidden,) float32


class VlmJudge:
    """Asks one loaded model + processor every question of a `QuestionSet` about one image pair.

    The part of the prompt all questions share (system text, captions, both images) runs once per pair;
    the questions continue from its key/value cache as one left-padded batch, so the answer position is the
    last one of every row and `logits_to_keep=1` spares the (questions x tokens x vocabulary) logits.
    `share_prefix=False` runs every question's whole prompt instead (same values, several times the cost).
    Sampled answers (`k_samples`) continue from the same shared prefix: K rows per question decode together."""

    def __init__(self, model, processor, questions: QuestionSet, max_pixels: int = 512 * 28 * 28,
                 k_samples: int = 0, temperature: float = 1.0, max_new_tokens: int = 16,
                 middle_layer: int | None = None, min_answer_mass: float = MIN_ANSWER_MASS, seed: int = 0,
                 share_prefix: bool = True, sample_cache_mb: float = 2048):
        self.model, self.processor, self.questions = model, processor, questions
        self.k_samples, self.temperature, self.max_new_tokens = k_samples, temperature, max_new_tokens
        self.min_answer_mass, self.seed, self.sample_cache_mb = min_answer_mass, seed, sample_cache_mb
        self.processor.tokenizer.padding_side = "left"
        text_config = model.config.get_text_config()
        layers = int(text_config.num_hidden_layers)
        # hidden_states[0] is the embedding output, hidden_states[i] the output of decoder layer i
        self.middle_layer = layers // 2 if middle_layer is None else int(middle_layer)
        if not 0 <= self.middle_layer <= layers:
            raise SiqaError(f"[extractors.vlm] middle_layer {middle_layer}: the model has layers 0..{layers}")
        self.hidden_size = int(text_config.hidden_size)
        image_processor = processor.image_processor
        self.factor = int(image_processor.patch_size) * int(image_processor.merge_size)
        own_limit = (getattr(image_processor, "size", None) or {}).get("longest_edge")
        self.max_pixels = min(max_pixels, own_limit) if own_limit else max_pixels
        self.prompts = [processor.apply_chat_template(questions.messages(q), add_generation_prompt=True,
                                                      tokenize=False) for q in questions.questions]
        self.prefix, self.suffixes = split_shared_prefix(self.prompts, processor.tokenizer.get_added_vocab())
        if not self.prefix and k_samples:
            raise SiqaError("[extractors.vlm] k_samples needs prompts that share a prefix (the chat template "
                            "marks the images with special tokens)")
        self.share_prefix = share_prefix and bool(self.prefix)
        eos = model.generation_config.eos_token_id
        self._stop_ids = {processor.tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        # transformers 5 renamed the forward's `past_key_values` to `cache`
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        encode = lambda s: processor.tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
        self.option_ids = {}
        for q in questions.questions:
            ids, reason = option_token_ids(encode, list(q.options))
            if reason:
                log.warning("vlm: question %s will be NaN: %s", q.id, reason)
            self.option_ids[q.id] = ids

    @property
    def device(self):
        return next(self.model.parameters()).device

    def fit_budget(self, rgb: np.ndarray) -> Image.Image:
        image = Image.fromarray(rgb)
        size = budget_size(image.width, image.height, self.max_pixels, self.factor)
        return image if size == image.size else image.resize(size, Image.LANCZOS)

    def _inputs(self, prompts: list[str], images: list[Image.Image]):
        inputs = self.processor(text=prompts, images=images * len(prompts), padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def judge(self, ref: np.ndarray, dist: np.ndarray, pair_id: str = "") -> Judgment:
        images = [self.fit_budget(ref), self.fit_budget(dist)]
        logits, last, mid = (self._answer_states_shared if self.share_prefix else self._answer_states)(images)
        # hidden states pooled over the questions (one vector per pair whatever the question set); one transfer
        states = to_host({"logits": logits.float(), "last": last.float().mean(0), "mid": mid.float().mean(0)})
        logits, hidden_last, hidden_mid = states["logits"], states["last"], states["mid"]
        texts = self.sample(images) if self.k_samples else []
        answers, sampled = {}, {}
        for i, q in enumerate(self.questions.questions):
            answers[q.id] = expected_answer(logits[i], self.option_ids[q.id], list(q.options.values()),
                                            self.min_answer_mass)
            if self.k_samples:
                sampled[q.id] = mean_of_samples([parse_answer(t, q.options) for t in texts[i]])
        for suffix, found in (("", answers), ("_sampled", sampled)):
            for qid, answer in found.items():
                if answer.reason:
                    log.debug("vlm: pair %s, %s%s: NaN (%s)", pair_id[:12], qid, suffix, answer.reason)
        return Judgment(answers, sampled, hidden_last.astype(np.float32), hidden_mid.astype(np.float32))

    def _answer_states(self, images: list[Image.Image]):
        """(logits, last-layer, middle-layer hidden state) at the answer position, one row per question:
        every question's whole prompt, images included, in one left-padded batch."""
        import torch

        inputs = self._inputs(self.prompts, images)
        with torch.inference_mode():
            out = self.model(**inputs, output_hidden_states=True, logits_to_keep=1)
        return out.logits[:, -1], out.hidden_states[-1][:, -1], out.hidden_states[self.middle_layer][:, -1]

    def _answer_states_shared(self, images: list[Image.Image]):
        """As `_answer_states`, but the shared prefix (most of the tokens and the whole vision tower) runs once
        and its key/value cache is repeated for the questions."""
        out, *_ = self._continue_prefix(images, hidden_states=True)
        return out.logits[:, -1], out.hidden_states[-1][:, -1], out.hidden_states[self.middle_layer][:, -1]

    def _continue_prefix(self, images: list[Image.Image], hidden_states: bool = False):
        """Run the shared prefix once, repeat its key/value cache for the questions and run their own tokens as
        one left-padded batch from it.

        Returns (output of the questions' forward, cache, attention mask so far, M-RoPE position of each
        row's last token), one row per question."""
        import torch

        n = len(self.suffixes)
        prefix = self._inputs([self.prefix], images)
        length = prefix["input_ids"].shape[1]
        rest = self.processor.tokenizer(self.suffixes, padding=True, add_special_tokens=False, return_tensors="pt")
        rest = rest.to(self.device)
        with torch.inference_mode():
            out = self.model(**prefix, use_cache=True, logits_to_keep=1)
            cache = out.cache if "cache" in out else out.past_key_values
            cache.batch_repeat_interleave(n)
            # M-RoPE gives image tokens 2-D positions; text after them continues from the largest, which the
            # model keeps as `rope_deltas` (position = token index + delta). Pads (left) get any position.
            start = length + int(self.model.model.rope_deltas.view(-1)[0])
            mask = rest["attention_mask"]
            positions = start + (mask.cumsum(-1) - 1).clamp(min=0)
            mask = torch.cat([mask.new_ones(n, length), mask], 1)
            out = self.model(input_ids=rest["input_ids"], attention_mask=mask,
                             position_ids=positions.unsqueeze(0).expand(3, -1, -1), logits_to_keep=1,
                             output_hidden_states=hidden_states, **{self._cache_kwarg: cache})
        return out, cache, mask, positions[:, -1]

    def questions_per_chunk(self, cache, length: int) -> int:
        """How many questions' K sampled rows decode together within `sample_cache_mb` of key/value cache
        (each row grows to `length + max_new_tokens` tokens); at least one question."""
        rows = cache.layers[0].keys.shape[0]
        total = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
        per_row = total / (rows * length) * (length + self.max_new_tokens)
        fits = int(self.sample_cache_mb * 2**20 // (per_row * self.k_samples))
        return min(len(self.suffixes), max(1, fits))

    def sample(self, images: list[Image.Image]) -> list[list[str]]:
        """K sampled answers per question (temperature 0: greedy). The prefix and each question run once, then
        the K rows of as many questions as `sample_cache_mb` allows decode together, chunk after chunk (the
        K x questions rows of a 7B model's cache would need tens of GB at once). Every question draws from its
        own generator seeded by (`seed`, question), so the answers depend neither on the pair's batch nor on
        the chunking."""
        import torch

        out, cache, mask, position = self._continue_prefix(images)
        logits = out.logits[:, -1].float()
        n, k = len(self.suffixes), self.k_samples
        per_chunk = self.questions_per_chunk(cache, mask.shape[1])
        generators = [torch.Generator(self.device).manual_seed(int(np.random.SeedSequence([self.seed, i])
                                                                  .generate_state(1)[0])) for i in range(n)]
        texts = []
        for first in range(0, n, per_chunk):
            chunk = range(first, min(n, first + per_chunk))
            rows = torch.arange(first, chunk.stop, device=self.device).repeat_interleave(k)
            # the chunk's own cache: indexing copies its rows, so the shared cache stays whole for the next chunk
            rows_cache = copy.copy(cache)
            rows_cache.layers = [copy.copy(layer) for layer in cache.layers]
            rows_cache.batch_select_indices(rows)
            tokens = self._decode(rows_cache, mask[rows], position[rows], logits[rows],
                                  [generators[i] for i in chunk])
            texts += [tokens[j:j + k] for j in range(0, len(tokens), k)]
        return texts

    def _decode(self, cache, mask, position, logits, generators) -> list[str]:
        """Decode K rows per generator (question-major) from `cache` until every row stops."""
        import torch

        k, tokenizer = self.k_samples, self.processor.tokenizer
        stop = torch.tensor(sorted(self._stop_ids), device=self.device)
        done = torch.zeros(mask.shape[0], dtype=torch.bool, device=self.device)
        tokens = []
        with torch.inference_mode():
            for step in range(self.max_new_tokens):
                if self.temperature > 0:
                    probs = torch.softmax(logits / self.temperature, -1)
                    token = torch.cat([torch.multinomial(probs[i * k:(i + 1) * k], 1, generator=g)[:, 0]
                                       for i, g in enumerate(generators)])
                else:
                    token = logits.argmax(-1)
                token = token.masked_fill(done, tokenizer.pad_token_id)
                tokens.append(token)
                done |= torch.isin(token, stop)
                if bool(done.all()) or step + 1 == self.max_new_tokens:
                    break
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
                position = position + 1
                out = self.model(input_ids=token[:, None], attention_mask=mask, logits_to_keep=1,
                                 position_ids=position.view(1, -1, 1).expand(3, -1, -1), **{self._cache_kwarg: cache})
                logits = out.logits[:, -1].float()
        return tokenizer.batch_decode(torch.stack(tokens, 1), skip_special_tokens=True)


# --- weights --------------------------------------------------------------------------------------------

def load_model(folder: Path, dtype: str, device, load_in_4bit: bool):
    """Model and processor from a local checkpoint folder (no network), placed on `device`."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if device.type == "cpu" and dtype != "float32":
        dtype = "float32"  # bf16/fp16 matmuls on CPUs are slow or missing; the values differ only by rounding
    kwargs = {"dtype": getattr(torch, dtype), "local_files_only": True}
    if load_in_4bit:
        if device.type != "cuda" or importlib.util.find_spec("bitsandbytes") is None:
            raise SiqaError("[extractors.vlm] load_in_4bit needs the bitsandbytes package and a CUDA GPU")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=kwargs["dtype"])
    kwargs["device_map"] = {"": str(device)}
    model = AutoModelForImageTextToText.from_pretrained(folder, **kwargs).eval()
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    return model, processor


def _mean_mass(answers) -> float:
    masses = [a.mass for a in answers if math.isfinite(a.mass)]
    return float(np.mean(masses)) if masses else math.nan


# --- extractor ------------------------------------------------------------------------------------------

@EXTRACTORS.register()
class VlmExtractor(PairExtractor):
    name = "vlm"
    version = 1
    batch_size = 4  # pairs per call; each pair is one forward pass of all its questions
    class Settings(ExtractorSettings):
        model: str = Field("Qwen/Qwen2.5-VL-7B-Instruct", description="Hugging Face repo id (any Qwen2/2.5/3-VL "
                                                                     "instruct checkpoint)")
        path: str = Field("", description="checkpoint folder; \"\" = $SIQA_WEIGHTS_DIR/<model>, then the HF cache")
        dtype: Literal["bfloat16", "float16", "float32"] = Field("bfloat16", description="weights dtype (on a CPU: "
                                                                                        "float32)")
        load_in_4bit: bool = Field(False, description="4-bit weights (needs bitsandbytes and a CUDA GPU)")
        device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N; not hashed")
        max_pixels: int = Field(512 * 28 * 28, ge=28 * 28, description="pixels per image (at least one 28x28 patch); "
                                                                       "larger images are downscaled, aspect kept")
        questions: str = Field("", description="question file; \"\" = configs/vlm_questions.toml")
        k_samples: int = Field(0, ge=0, description="> 0 adds `<id>_sampled` columns (mean of K sampled answers)")
        temperature: float = Field(1.0, ge=0, description="of the sampled answers; 0 = greedy")
        max_new_tokens: int = Field(16, ge=1, description="of each sampled answer")
        middle_layer: int | None = Field(None, ge=0, description="hidden_mid layer; unset = half the decoder depth")
        min_answer_mass: float = Field(MIN_ANSWER_MASS, ge=0, le=1, description="NaN (reason logged) when less "
                                                                                "probability is on the options")
        seed: int = Field(0, description="of the sampled answers")
        share_prefix: bool = Field(True, description="run the images once per pair, not once per question")
        sample_cache_mb: float = Field(2048, gt=0, description="key/value cache the K sampled answers may fill at "
                                                               "once; not hashed")

    def __init__(self, settings=None, **config):
        super().__init__(settings, **config)
        validate_repo_id(self.config["model"])  # a ValueError naming the problem; folders go in `path`
        self.questions = QuestionSet.load(self.config["questions"] or DEFAULT_QUESTIONS)
        self._judge: VlmJudge | None = None
        self._hidden_size: int | None = None

    #: where and in how many chunks it runs, not what it computes: `cuda` and `auto` share one store folder
    runtime_keys = ("device", "sample_cache_mb")

    def hashed_content(self):
        # The question file's content changes the outputs, its path alone does not say so.
        return self.questions.fingerprint()

    def weight_specs(self) -> list[WeightSpec]:
        model = self.config["model"]
        cached = hf_cached_folder(model)
        return [WeightSpec(f"transformers {model}", local_name=model, download=f"https://huggingface.co/{model}",
                           config_path=self.config["path"], caches=(cached,) if cached else (), folder=True,
                           files=CHECKPOINT_FILES, fetch=Fetch("hf_snapshot", model))]

    def weight_sources(self) -> list[WeightSource]:
        return [resolve(spec) for spec in self.weight_specs()]

    def _model_dir(self) -> Path:
        source = self.weight_sources()[0]
        if source.found is None:
            raise MissingWeights([dataclasses.replace(source, what=f"{self.name}: {source.what}")])
        return Path(source.found)

    def pair_columns(self) -> list[Column]:
        if self._hidden_size is None:
            if self._judge is not None:
                self._hidden_size = self._judge.hidden_size
            else:
                from transformers import AutoConfig

                config = AutoConfig.from_pretrained(self._model_dir(), local_files_only=True)
                self._hidden_size = int(config.get_text_config().hidden_size)
        columns = []
        for q in self.questions.questions:
            columns.append(Column(q.id))
            if self.config["k_samples"]:
                columns.append(Column(f"{q.id}_sampled"))
        return columns + [Column("answer_mass"), Column("hidden_last", self._hidden_size),
                          Column("hidden_mid", self._hidden_size)]

    def judge(self) -> VlmJudge:
        """The loaded model, on first use."""
        if self._judge is None:
            model, processor = load_model(self._model_dir(), self.config["dtype"],
                                          pick_device(self.config["device"]), bool(self.config["load_in_4bit"]))
            c = self.config
            self._judge = VlmJudge(model, processor, self.questions, max_pixels=int(c["max_pixels"]),
                                   k_samples=int(c["k_samples"]), temperature=float(c["temperature"]),
                                   max_new_tokens=int(c["max_new_tokens"]), middle_layer=c["middle_layer"],
                                   min_answer_mass=float(c["min_answer_mass"]), seed=int(c["seed"]),
                                   share_prefix=bool(c["share_prefix"]),
                                   sample_cache_mb=float(c["sample_cache_mb"]))
        return self._judge

    def compute_pairs(self, pairs) -> dict[str, np.ndarray]:
        judge = self.judge()
        results = [judge.judge(p.ref.rgb, p.dist.rgb, p.pair_id) for p in pairs]
        out: dict[str, np.ndarray] = {}
        for q in self.questions.questions:
            out[q.id] = self._values(q.id, [r.answers[q.id] for r in results], pairs)
            if self.config["k_samples"]:
                out[f"{q.id}_sampled"] = self._values(f"{q.id}_sampled", [r.sampled[q.id] for r in results], pairs)
        out["answer_mass"] = np.array([_mean_mass(r.answers.values()) for r in results])
        out["hidden_last"] = np.stack([r.hidden_last for r in results])
        out["hidden_mid"] = np.stack([r.hidden_mid for r in results])
        return out

    @staticmethod
    def _values(column: str, answers: list[Answer], pairs) -> np.ndarray:
        """One column; unreadable answers are NaN and logged once per batch with the first reason."""
        failed = [(p.pair_id, a.reason) for p, a in zip(pairs, answers) if a.reason]
        if failed:
            log.warning("vlm: %s is NaN for %d of %d pair(s), e.g. pair %s: %s",
                        column, len(failed), len(answers), failed[0][0][:12], failed[0][1])
        return np.array([a.value for a in answers], dtype=np.float64)

    def close(self) -> None:
        if self._judge is not None:
            self._judge = None
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
