"""Blend rules against the hindsight-best member on small tables, replayed on cached nested pool tables.

    python bench/blend_rules.py [--tables csiq:8:0,tid2013:8:1,...,syn150,syn500] [--cache DIR] [--rules a,b]

A nested run's pool tables (`tabular.nested.pool_tables`: every member's outer and inner out-of-fold
predictions, default preset, 3 repeats of 5 grouped folds) are what the blender learns from. They are
fitted once per table and cached (`--cache`, default ~/.cache/siqa/blend-rules: pickles, so a folder
only this user writes to), so a blend rule is then scored in seconds: per outer fold, the rule weights
the members from the inner table alone, the preset's calibrator (`auto`) maps the blend, and the
calibrated blend of the outer fold's rows is scored as the headline is (pooled Final, mean over
repeats). Each rule's row: its Final minus the hindsight-best member's on the same folds (what issue 16
asks to be >= 0 up to noise).

Tables: `name:refs:seed` subsamples TID2013 / CSIQ as `bench_learning.py --small` does (186 rows of
`refs` reference images), `syn150` / `syn500` the synthetic tables. Rules (`RULES`): `top` is the
presets' default (`blend.methods.top`); the others are the alternatives issue 16 names or suggests.
"""
from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_learning import real_table, synthetic_table  # noqa: E402
from blend.blender import BoundedBlender  # noqa: E402
from blend.calibration import LabelScale, MonotoneCalibrator  # noqa: E402
from blend.choice import standard_errors  # noqa: E402
from blend.settings import settings_from  # noqa: E402
from tabular import metrics  # noqa: E402
from tabular.folds import assign_folds, inner_folds  # noqa: E402
from tabular.nested import inner_table, outer_table, pool_tables  # noqa: E402
from tabular.stack import PoolPlan, StackedPool  # noqa: E402

TABLES = ("csiq:8:0,tid2013:8:1,csiq:10:2,tid2013:8:3,csiq:6:4,tid2013:6:5,csiq:7:6,tid2013:10:7,csiq:9:8,"
          "tid2013:9:9,syn150,syn500")
REPEATS = 3


def _ranked(P, y):
    scores = np.array([metrics.final(P[:, j], y) for j in range(P.shape[1])])
    return scores, np.argsort(-scores, kind="stable")


def _equal(P, chosen):
    weights = np.zeros(P.shape[1])
    weights[list(chosen)] = 1.0 / len(chosen)
    return weights


def soft_top(P, y, groups, k=5, width=1.0):
    """Weights exp(-z²/2) on the top k, z = the member's gap to the best in standard errors (inner folds)."""
    scores, order = _ranked(P, y)
    chosen = list(order[:k])
    errors = standard_errors({j: P[:, j] for j in chosen}, y, inner_folds(groups, 5, 0), int(order[0]))
    weights = np.zeros(P.shape[1])
    for j in chosen:
        gap = scores[order[0]] - scores[j]
        z = 0.0 if gap == 0 else gap / errors[j] if errors[j] > 0 else np.inf
        weights[j] = np.exp(-0.5 * (z / width) ** 2)
    return weights / weights.sum()


def best_prefix(P, y, groups, k=3):
    """Equal weights on the top j <= k members, j the one whose average scores best on the inner rows."""
    _, order = _ranked(P, y)
    finals = [metrics.final(P[:, order[:j]].mean(axis=1), y) for j in range(1, k + 1)]
    return _equal(P, order[:int(np.argmax(finals)) + 1])


def bootstrap_best(P, y, groups, draws=100):
    """Weight = how often the member is the best on a group-bootstrap resample of the inner rows."""
    sets = [rows for rows, _ in metrics.group_bootstrap_draws(groups, draws)]
    finals = np.column_stack([metrics.finals_on([P[:, j]], y, sets) for j in range(P.shape[1])])
    return np.bincount(np.argmax(finals, axis=1), minlength=P.shape[1]) / draws


def bootstrap_se_top(P, y, groups, k=3, factor=2.0, draws=100):
    """`top` with the standard error of the gap taken over group-bootstrap resamples, not inner folds."""
    scores, order = _ranked(P, y)
    sets = [rows for rows, _ in metrics.group_bootstrap_draws(groups, draws)]
    boot = {j: metrics.finals_on([P[:, j]], y, sets) for j in order[:k]}
    best = boot[order[0]]
    return _equal(P, [j for j in order[:k] if scores[j] >= scores[order[0]] - factor * np.std(best - boot[j], ddof=1)])


