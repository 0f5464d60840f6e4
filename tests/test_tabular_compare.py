"""The headline against the pool's members: paired gaps, and the hindsight pick's optimism (tabular.compare)."""
from __future__ import annotations

import numpy as np
import pytest

from tabular import compare, metrics


def _table(n_groups=10, per_group=20, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    y = rng.normal(size=n_groups * per_group) + rng.normal(size=n_groups)[groups]
    return rng, y, groups


def _versus(headline, members, y, groups, draws=200):
    sets = metrics.group_bootstrap_draws(groups, draws)

    def in_bag(preds):
        return metrics.finals_on(preds, y, [rows for rows, _ in sets])

    return compare.versus_members(headline, members, y, sets, in_bag(headline),
                                  {m: in_bag(p) for m, p in members.items()})


def test_draws_split_the_groups_into_drawn_and_left_out():
    groups = np.repeat(np.arange(6), 3)
    for in_bag, out_of_bag in metrics.group_bootstrap_draws(groups, 30, seed=3):
        assert in_bag.size == groups.size  # as many groups as there are, with replacement
        assert not set(groups[in_bag]) & set(groups[out_of_bag])
        assert set(groups[in_bag]) | set(groups[out_of_bag]) == set(range(6))
        assert np.array_equal(np.sort(out_of_bag), np.flatnonzero(np.isin(groups, groups[out_of_bag])))


def test_a_headline_equal_to_the_best_member_has_no_gap():
    rng, y, groups = _table()
    members = {"good": [y + rng.normal(0, 0.5, y.size)], "poor": [y + rng.normal(0, 2.0, y.size)]}
    result = _versus(members["good"], members, y, groups)
    assert result.versus == "good" and result.gap == 0 and result.gap_low == result.gap_high == 0
    assert result.gap_std is None  # one repeat: no spread
    assert result.selected_gap == pytest.approx(0, abs=2e-3)  # the other groups pick "good" nearly always
    assert result.optimism >= 0


def test_the_hindsight_pick_of_many_equal_members_is_optimistic_and_the_chosen_one_is_not():
    # fifteen members of one quality and a headline of that same quality: against the hindsight maximum the
    # headline looks worse; against a member chosen on other groups it does not (on average over tables)
    gaps, selected = [], []
    for seed in range(6):
        rng, y, groups = _table(n_groups=8, per_group=25, seed=seed)
        members = {f"m{j}": [y + rng.normal(0, 1.0, y.size)] for j in range(15)}
        result = _versus([y + rng.normal(0, 1.0, y.size)], members, y, groups)
        assert result.gap < -0.02 and result.optimism > 0.05
        assert result.selected_low < result.selected_gap < result.selected_high
        gaps.append(result.gap)
        selected.append(result.selected_gap)
    assert abs(np.mean(selected)) < abs(np.mean(gaps)) / 2


def test_a_clearly_better_headline_is_ahead_on_every_count():
    rng, y, groups = _table(seed=2)
    members = {"a": [y + rng.normal(0, 1.5, y.size)], "b": [y + rng.normal(0, 1.5, y.size)]}
    result = _versus([y + rng.normal(0, 0.3, y.size)], members, y, groups)
    assert result.gap > 0.05 and result.gap_low > 0 and result.selected_low > 0


def test_gaps_over_repeats_have_a_spread_and_one_group_has_no_left_out_draw():
    rng, y, groups = _table(seed=3)
    members = {"a": [y + rng.normal(0, 1, y.size) for _ in range(3)]}
    headline = [y + rng.normal(0, 1, y.size) for _ in range(3)]
    result = _versus(headline, members, y, groups)
    per_repeat = [metrics.final(h, y) - metrics.final(m, y) for h, m in zip(headline, members["a"])]
    assert result.gap == pytest.approx(np.mean(per_repeat))
    assert result.gap_std == pytest.approx(np.std(per_repeat, ddof=1))
    single = _versus(headline, members, y, np.zeros(y.size), draws=5)
    assert single.selected_draws == 0 and single.selected_gap is None and single.optimism is None
