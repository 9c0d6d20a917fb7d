"""Confidence intervals resample messages, not deliveries; medians of repeats; line fits."""

from __future__ import annotations

import numpy as np
import pytest

from wirewise import stats


def test_percentile_reads_like_hdrhistogram() -> None:
    values = np.arange(1, 101)
    assert stats.percentile(values, 50) == 50
    assert stats.percentile(values, 99) == 99
    assert stats.percentile(values, 100) == 100
    assert stats.percentile(np.array([]), 50) is None


def test_median_skips_missing_values() -> None:
    assert stats.median([3.0, None, 1.0, 2.0]) == 2.0
    assert stats.median([1.0, 4.0]) == 2.5
    assert stats.median([None]) is None


def test_resampling_messages_widens_the_interval_when_deliveries_move_together() -> None:
    """Twenty messages of 500 deliveries each: the deliveries of one message share its delay.
    Treated as 10,000 independent samples the p50 would look precise; by messages it is not."""
    rng = np.random.default_rng(7)
    per_message = rng.uniform(1_000, 20_000, 20)
    values = np.repeat(per_message, 500) + rng.uniform(0, 50, 10_000)
    by_message = np.repeat(np.arange(20), 500)
    clustered = stats.bootstrap([(values, by_message)], (50.0,))[50.0]
    independent = stats.bootstrap([(values, np.arange(10_000))], (50.0,))[50.0]
    assert clustered is not None and independent is not None
    assert clustered[0] <= stats.percentile(values, 50) <= clustered[1]
    assert clustered[1] - clustered[0] > 5 * (independent[1] - independent[0])


def test_the_interval_is_reproducible_and_covers_the_median_of_repeats() -> None:
    rng = np.random.default_rng(1)
    repeats = [(rng.exponential(2_000, 3_000), np.repeat(np.arange(300), 10)) for _ in range(3)]
    first = stats.bootstrap(repeats, (50.0, 99.0))
    again = stats.bootstrap(repeats, (50.0, 99.0))
    assert first == again, "summarize run twice gives the same intervals"
    point = stats.median([stats.percentile(v, 99) for v, _ in repeats])
    low, high = first[99.0]  # type: ignore[misc]
    assert low <= point <= high


def test_a_repeat_without_values_gives_no_interval() -> None:
    assert stats.bootstrap([(np.array([1.0]), np.array([0])), (np.array([]), np.array([]))]) == {
        50.0: None,
        99.0: None,
    }


def test_overlap_is_what_not_significant_means() -> None:
    assert stats.overlaps((1.0, 2.0), (1.5, 3.0)) is True
    assert stats.overlaps((1.0, 2.0), (2.5, 3.0)) is False
    assert stats.overlaps(None, (1.0, 2.0)) is None


def test_fit_line_with_its_slope_interval() -> None:
    xs = [1_000.0, 2_000.0, 3_000.0, 4_000.0]
    exact = stats.fit_line(xs, [10_000 * x + 5e7 for x in xs])
    assert exact["slope"] == pytest.approx(10_000)
    assert exact["r2"] == pytest.approx(1.0)
    assert exact["slope_low"] == pytest.approx(exact["slope_high"])
    noisy = stats.fit_line(
        xs, [10_000 * x + 5e7 + e for x, e in zip(xs, (3e5, -2e5, 1e5, -3e5), strict=True)]
    )
    assert noisy["slope_low"] < noisy["slope"] < noisy["slope_high"]
    with pytest.raises(ValueError):
        stats.fit_line([1.0, 1.0], [2.0, 3.0])
    with pytest.raises(ValueError):
        stats.fit_line([1.0], [1.0])


def test_power_law_follows_a_falling_cost_per_unit() -> None:
    """y = 4 * x ** 0.5 and y = x ** 2 are recovered exactly; a falling y is held flat
    (at its geometric mean)."""
    points = [(x, 4 * x**0.5) for x in (2.0, 4.0, 8.0, 16.0)]
    assert stats.power_law_at(points, 64.0) == pytest.approx(32.0)
    assert stats.power_law_at([(x, x**2) for x in (1.0, 2.0, 4.0)], 8.0) == pytest.approx(64.0)
    falling = [(1.0, 9.0), (2.0, 8.0), (4.0, 7.0)]
    assert stats.power_law_at(falling, 8.0) == pytest.approx((9 * 8 * 7) ** (1 / 3))
    assert stats.power_law_at([(10.0, 20.0)], 15.0) == pytest.approx(30.0)
    with pytest.raises(ValueError):
        stats.power_law_at([], 1.0)


def test_power_law_smooths_one_noisy_step() -> None:
    """A ramp (y = 2 * x ** 0.8) whose last step read 15 % high: the line through the last two
    steps carries the error forward twice over; the fit over four steps about halves it."""
    xs = [10.0, 14.0, 19.6, 27.44]
    ys = [2 * x**0.8 for x in xs]
    ys[-1] *= 1.15
    true = 2 * 38.42**0.8
    two_point = ys[-1] + (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) * (38.42 - xs[-1])
    fitted = stats.power_law_at(list(zip(xs, ys, strict=True)), 38.42)
    assert abs(fitted - true) < 0.6 * abs(two_point - true)
