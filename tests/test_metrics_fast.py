"""Histogram.record counts values by bucket before they reach HdrHistogram: nothing may show."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from wirewise.metrics import HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS, Histogram

VALUES = st.lists(
    st.integers(-10, 5000)
    | st.integers(0, HIGHEST_US + 10**6)
    | st.sampled_from([2047, 2048, 4095, 4096]),
    max_size=200,
)


def direct(values: list[int]) -> HdrHistogram:
    """What Histogram did before: every value straight into HdrHistogram, clamped."""
    hdr = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    for value in values:
        hdr.record_value(min(max(value, LOWEST_US), HIGHEST_US))
    return hdr


@settings(max_examples=100, deadline=None)
@given(VALUES)
def test_buffered_recording_reads_like_direct_recording(values: list[int]) -> None:
    histogram = Histogram()
    for value in values:
        histogram.record(value)
    expected = direct(values)
    assert histogram.encode() == expected.encode().decode("ascii")
    assert histogram.count == expected.get_total_count()
    assert histogram.hdr.get_max_value() == expected.get_max_value()
    assert histogram.hdr.get_min_value() == expected.get_min_value()
    assert histogram.hdr.get_mean_value() == expected.get_mean_value()
    for p in (0.0, 50.0, 99.0, 99.9, 100.0):
        assert histogram.hdr.get_value_at_percentile(p) == expected.get_value_at_percentile(p)
    assert histogram.clamped == sum(value > HIGHEST_US for value in values)


@settings(max_examples=100, deadline=None)
@given(st.integers(LOWEST_US, HIGHEST_US))
def test_bucket_key_is_the_lowest_equivalent_value(value: int) -> None:
    histogram = Histogram()
    histogram.record(value)
    (key,) = histogram._pending
    assert key == histogram._hdr.get_lowest_equivalent_value(value)


def test_reads_after_more_records_see_them() -> None:
    histogram = Histogram()
    histogram.record(100)
    assert histogram.count == 1
    histogram.record(200_000)
    other = Histogram()
    other.record(3)
    histogram.add(other)
    assert histogram.count == 3
    assert Histogram.decode(histogram.encode()).summary_ms() == histogram.summary_ms()
