"""Library-free inference programs: a fitted pool member, meta-feature Ridge or calibrator written as plain
data (JSON + numpy arrays) and run with numpy alone.

A scored pair with every feature cached should not pay for importing torch, scikit-learn, CatBoost, XGBoost
and LightGBM (seconds) to evaluate a few hundred small trees. So every fitted component that can exports a
*program*: a list of steps `{"op": name, **params}`, each a numpy function of the previous step's output
(the member's input matrix first, one score per row last). `run(program, X)` evaluates it. Each op
reproduces the library's own arithmetic, including its quirks, so the program gives the library's predict:

- `tree_ensemble`: binary trees in flat arrays (XGBoost, LightGBM, scikit-learn). The input is cast to the
  library's dtype (XGBoost and scikit-learn compare float32 features), a node sends a row left when
  `x < threshold` (XGBoost) or `x <= threshold` (LightGBM, scikit-learn); NaN goes to the node's default
  side, except where LightGBM reads NaN as 0.0 (a split that saw no NaN in training, `missing_type` None).
  Leaves are summed tree by tree in the
  library's accumulator dtype (XGBoost: float32, from its base score), scikit-learn forests average.
- `oblivious_ensemble`: CatBoost's symmetric trees: float32 features, bit j of the leaf index is
  `x > border` of the tree's split j (NaN: the feature's `nan_value_treatment`), leaves summed in float64,
  then `scale * sum + bias`.
- `mlp`: Linear + exact (erf) GELU layers on float32 values, as torch runs the pool's small networks (each
  layer rounded to float32 from a float64 sum: torch's own float32 sums differ from it by float32 rounding).
- the rest (`take`, `finite_scale`, `log_augment`, `standardise`, `linear`, `affine`, `fill_nonfinite`,
  `rbf_kernel`, `pairwise_mix`, `mean`, `softmax_expectation`, `piecewise_cubic`, `interp`, `clip`) are the
  small maps of the pool's preprocessing, heads and calibrators.

`save(obj)` splits a JSON-able structure holding numpy arrays into JSON text and `.npz` bytes, `restore(text,
npz)` puts it back together, refusing (ValueError) what another `FORMAT` of the ops wrote; nothing is pickled, so a run folder's fast path loads
no code. This module imports numpy only (tests/test_fast_predict.py checks that running a program imports
none of the model libraries).
"""
from __future__ import annotations

import io
import json
import math
import zipfile

import numpy as np

_ARRAY = "__array__"
#: the version of the ops' names and parameters; bump it whenever a program written before would run differently
FORMAT = 1


# --- the ops ------------------------------------------------------------------------------------

def _take(X, index):
    return X[:, np.asarray(index, dtype=np.int64)]


def _finite_scale(X, median, mean, scale):
    """`tabular.models.base.FiniteScaler`: non-finite -> training median, then z-score."""
    return (np.where(np.isfinite(X), X, median) - mean) / scale


def _log_augment(X, columns, offset):
    """`tabular.models.linear.LogAugment`: append log(max(x, 0) + c) of the non-negative training columns."""
    with np.errstate(all="ignore"):
        logged = np.log(np.clip(X[:, np.asarray(columns, dtype=np.int64)], 0, None) + offset)
    return np.hstack([X, logged])


def _standardise(X, mean, scale):
    return (X - mean) / scale


def _linear(X, coef, intercept):
    return X @ coef + intercept


def _affine(x, scale, offset):
    return x * scale + offset


def _fill_nonfinite(X, value):
    return np.where(np.isfinite(X), X, value)


def _rbf_kernel(X, support, dual_coef, intercept, gamma):
    """libsvm's RBF regression: sum_i dual_i exp(-gamma |x - sv_i|^2) + intercept."""
    distance = ((X[:, None, :] - support[None, :, :]) ** 2).sum(axis=2)
    return np.exp(-gamma * distance) @ dual_coef + intercept


def _pairwise_mix(X, operations):
    """Columns, then op(a, b) for every pair a < b and every operation (`mixed_feature_catboost`)."""
    ops = {"add": np.add, "sub": np.subtract, "mul": np.multiply}
    n = X.shape[1]
    mixes = [ops[op](X[:, a], X[:, b]) for a in range(n) for b in range(a + 1, n) for op in operations]
    return np.column_stack([X, *mixes]) if mixes else X