def sign_top(P, y, groups, k=3, factor=2.0):
    """`top`, also dropping a member that the best beats on every inner fold (a sign test: 1/32 with 5 folds)."""
    scores, order = _ranked(P, y)
    fold = inner_folds(groups, 5, 0)
    chosen = list(order[:k])
    errors = standard_errors({j: P[:, j] for j in chosen}, y, fold, int(order[0]))
    per_fold = {j: np.array([metrics.final(P[fold == f, j], y[fold == f]) for f in np.unique(fold)]) for j in chosen}
    return _equal(P, [j for j in chosen if scores[j] >= scores[order[0]] - factor * errors[j]
                      and (j == order[0] or (per_fold[j] > per_fold[order[0]]).any())])


def _method(name, **params):
    return lambda P, y, groups: BoundedBlender(method=name, **params).fit(P, y, groups).weights_


RULES = {
    "top": _method("top", top_k=3), "top_k5": _method("top", top_k=5), "best": _method("best"),
    "greedy": _method("greedy", rounds=40), "soft_top": soft_top, "best_prefix": best_prefix,
    "bootstrap_best": bootstrap_best, "sign_top": sign_top, "bootstrap_se_top": bootstrap_se_top,
}


def table(key: str):
    if key.startswith("syn"):
        return synthetic_table(key)
    name, refs, seed = key.split(":")
    return real_table(name, int(refs), seed=int(seed))


def cached_pool(key: str, cache: Path) -> dict:
    path = cache / (key.replace(":", "_") + ".pkl")
    if path.exists():
        return pickle.loads(path.read_bytes())
    data = table(key)
    settings = settings_from({"tabular": {"preset": "default", "jobs": 1, "threads": 1}}).tabular
    columns, K, seed = list(data.X.columns), settings.folds, settings.seed
    pool = StackedPool(settings, columns, [], seed, PoolPlan(frozenset(settings.members_below(data.n_rows))))
    members = pool.member_names()
    repeats = []
    for r in range(REPEATS):
        fold = assign_folds(data.target, data.groups, K, seed + r, settings.label_bins, source=key)
        repeats.append((fold, pool_tables(pool, data, fold, K, tqdm(disable=True), key, dict.fromkeys(members, 0.0))))
    cached = {"target": data.target, "groups": data.groups, "members": members,
              "blended": pool.blended_names(members), "repeats": repeats}
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(cached))
    return cached


def replay(cached: dict, rule) -> float:
    """The calibrated nested blend's pooled Final under `rule`, mean over repeats."""
    target, groups, blended = cached["target"], cached["groups"], cached["blended"]
    scale = LabelScale().fit(target)
    finals = []
    for fold, predictions in cached["repeats"]:
        K = int(fold.max()) + 1
        outer = outer_table(predictions, K)
        scored = np.empty(len(target))
        for k in range(K):
            inner = inner_table(predictions, fold, k, K)[blended]
            rows = inner.index.to_numpy()
            weights = rule(inner.to_numpy(), target[rows], groups[rows])
            calibrator = MonotoneCalibrator("auto").fit(inner.to_numpy() @ weights, target[rows], groups[rows], scale)
            test = np.flatnonzero(fold == k)
            scored[test] = calibrator.transform(outer.loc[test, blended].to_numpy() @ weights)
        finals.append(metrics.final(scored, target))
    return float(np.mean(finals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=TABLES)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "siqa" / "blend-rules")
    parser.add_argument("--rules", default=",".join(RULES))
    args = parser.parse_args()
    rules = args.rules.split(",")
    rows = []
    for key in args.tables.split(","):
        cached = cached_pool(key, args.cache)
        target = cached["target"]
        member = {m: np.mean([metrics.final(outer_table(p, int(f.max()) + 1)[m].to_numpy(), target)
                              for f, p in cached["repeats"]]) for m in cached["members"]}
        best = max(member, key=member.get)
        row = {"table": key, "best_member": f"{best} {member[best]:.4f}"}
        row.update({rule: replay(cached, RULES[rule]) - member[best] for rule in rules})
        rows.append(row)
        print(" | ".join(f"{k} {v:+.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    frame = pd.DataFrame(rows)
    summary = pd.DataFrame([{"table": "mean", **frame[rules].mean()}, {"table": "min", **frame[rules].min()}])
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print("rule Final minus the hindsight-best member's (pooled out-of-fold, mean over 3 repeats):")
        print(pd.concat([frame, summary]).to_string(index=False, na_rep="",
                                                    float_format=lambda v: f"{v:+.4f}"))


if __name__ == "__main__":
    main()
