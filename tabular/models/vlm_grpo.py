"""`vlm_grpo`: the challenge's rank-4 recipe as a pool member — GRPO on a Qwen vision-language model that
reasons, then answers with an integer score; the prediction is the mean of K sampled answers.

Training runs trl's `GRPOTrainer` (trl 1.16 handles vision-language processors: several images per
conversational prompt, `image_grid_thw` split per sample) with a LoRA adapter: for every training pair
`num_generations` answers are sampled at `temperature`, each rewarded 1 only when its integer answer
(the `vlm` extractor's `parse_answer`) equals the label rounded to an integer, else 0; no KL term
(`beta = 0`). Prediction: `k_samples` answers per pair at `predict_temperature`, the valid ones averaged
(`mean_of_samples`); a pair with no valid answer gets the training targets' median (counted in
`invalid_pairs_`). Labels must lie in 0..5 (the answer scale).

Files: as `vlm_lora` (`vlm_finetune.FitFolder`): `adapter/` and `fit.json` (settings, pair ids, trl's log of
rewards and losses per step, seconds); the member keeps only the folder's path. Training and sampling borrow
the process's loaded base model (`vlm_base.borrowed`) and take their adapter off it when done.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from featurestore.errors import SiqaError
from featurestore.extractors.vlm import mean_of_samples, parse_answer

from .base import POOL, PoolModel
from .vlm_base import borrowed
from .vlm_finetune import (DEFAULT_MODEL, FitFolder, PairImages, check_pairs, free_memory, lora_target_modules,
                           pair_messages, require, trained_fit)

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
OPTIONS = {str(k): float(k) for k in range(6)}
COT_PROMPT = ("The first image is a reference photo, the second a degraded copy of it. Think step by step about "
              "which objects, attributes, relations, layout and text of the reference survive in the degraded "
              "image, then end with 'Score: N', N an integer from 0 (nothing survives) to 5 (everything does).")


def exact_match_rewards(completions, label, **_) -> list[float]:
    """1.0 where the completion's integer answer equals the label, else 0.0 (trl reward-function signature)."""
    rewards = []
    for completion, target in zip(completions, label):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        answer = parse_answer(text, OPTIONS)
        rewards.append(1.0 if not answer.reason and answer.value == float(target) else 0.0)
    return rewards


