"""Intervals against the normal approximation, SciPy's own bootstrap, and brute force."""

from common import intervals
from common.intervals import Interval

import numpy as np
import pytest
from scipy import stats


def test_mean_interval_is_mean_plus_minus_1_96_standard_errors():
    values = np.random.default_rng(5).normal(3.0, 2.0, size=2000)
    mean, standard_error = values.mean(), stats.sem(values)
    interval = intervals.mean(values, seed=0)
    assert interval.value == pytest.approx(mean)
    assert interval.low < mean < interval.high
    assert (interval.high - interval.low) / 2 == pytest.approx(1.96 * standard_error, rel=0.1)
    narrow = intervals.mean(values, seed=0, confidence=0.5)
    assert (narrow.high - narrow.low) / 2 == pytest.approx(0.674 * standard_error, rel=0.15)


def test_mean_interval_is_seeded_and_skewed_like_bca():
    values = np.random.default_rng(6).exponential(size=400)
    first, again = intervals.mean(values, seed=3), intervals.mean(values, seed=3)
    assert first == again
    # Exponential data: BCa leans right of the symmetric normal interval.
    assert first.high - first.value > first.value - first.low
    reference = stats.bootstrap((values,), np.mean, method="BCa", n_resamples=2000,
                                random_state=np.random.default_rng(3)).confidence_interval
    assert first.low == pytest.approx(reference.low, rel=0.02)
    assert first.high == pytest.approx(reference.high, rel=0.02)


def test_paired_difference_is_tighter_than_separate_intervals():
    rng = np.random.default_rng(7)
    shared = rng.normal(0, 1, 500)  # row difficulty, common to both models
    first, second = shared + 0.1 + rng.normal(0, 0.05, 500), shared + rng.normal(0, 0.05, 500)
    paired = intervals.paired_difference(first, second, seed=0)
    assert paired.value == pytest.approx(np.mean(first - second))
    assert paired.low > 0.09 - 0.02 and paired.high < 0.11 + 0.02
    separate = intervals.mean(first, seed=0)
    assert paired.high - paired.low < (separate.high - separate.low) / 5
    with pytest.raises(ValueError, match="align"):
        intervals.paired_difference(first, second[:-1], seed=0)


def test_statistic_resamples_rows_of_all_samples_together():
    rng = np.random.default_rng(8)
    labels = rng.random(300) < 0.3
    scores = labels + rng.normal(0, 1, 300)

    def gap(labels, scores):
        return scores[labels].mean() - scores[~labels].mean()

    interval = intervals.statistic(gap, labels, scores, seed=1, n_resamples=500)
    assert interval.value == pytest.approx(gap(labels, scores))
    # Brute force: the same resamples drawn by hand.
    draws_rng = np.random.default_rng(1)
    draws = [gap(labels[rows], scores[rows])
             for rows in (draws_rng.integers(0, 300, 300) for _ in range(500))]
    assert (interval.low, interval.high) == pytest.approx(tuple(np.quantile(draws,
                                                                          [0.025, 0.975])))
    with pytest.raises(ValueError, match="rows"):
        intervals.statistic(gap, labels, scores[:-1], seed=0)


def test_constant_values_give_a_point_interval():
    assert intervals.mean(np.full(50, 0.25), seed=0) == Interval(0.25, 0.25, 0.25)


def test_flatten_and_from_record_round_trip():
    flat = intervals.flatten({"ndcg": Interval(0.5, 0.4, 0.6), "count": 3})
    assert flat == {"ndcg": 0.5, "ndcg_ci_low": 0.4, "ndcg_ci_high": 0.6, "count": 3}
    assert intervals.from_record(flat, "ndcg") == Interval(0.5, 0.4, 0.6)
    assert intervals.from_record(flat, "count") == 3


def test_show_is_the_one_format():
    assert intervals.show(0.51583, 0.49531, 0.53662) == "0.5158 [0.4953, 0.5366]"
    assert str(Interval(0.51583, 0.49531, 0.53662)) == "0.5158 [0.4953, 0.5366]"
    assert intervals.show(12) == "12"
    assert intervals.show(None) == "–"
    assert intervals.show(123456.7) == "123,457"
    assert intervals.show("mse") == "mse"


@pytest.mark.parametrize("values", [np.zeros((3, 2)), [], [1.0, np.nan]],
                         ids=["2d", "empty", "nan"])
def test_bad_values_raise(values):
    with pytest.raises(ValueError):
        intervals.mean(values, seed=0)


def test_over_seeds_and_rows_is_the_seed_mean_and_widens_with_seed_spread():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=200)
    same = [(rows,), (rows,), (rows,)]
    apart = [(rows - 1.0,), (rows,), (rows + 1.0,)]
    tight = intervals.over_seeds_and_rows(np.mean, same, seed=1)
    wide = intervals.over_seeds_and_rows(np.mean, apart, seed=1)
    assert tight.value == pytest.approx(rows.mean()) and wide.value == pytest.approx(rows.mean())
    # Identical seeds: only the rows vary, as a plain bootstrap of the rows says.
    plain = intervals.statistic(np.mean, rows, seed=1)
    assert tight.high - tight.low == pytest.approx(plain.high - plain.low, rel=0.25)
    assert (wide.high - wide.low) > 3 * (tight.high - tight.low)
    with pytest.raises(ValueError, match="share one"):
        intervals.over_seeds_and_rows(np.mean, [(rows,), (rows[:5],)], seed=1)


def test_seed_tolerance_is_three_standard_errors_of_the_seed_mean():
    values = [0.5, 0.7, 0.6, 0.8]
    expected = 3 * np.std(values, ddof=1) / np.sqrt(4)
    assert intervals.seed_tolerance(values) == pytest.approx(expected)
    assert intervals.seed_tolerance([1.0, 1.0], floor=0.01) == 0.01
    with pytest.raises(ValueError):
        intervals.seed_tolerance([1.0])


def test_seed_tolerances_floor_each_name_and_fall_back_to_the_hand_set_ones_for_one_seed():
    per_seed = {"pr_auc": [0.20, 0.22, 0.25], "hits": [10.0, 10.0, 10.0]}
    got = intervals.seed_tolerances(per_seed, one_seed={"pr_auc": 0.03}, floors={"hits": 1.0})
    assert got["pr_auc"] == pytest.approx(3 * np.std([0.20, 0.22, 0.25], ddof=1) / np.sqrt(3))
    assert got["hits"] == 1.0  # no spread: the floor, one grain of the count
    one = {"pr_auc": [0.2], "hits": [10.0]}
    assert intervals.seed_tolerances(one, {"pr_auc": 0.03, "hits": 2}) == {"pr_auc": 0.03,
                                                                          "hits": 2}