def _mean(X, programs):
    return np.mean([run(p, X) for p in programs], axis=0)


_erf = np.frompyfunc(math.erf, 1, 1)


def _gelu(x: np.ndarray) -> np.ndarray:
    """torch's exact GELU, x * (1 + erf(x / sqrt 2)) / 2, evaluated in float64 and rounded to x's dtype."""
    wide = x.astype(np.float64)
    return (0.5 * wide * (1.0 + _erf(wide / math.sqrt(2.0)).astype(np.float64))).astype(x.dtype)


def _mlp(X, weights, biases):
    """Linear layers with GELU between them on float32 values, as torch runs them; returns the float32 output
    (rows x outputs). Each layer is summed in float64 and rounded to float32, so a row's output does not
    depend on how many rows are scored with it (a float32 matrix product's rounding does)."""
    h = np.asarray(X, dtype=np.float32)
    for k, (w, b) in enumerate(zip(weights, biases)):
        h = (h.astype(np.float64) @ w.T.astype(np.float64) + b.astype(np.float64)).astype(np.float32)
        if k + 1 < len(weights):
            h = _gelu(h)
    return h


def _column(X, index):
    return np.asarray(X[:, index], dtype=np.float64)


def _softmax_expectation(logits, values, gate_input=None, gate_threshold=0.0, gate_softness=1.0):
    """Expected class value under softmax(logits) (float32, as torch), optionally gated toward class 0 by a
    raw input column (`ordinal_class_head`); `gate_input` is that column's values, given by `run`."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    probs = (e / e.sum(axis=1, keepdims=True)).astype(np.float64)
    if gate_input is not None:
        x = np.nan_to_num(gate_input, nan=np.inf)
        gate = 1.0 / (1.0 + np.exp(-np.clip((gate_threshold - x) / gate_softness, -50, 50)))
        probs = (1.0 - gate)[:, None] * probs
        probs[:, 0] += gate
    return probs @ values


def _piecewise_cubic(x, breaks, coefs, tail_slope):
    """A scipy `PPoly` (coefficients highest power first) inside [breaks[0], breaks[-1]]; beyond it the end
    value plus `tail_slope` times the distance (`blend.calibrators.pchip`)."""
    inside = np.clip(x, breaks[0], breaks[-1])
    i = np.clip(np.searchsorted(breaks, inside, side="right") - 1, 0, len(breaks) - 2)
    dx = inside - breaks[i]
    value = np.zeros_like(inside)
    for c in coefs:
        value = value * dx + c[i]
    return value + tail_slope * (x - inside)


def _interp(x, xp, fp):
    """Linear interpolation, x clipped to [xp[0], xp[-1]] (scikit-learn's isotonic `out_of_bounds="clip"`)."""
    return np.interp(np.clip(x, xp[0], xp[-1]), xp, fp)


def _clip(x, low, high):
    return np.clip(x, low, high)


def _tree_ensemble(X, feature, threshold, left, right, value, default_left, roots, compare="<=",
                   input_dtype="float64", nan_as_zero=None, base=0.0,
                   accumulate="float64", average=False):
    """Every tree of a flat node table evaluated for every row; see the module docstring for the rules.
    Nodes: `left[n] < 0` marks a leaf with output `value[n]`; `roots[t]` is the root node of tree t."""
    Xc = np.asarray(X, dtype=input_dtype)
    rows = np.arange(len(Xc))[:, None]
    node = np.broadcast_to(np.asarray(roots, dtype=np.int64), (len(Xc), len(roots))).copy()
    while True:
        inner = left[node] >= 0
        if not inner.any():
            break
        f = np.where(inner, feature[node], 0)
        x = Xc[np.broadcast_to(rows, node.shape), f]
        missing = np.isnan(x)
        if nan_as_zero is not None:
            x = np.where(missing & nan_as_zero[node], 0.0, x)
            missing = missing & ~nan_as_zero[node]
        t = threshold[node]
        go_left = (x < t) if compare == "<" else (x <= t)
        go_left = np.where(missing, default_left[node], go_left)
        node = np.where(inner, np.where(go_left, left[node], right[node]), node)
    leaves = value[node].astype(accumulate)
    total = np.full(len(Xc), base, dtype=accumulate)
    for t in range(leaves.shape[1]):  # tree by tree, as the libraries add them
        total += leaves[:, t]
    if average:
        total = total / leaves.shape[1]
    return total.astype(np.float64)


def _oblivious_ensemble(X, split_feature, split_border, split_nan_true, tree_start, leaf_start, leaf_values,
                        scale=1.0, bias=0.0):
    """CatBoost symmetric trees: `tree_start[t]:tree_start[t+1]` are tree t's splits (bit j = split j),
    its leaves start at `leaf_start[t]` in `leaf_values`."""
    x = np.asarray(X, dtype=np.float32)[:, split_feature]
    bits = np.where(np.isnan(x), split_nan_true, x > split_border.astype(np.float32))
    depth_of = np.arange(len(split_feature)) - np.repeat(tree_start[:-1], np.diff(tree_start))
    weighted = np.concatenate([np.zeros((len(x), 1), dtype=np.int64),
                               np.cumsum(bits.astype(np.int64) << depth_of, axis=1)], axis=1)
    index = weighted[:, tree_start[1:]] - weighted[:, tree_start[:-1]]
    leaves = leaf_values[leaf_start[None, :] + index]
    total = np.zeros(len(x))
    for t in range(leaves.shape[1]):
        total += leaves[:, t]
    return scale * total + bias


OPS = {
    "take": _take, "finite_scale": _finite_scale, "log_augment": _log_augment, "standardise": _standardise,
    "linear": _linear, "affine": _affine, "fill_nonfinite": _fill_nonfinite, "rbf_kernel": _rbf_kernel,
    "pairwise_mix": _pairwise_mix, "mean": _mean, "mlp": _mlp, "column": _column,
    "softmax_expectation": _softmax_expectation, "piecewise_cubic": _piecewise_cubic, "interp": _interp,
    "clip": _clip, "tree_ensemble": _tree_ensemble, "oblivious_ensemble": _oblivious_ensemble,
}


def step(op: str, **params) -> dict:
    """One step of a program (checked against `OPS` when it is written, not when it is first run)."""
    if op not in OPS:
        raise ValueError(f"inference: unknown op {op!r}")
    return {"op": op, **params}


def run(program: list[dict], X: np.ndarray) -> np.ndarray:
    """Evaluate `program` on the float64 matrix (or vector) X. A step with `gate_column` gets that column of
    the program's input as `gate_input` (the ordinal head's gate reads a raw feature)."""
    first = X = np.asarray(X, dtype=np.float64)
    for s in program:
        params = {k: v for k, v in s.items() if k != "op"}
        gate = params.pop("gate_column", None)
        if gate is not None:
            params["gate_input"] = first[:, gate]
        X = OPS[s["op"]](X, **params)
    return np.asarray(X, dtype=np.float64)


# --- plain-data storage -------------------------------------------------------------------------

def save(obj) -> tuple[str, bytes]:
    """(JSON text, .npz bytes) of a structure of dicts, lists, scalars and numpy arrays; the same structure
    gives the same bytes (the archive's time stamps are fixed)."""
    arrays: dict[str, np.ndarray] = {}

    def encode(value):
        if isinstance(value, np.ndarray):
            key = f"a{len(arrays)}"
            arrays[key] = value
            return {_ARRAY: key}
        if isinstance(value, dict):
            return {str(k): encode(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [encode(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return value

    text = json.dumps({"format": FORMAT, "content": encode(obj)}, sort_keys=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue(),
                             compress_type=zipfile.ZIP_DEFLATED)
    return text, buffer.getvalue()


def restore(text: str, npz: bytes) -> object:
    """The structure `save` wrote; arrays are read without pickle (an object array is an error)."""
    with np.load(io.BytesIO(npz), allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}

    def decode(value):
        if isinstance(value, dict):
            if set(value) == {_ARRAY}:
                return arrays[value[_ARRAY]]
            return {k: decode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    stored = json.loads(text)
    if stored.get("format") != FORMAT:
        raise ValueError(f"inference programs of format {stored.get('format')!r}, this siqa reads format {FORMAT}")
    return decode(stored["content"])