@POOL.register("vlm_grpo")
class VlmGrpoRegressor(PoolModel):
    needs_pairs = True
    file_attributes = ("fit_dir_",)

    def __init__(self, base_model: str = DEFAULT_MODEL, path: str = "", lora_rank: int = 64, lora_alpha: int = 128,
                 lora_dropout: float = 0.05, lora_targets: tuple[str, ...] = ("language",), lora_modules: str = "",
                 epochs: int = 1, prompts_per_step: int = 4, num_generations: int = 32, lr: float = 1e-5,
                 max_completion_length: int = 256, temperature: float = 1.0, k_samples: int = 64,
                 predict_temperature: float = 1.0, max_pixels: int = 448 * 448, prompt: str = COT_PROMPT,
                 gradient_checkpointing: bool = True, dtype: str = "bfloat16", device: str = "auto",
                 random_state: int = 0, work_dir: str | None = None):
        self.base_model = base_model
        self.path = path
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_targets = lora_targets
        self.lora_modules = lora_modules
        self.epochs = epochs
        self.prompts_per_step = prompts_per_step
        self.num_generations = num_generations
        self.lr = lr
        self.max_completion_length = max_completion_length
        self.temperature = temperature
        self.k_samples = k_samples
        self.predict_temperature = predict_temperature
        self.max_pixels = max_pixels
        self.prompt = prompt
        self.gradient_checkpointing = gradient_checkpointing
        self.dtype = dtype
        self.device = device
        self.random_state = random_state
        self.work_dir = work_dir

    def _learning_settings(self) -> dict:
        params = self.get_params()
        for key in ("work_dir", "device", "path", "k_samples", "predict_temperature"):
            params.pop(key)
        return {**params, "member": self.name, "lora_targets": list(self.lora_targets)}

    def fit(self, X: pd.DataFrame, y, groups=None, pairs: pd.DataFrame | None = None) -> "VlmGrpoRegressor":
        require(self.name, "peft", "trl", "datasets")
        rows = check_pairs(self.name, X, pairs)
        target = np.array(y, dtype=np.float64)
        if not np.isfinite(target).all() or target.min() < 0 or target.max() > 5:
            raise SiqaError(f"{self.name}: the exact-match reward needs labels on the answer scale 0..5 "
                            f"(got {target.min():g}..{target.max():g})")
        fit = trained_fit(self, rows, target)
        record = fit.record()
        self.fit_dir_ = str(fit.path)
        self.fallback_ = float(record["fallback"])
        self.pair_ids_ = record["pair_ids"]
        self.log_history_ = record["log_history"]
        return self

    def _train(self, fit: FitFolder, rows: pd.DataFrame, target: np.ndarray) -> None:
        import torch
        from datasets import Dataset
        from peft import LoraConfig
        from trl import GRPOConfig, GRPOTrainer

        started = time.perf_counter()
        with borrowed(self.name, self.base_model, self.path, self.dtype, self.device) as (base, processor, _):
            on_gpu = next(base.parameters()).device.type == "cuda"
            images = PairImages(processor, self.max_pixels).of_rows(rows)
            labels = np.rint(target).astype(int)
            dataset = Dataset.from_list([{"prompt": pair_messages(self.prompt), "images": pair, "label": int(label)}
                                         for pair, label in zip(images, labels)])
            staged = fit.staging()
            args = GRPOConfig(
                output_dir=str(staged / "trainer"), num_train_epochs=float(self.epochs), learning_rate=float(self.lr),
                per_device_train_batch_size=int(self.num_generations), num_generations=int(self.num_generations),
                gradient_accumulation_steps=int(self.prompts_per_step),
                max_completion_length=int(self.max_completion_length), temperature=float(self.temperature),
                beta=0.0, seed=int(self.random_state), use_cpu=not on_gpu,
                bf16=on_gpu and self.dtype == "bfloat16", gradient_checkpointing=bool(self.gradient_checkpointing),
                logging_steps=1, save_strategy="no", report_to="none", remove_unused_columns=False)
            lora = LoraConfig(r=int(self.lora_rank), lora_alpha=int(self.lora_alpha),
                              lora_dropout=float(self.lora_dropout),
                              target_modules=lora_target_modules(base, self.lora_targets, self.lora_modules))
            with torch.random.fork_rng(devices=[next(base.parameters()).device] if on_gpu else []):
                trainer = GRPOTrainer(model=base, processing_class=processor, reward_funcs=exact_match_rewards,
                                      args=args, train_dataset=dataset, peft_config=lora)
                try:
                    trainer.train()
                    trainer.model.save_pretrained(staged / ADAPTER_DIR)
                finally:
                    trainer.model.unload()  # the base model goes back without this fit's adapter
            history = list(trainer.state.log_history)
            del trainer
        shutil.rmtree(staged / "trainer", ignore_errors=True)
        fit.publish(staged, {"member": self.name, "settings": self._learning_settings(),
                             "pair_ids": [str(i) for i in rows.index], "fallback": float(np.median(target)),
                             "log_history": history, "seconds": round(time.perf_counter() - started, 3)})
        free_memory()

    def sample_answers(self, X: pd.DataFrame, pairs: pd.DataFrame | None = None) -> list[list[str]]:
        """`k_samples` generated answers per row."""
        from peft import PeftModel

        rows = check_pairs(self.name, X, pairs)
        folder = Path(self.fit_dir_)
        if not (folder / ADAPTER_DIR).is_dir():
            raise SiqaError(f"{folder}: the adapter of {self.name} is missing (was the run moved or its fits/ "
                            f"folder deleted?)")
        with borrowed(self.name, self.base_model, self.path, self.dtype, self.device) as (base, processor, _):
            model = PeftModel.from_pretrained(base, folder / ADAPTER_DIR).eval()
            try:
                return self._sample(base, model, processor, rows)
            finally:
                model.unload()  # the base model goes back without this fit's adapter

    def _sample(self, base, model, processor, rows: pd.DataFrame) -> list[list[str]]:
        import torch

        text = processor.apply_chat_template(pair_messages(self.prompt), add_generation_prompt=True, tokenize=False)
        device = next(base.parameters()).device
        answers = []
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
            torch.manual_seed(int(self.random_state))
            for pair in PairImages(processor, self.max_pixels).of_rows(rows):
                inputs = processor(text=[text], images=pair, return_tensors="pt").to(device)
                inputs["pixel_values"] = inputs["pixel_values"].to(base.dtype)
                out = model.generate(**inputs, do_sample=True, temperature=float(self.predict_temperature),
                                     num_return_sequences=int(self.k_samples),
                                     max_new_tokens=int(self.max_completion_length),
                                     pad_token_id=processor.tokenizer.pad_token_id)
                answers.append(processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
        return answers

    def predict(self, X: pd.DataFrame, pairs: pd.DataFrame | None = None) -> np.ndarray:
        scores = np.array([mean_of_samples([parse_answer(t, OPTIONS) for t in texts]).value
                           for texts in self.sample_answers(X, pairs)], dtype=np.float64)
        invalid = ~np.isfinite(scores)
        self.invalid_pairs_ = int(invalid.sum())
        if invalid.any():
            log.warning("%s: no valid answer among %d samples for %d of %d pair(s); they get the training median",
                        self.name, self.k_samples, invalid.sum(), len(scores))
        return np.where(invalid, self.fallback_, scores)
