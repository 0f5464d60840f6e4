"""The headline against the pool's own members: is it at least as good as the best one, up to noise?

Every difference is paired: the same rows, folds and bootstrap draws for both sides.
- `gap`: headline Final minus the hindsight-best member's (pooled out-of-fold, mean over repeats), with
  the std of that difference over repeats (the fold luck) and its 95% interval over group-bootstrap
  resamples (which reference images were studied).
- The hindsight-best member is the maximum of many noisy scores, taken on the very rows it is scored on,
  so `gap` is pessimistic for the headline, most of all on a few reference groups. `selected_gap` is the
  difference to the best member chosen *without* the rows it is scored on: on each group-bootstrap draw,
  the member with the best Final on the drawn groups, both scored on the groups left out of that draw
  (the bootstrap bias correction of Tsamardinos et al., "Bootstrapping the out-of-sample predictions for
  efficient and accurate cross-validation", Machine Learning 2018, applied to the difference). The mean
  over draws and its 2.5-97.5 percentiles are reported, and `optimism`: how much the hindsight-best
  member beats that chosen member on the same left-out groups (mean over draws).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import metrics


@dataclass
class Gap:
    """headline minus one other column (its name `versus`): mean and std over repeats, bootstrap interval."""
    versus: str
    gap: float
    gap_std: float | None
    gap_low: float
    gap_high: float

    def text(self) -> str:
        spread = "–" if self.gap_std is None else f"{self.gap_std:.4f}"
        return f"{self.gap:+.4f} ± {spread} over repeats, 95% [{self.gap_low:+.4f}, {self.gap_high:+.4f}]"


@dataclass
class MemberGap(Gap):
    """`Gap` to the hindsight-best member, plus the gap to a member chosen without the scored rows."""
    selected_gap: float | None = None
    selected_low: float | None = None
    selected_high: float | None = None
    optimism: float | None = None
    selected_draws: int = 0           # draws whose left-out groups hold two distinct labels (others cannot score)


def paired_gap(headline: list[np.ndarray], other: list[np.ndarray], y: np.ndarray, versus: str,
               headline_in_bag: np.ndarray, other_in_bag: np.ndarray) -> Gap:
    """headline minus `other` (per-repeat predictions of each), given both columns' Finals on the in-bag
    rows of the same group-bootstrap draws (`metrics.group_bootstrap_draws`, `metrics.finals_on`)."""
    per_repeat = [metrics.final(h, y) - metrics.final(o, y) for h, o in zip(headline, other)]
    low, high = np.percentile(np.asarray(headline_in_bag) - np.asarray(other_in_bag), [2.5, 97.5])
    return Gap(versus, float(np.mean(per_repeat)),
               float(np.std(per_repeat, ddof=1)) if len(per_repeat) > 1 else None, float(low), float(high))


def versus_members(headline: list[np.ndarray], members: dict[str, list[np.ndarray]], y: np.ndarray,
                   draws: list[tuple[np.ndarray, np.ndarray]], headline_in_bag: np.ndarray,
                   members_in_bag: dict[str, np.ndarray]) -> MemberGap:
    """The headline against the best of `members` (name -> per-repeat predictions) on the bootstrap
    `draws`, given the in-bag Finals of the headline and of every member on those draws."""
    y = np.asarray(y, dtype=np.float64)
    names = list(members)
    full = {m: np.mean([metrics.final(p, y) for p in members[m]]) for m in names}
    best = max(names, key=lambda m: (full[m], -names.index(m)))
    gap = paired_gap(headline, members[best], y, best, headline_in_bag, members_in_bag[best])
    # a draw scores out of bag only if the groups it left out hold two distinct labels
    scorable = [b for b, (_, out) in enumerate(draws) if np.unique(y[out]).size >= 2]
    result = MemberGap(**asdict(gap), selected_draws=len(scorable))
    if not scorable:
        return result
    out_rows = [draws[b][1] for b in scorable]
    out_of_bag = np.column_stack([metrics.finals_on(members[m], y, out_rows) for m in names])
    in_bag = np.column_stack([np.asarray(members_in_bag[m])[scorable] for m in names])
    chosen = np.argmax(in_bag, axis=1)  # ties: the first member, as `best` above
    chosen_final = out_of_bag[np.arange(len(scorable)), chosen]
    difference = metrics.finals_on(headline, y, out_rows) - chosen_final
    result.selected_gap = float(np.mean(difference))
    result.selected_low, result.selected_high = (float(v) for v in np.percentile(difference, [2.5, 97.5]))
    result.optimism = float(np.mean(out_of_bag.max(axis=1) - chosen_final))
    return result
