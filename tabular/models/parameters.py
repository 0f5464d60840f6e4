"""What the pool models' constructor parameters mean, and their ranges: one entry per parameter name.

A pool model's settings schema is its constructor signature (`PoolModel.Settings`); a parameter takes its
meaning and constraints from `Annotated[..., Field(...)]` in the signature when it has one, else from here.
Names mean the same in every model that takes them (`learning_rate`, `epochs`, `hidden`, ...), so a model's
new parameter is either described here once or annotated in its own signature; a contract test checks that
every parameter of every registered model has a meaning.
"""
from __future__ import annotations

from pydantic import Field

_POSITIVE = {"gt": 0}
_SHARE = {"gt": 0, "le": 1}

PARAMETERS = {
    # feature selection and preprocessing
    "columns": Field(description="feature columns to use (default: all)"),
    "log_features": Field(description="also feed sign(x) * log1p(|x|) of every feature"),
    "use_meta": Field(description="also use the dense-block Ridge meta-features"),
    # trees and boosting
    "iterations": Field(ge=1, description="boosting rounds"),
    "n_estimators": Field(ge=1, description="trees"),
    "depth": Field(ge=1, le=16, description="tree depth"),
    "max_depth": Field(ge=1, description="maximum tree depth"),
    "num_leaves": Field(ge=2, description="leaves per tree"),
    "learning_rate": Field(**_SHARE, description="boosting step size"),
    "l2_leaf_reg": Field(ge=0, description="L2 penalty on leaf values"),
    "reg_lambda": Field(ge=0, description="L2 penalty on leaf weights"),
    "rsm": Field(description="share of features tried per split, or \"auto\" (all up to 50 columns, fewer beyond)"),
    "subsample": Field(**_SHARE, description="share of rows sampled per tree"),
    "colsample_bytree": Field(**_SHARE, description="share of features sampled per tree"),
    "min_child_samples": Field(ge=1, description="fewest rows in a leaf"),
    "min_child_weight": Field(ge=0, description="least hessian weight in a child"),
    "min_samples_leaf": Field(ge=1, description="fewest rows in a leaf"),
    "max_features": Field(**_SHARE, description="share of features tried per split"),
    # mixed-feature CatBoost (rank 3)
    "n_auto": Field(ge=0, description="features picked by relevance when `columns` is not given"),
    "operations": Field(description="pairwise feature mixes: add, sub, mul"),
    "n_seeds": Field(ge=1, description="CatBoost seeds averaged"),
    # kernel and linear
    "C": Field(**_POSITIVE, description="SVR penalty"),
    "epsilon": Field(ge=0, description="SVR epsilon-tube width"),
    "gamma": Field(description="RBF kernel width: \"scale\", \"auto\" or a number"),
    "max_rows": Field(ge=2, description="rows subsampled for fitting above this many"),
    "alphas": Field(min_length=1, description="Ridge penalties the grouped inner CV chooses from"),
    "inner_folds": Field(ge=2, description="grouped inner folds choosing the penalty"),
    # neural heads
    "hidden": Field(description="hidden layer widths"),
    "head_hidden": Field(description="hidden layer widths of the regression head"),
    "dropout": Field(ge=0, lt=1, description="dropout rate"),
    "epochs": Field(ge=1, description="passes over the training rows"),
    "max_steps": Field(ge=1, description="optimiser steps at most"),
    "batch_size": Field(ge=1, description="rows per optimiser step"),
    "predict_batch_size": Field(ge=1, description="pairs per forward pass when predicting"),
    "lr": Field(**_POSITIVE, description="learning rate"),
    "weight_decay": Field(ge=0, description="AdamW weight decay"),
    "warmup_ratio": Field(ge=0, lt=1, description="share of steps with a linear learning-rate warm-up"),
    "lambda_mse": Field(ge=0, description="weight of the squared-error loss"),
    "lambda_fidelity": Field(ge=0, description="weight of the pairwise fidelity loss (Gaussian CDF)"),
    "lambda_plcc": Field(ge=0, description="weight of the PLCC loss"),
    "n_classes": Field(ge=2, description="score classes of the ordinal head (expected score over them)"),
    "gate_feature": Field(description="feature of the semantic gate (rank 5: CLIP cosine); unset = no gate"),
    "gate_threshold": Field(description="below this value of the gate feature the score goes to the lowest class"),
    "gate_softness": Field(gt=0, description="width of the gate's sigmoid"),
    # fine-tuned vision-language members
    "base_model": Field(description="Hugging Face repo id of the base checkpoint"),
    "path": Field(description="checkpoint folder; \"\" = $SIQA_WEIGHTS_DIR/<base_model>, then the HF cache"),
    "lora_rank": Field(ge=1, description="LoRA rank"),
    "lora_alpha": Field(ge=1, description="LoRA scaling alpha"),
    "lora_dropout": Field(ge=0, lt=1, description="LoRA dropout"),
    "lora_targets": Field(description="parts that get adapters: vision, aligner, language"),
    "lora_modules": Field(description="regular expression of module names to adapt (overrides lora_targets)"),
    "max_pixels": Field(ge=28 * 28, description="pixels per image; larger images are downscaled, aspect kept"),
    "prompt": Field(description="the instruction shown with the two images"),
    "gradient_checkpointing": Field(description="recompute activations in the backward pass (less memory)"),
    "dtype": Field(description="weights dtype: bfloat16, float16 or float32"),
    "device": Field(description="auto (CUDA when present), cpu, cuda or cuda:N"),
    "prompts_per_step": Field(ge=1, description="GRPO prompts per optimiser step"),
    "num_generations": Field(ge=2, description="GRPO sampled answers per prompt"),
    "max_completion_length": Field(ge=1, description="tokens per sampled answer"),
    "temperature": Field(ge=0, description="sampling temperature of training answers"),
    "predict_temperature": Field(ge=0, description="sampling temperature of predicted answers"),
    "k_samples": Field(ge=1, description="sampled answers averaged per prediction"),
}
