"""`vlm_lora`: the challenge's rank-1 recipe as a pool member — a LoRA fine-tune of a Qwen vision-language
model with a small regression head on its hidden representation (no text is generated).

Input: reference and degraded image and a task prompt in one chat turn (`vlm_finetune.pair_messages`); the
last-layer hidden state at the prompt's last token goes through an MLP (`head_hidden` widths, GELU) to one
score. LoRA (rank `lora_rank`, alpha `lora_alpha`) sits on the linear layers of the parts in `lora_targets`
(vision tower, aligner, language model; `lora_modules` narrows them by a regex). Training: AdamW on the
adapters and the head, `lr` with linear warm-up then cosine decay, `epochs` passes in batches of
`batch_size` pairs, loss = lambda_fidelity · fidelity + lambda_plcc · (1 − PLCC) on each batch
(`pairwise_mlp.fidelity_loss`: every pair i<j of the batch, p_ij = Φ(ŷ_i − ŷ_j), g_ij = (sign(y_i − y_j)+1)/2).
Calibration: min-max — the head's lowest and highest prediction on the training pairs map to the lowest and
highest training target (rank 1 mapped to 0..5; in the pool the blend calibrates to 0..5 later).

An ensemble of fine-tunes is several members: `seeds = [0, 1, 2]` in the preset, or a second table with
`model = "vlm_lora"` and other `epochs`, so the blender weighs them.

Files: the fit folder (`vlm_finetune.FitFolder`) holds `adapter/` (peft's adapter_config.json and
adapter_model.safetensors), `head.safetensors` and `fit.json` (settings, calibration, per-step losses, the
pair ids the fit was given, seconds). The fitted member keeps only that folder's path, so a pickled run holds no
model: `predict` puts the fit's adapter on the base model again. Fits and predictions borrow the process's
loaded base model (`vlm_base.borrowed`: loaded once per process, not once per fit) and take their adapter off
it (`unload()`) when done.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from featurestore.errors import SiqaError

from .base import POOL, PoolModel
from .pairwise_mlp import fidelity_loss, plcc_loss
from .vlm_base import borrowed
from .vlm_finetune import (DEFAULT_MODEL, DEFAULT_PROMPT, LORA_PARTS, FitFolder, PairImages, check_pairs,
                           free_memory, lora_target_modules, pair_messages, require, trained_fit)

HEAD_FILE = "head.safetensors"
ADAPTER_DIR = "adapter"


def regression_loss(pred, y, lambda_fidelity: float, lambda_plcc: float):
    """The rank-1 training loss of one batch of predictions `pred` for targets `y`."""
    return lambda_fidelity * fidelity_loss(pred, y) + lambda_plcc * plcc_loss(pred, y)


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear from 0 to 1 over `warmup` steps, then cosine from 1 to 0 at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@POOL.register("vlm_lora")
class VlmLoraRegressor(PoolModel):
    needs_pairs = True
    file_attributes = ("fit_dir_",)

    def __init__(self, base_model: str = DEFAULT_MODEL, path: str = "", lora_rank: int = 64, lora_alpha: int = 128,
                 lora_dropout: float = 0.05, lora_targets: tuple[str, ...] = LORA_PARTS, lora_modules: str = "",
                 epochs: int = 1, batch_size: int = 16, lr: float = 1e-4, warmup_ratio: float = 0.05,
                 weight_decay: float = 0.0, lambda_fidelity: float = 1.0, lambda_plcc: float = 1.0,
                 head_hidden: tuple[int, ...] = (256,), max_pixels: int = 448 * 448, prompt: str = DEFAULT_PROMPT,
                 gradient_checkpointing: bool = True, dtype: str = "bfloat16", device: str = "auto",
                 predict_batch_size: int = 16, random_state: int = 0, work_dir: str | None = None):
        self.base_model = base_model
        self.path = path
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_targets = lora_targets
        self.lora_modules = lora_modules
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.warmup_ratio = warmup_ratio
        self.weight_decay = weight_decay
        self.lambda_fidelity = lambda_fidelity
        self.lambda_plcc = lambda_plcc
        self.head_hidden = head_hidden
        self.max_pixels = max_pixels
        self.prompt = prompt
        self.gradient_checkpointing = gradient_checkpointing
        self.dtype = dtype
        self.device = device
        self.predict_batch_size = predict_batch_size
        self.random_state = random_state
        self.work_dir = work_dir

    # --- what a fit depends on -------------------------------------------------------------------------
    def _learning_settings(self) -> dict:
        """Every setting that changes what is learnt (not where files go, not the prediction batch)."""
        params = self.get_params()
        for key in ("work_dir", "predict_batch_size", "device", "path"):
            params.pop(key)
        return {**params, "member": self.name, "lora_targets": list(self.lora_targets),
                "head_hidden": list(self.head_hidden)}

    # --- model pieces -----------------------------------------------------------------------------------
    def _head(self, width: int):
        import torch
        from torch import nn

        layers: list[nn.Module] = []
        for hidden in self.head_hidden:
            layers += [nn.Linear(width, int(hidden)), nn.GELU()]
            width = int(hidden)
        layers.append(nn.Linear(width, 1))
        return nn.Sequential(*layers).to(torch.float32)

    def _scores(self, base, processor, head, images, rows: np.ndarray, prompt_text: str):
        """Head outputs (float32 tensor) for the pairs `rows` of `images` (list of [ref, dist])."""
        import torch

        flat = [image for r in rows for image in images[r]]
        inputs = processor(text=[prompt_text] * len(rows), images=flat, padding=True, return_tensors="pt")
        device = next(base.parameters()).device
        inputs = inputs.to(device)
        inputs["pixel_values"] = inputs["pixel_values"].to(base.dtype)
        # the inner model returns the normed last hidden states without the (vocabulary-wide) LM head
        hidden = base.model(**inputs).last_hidden_state[:, -1]
        return head(hidden.to(device=next(head.parameters()).device, dtype=torch.float32))[:, 0]

    def predict_images(self, base, processor, head, images: list) -> np.ndarray:
        """Head outputs for the pairs `images` with a loaded model (what `predict_raw` and benchmarks call)."""
        prompt_text = processor.apply_chat_template(pair_messages(self.prompt), add_generation_prompt=True,
                                                    tokenize=False)
        return self._predict_raw(base, processor, head, images, prompt_text)

    def _predict_raw(self, base, processor, head, images, prompt_text: str) -> np.ndarray:
        import torch

        out = []
        base.eval()
        head.eval()
        with torch.inference_mode():
            for start in range(0, len(images), int(self.predict_batch_size)):
                rows = np.arange(start, min(start + int(self.predict_batch_size), len(images)))
                out.append(self._scores(base, processor, head, images, rows, prompt_text).double().cpu().numpy())
        return np.concatenate(out) if out else np.empty(0)

    # --- fit / predict ----------------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y, groups=None, pairs: pd.DataFrame | None = None) -> "VlmLoraRegressor":
        require(self.name, "peft")
        rows = check_pairs(self.name, X, pairs)
        target = np.array(y, dtype=np.float64)
        if len(target) < 2 or np.ptp(target) == 0:
            raise SiqaError(f"{self.name}: needs at least two training pairs with different targets")
        if int(self.batch_size) < 2:
            raise SiqaError(f"{self.name}: batch_size must be at least 2 (the losses compare pairs in a batch)")
        fit = trained_fit(self, rows, target)
        record = fit.record()
        self.fit_dir_ = str(fit.path)
        self.calibration_ = record["calibration"]
        self.losses_ = record["losses"]
        self.pair_ids_ = record["pair_ids"]
        return self

    def _train(self, fit: FitFolder, rows: pd.DataFrame, target: np.ndarray) -> None:
        from safetensors.torch import save_file

        started = time.perf_counter()
        with borrowed(self.name, self.base_model, self.path, self.dtype, self.device) as (base, processor, _):
            tuned = self.fine_tune(base, processor, PairImages(processor, self.max_pixels).of_rows(rows), target)
            try:
                staged = fit.staging()
                tuned["peft_model"].save_pretrained(staged / ADAPTER_DIR)
                save_file({k: v.detach().cpu().contiguous() for k, v in tuned["head"].state_dict().items()},
                          staged / HEAD_FILE)
            finally:
                tuned["peft_model"].unload()  # the base model goes back without this fit's adapter
        train_pred = tuned["train_predictions"]
        fit.publish(staged, {
            "member": self.name, "settings": self._learning_settings(), "pair_ids": [str(i) for i in rows.index],
            "calibration": {"pred_min": float(train_pred.min()), "pred_max": float(train_pred.max()),
                            "target_min": float(target.min()), "target_max": float(target.max())},
            "train_predictions": train_pred.tolist(), "losses": tuned["losses"],
            "step_seconds": tuned["step_seconds"], "seconds": round(time.perf_counter() - started, 3)})
        del tuned
        free_memory()  # the optimiser's state and the adapter's gradients

    def fine_tune(self, base, processor, images: list, target: np.ndarray) -> dict:
        """Train LoRA adapters on `base` (changed in place) and a new head on the pairs `images` ([ref, dist]
        each) for `target`. Returns the peft model, the head, per-step losses and seconds, and the trained
        model's predictions on the training pairs (`bench/bench_gpu_vlm_lora.py` times this on random models)."""
        import torch
        from peft import LoraConfig, get_peft_model

        prompt_text = processor.apply_chat_template(pair_messages(self.prompt), add_generation_prompt=True,
                                                    tokenize=False)
        device = next(base.parameters()).device
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(int(self.random_state))
            config = LoraConfig(r=int(self.lora_rank), lora_alpha=int(self.lora_alpha),
                                lora_dropout=float(self.lora_dropout),
                                target_modules=lora_target_modules(base, self.lora_targets, self.lora_modules))
            peft_model = get_peft_model(base, config)
            head = self._head(int(base.config.get_text_config().hidden_size)).to(device)
            if self.gradient_checkpointing:
                base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            trainable = [p for p in peft_model.parameters() if p.requires_grad] + list(head.parameters())
            optimiser = torch.optim.AdamW(trainable, lr=float(self.lr), weight_decay=float(self.weight_decay))
            n = len(target)
            per_epoch = max(1, math.ceil(n / int(self.batch_size)))
            total = per_epoch * int(self.epochs)
            warmup = int(float(self.warmup_ratio) * total)
            schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: cosine_with_warmup(s, total, warmup))
            generator = np.random.default_rng(int(self.random_state))
            y = torch.as_tensor(target, dtype=torch.float32, device=device)
            losses: list[float] = []
            step_seconds: list[float] = []
            peft_model.train()
            head.train()
            with tqdm(total=total, desc=f"{self.name}: fine-tune on {n} pairs", unit="step", leave=False,
                      dynamic_ncols=True) as bar:
                for _ in range(int(self.epochs)):
                    # nearly equal batches that use every pair (a batch of one has no pair to compare)
                    for batch in np.array_split(generator.permutation(n), per_epoch):
                        step_started = time.perf_counter()
                        optimiser.zero_grad(set_to_none=True)
                        pred = self._scores(base, processor, head, images, batch, prompt_text)
                        loss = regression_loss(pred, y[torch.as_tensor(batch, device=device)],
                                               float(self.lambda_fidelity), float(self.lambda_plcc))
                        loss.backward()
                        optimiser.step()
                        schedule.step()
                        losses.append(float(loss.detach()))  # also waits for the GPU: honest step times
                        step_seconds.append(round(time.perf_counter() - step_started, 4))
                        bar.set_postfix(loss=f"{losses[-1]:.4f}")
                        bar.update(1)
            if self.gradient_checkpointing:
                base.activation_checkpointing_disable()
            train_pred = self._predict_raw(base, processor, head, images, prompt_text)
        return {"peft_model": peft_model, "head": head, "losses": losses, "step_seconds": step_seconds,
                "train_predictions": train_pred}

    def _adapted(self, base):
        """(peft model: the fit's adapter put on `base`, head) ready to predict."""
        import torch
        from peft import PeftModel
        from safetensors.torch import load_file

        folder = Path(self.fit_dir_)
        if not (folder / HEAD_FILE).is_file():
            raise SiqaError(f"{folder}: the fine-tuned adapter of {self.name} is missing (was the run moved or "
                            f"its fits/ folder deleted?)")
        adapted = PeftModel.from_pretrained(base, folder / ADAPTER_DIR)
        head = self._head(int(base.config.get_text_config().hidden_size))
        head.load_state_dict(load_file(folder / HEAD_FILE))
        return adapted, head.to(next(base.parameters()).device, dtype=torch.float32)

    def predict_raw(self, X: pd.DataFrame, pairs: pd.DataFrame | None = None) -> np.ndarray:
        """The head's outputs before calibration."""
        rows = check_pairs(self.name, X, pairs)
        with borrowed(self.name, self.base_model, self.path, self.dtype, self.device) as (base, processor, _):
            adapted, head = self._adapted(base)
            try:
                return self.predict_images(base, processor, head, PairImages(processor, self.max_pixels).of_rows(rows))
            finally:
                adapted.unload()

    def predict(self, X: pd.DataFrame, pairs: pd.DataFrame | None = None) -> np.ndarray:
        c = self.calibration_
        span = c["pred_max"] - c["pred_min"]
        scale = (c["target_max"] - c["target_min"]) / span if span > 0 else 0.0
        return c["target_min"] + (self.predict_raw(X, pairs) - c["pred_min"]) * scale
