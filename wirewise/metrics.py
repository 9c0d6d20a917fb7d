"""Latency histograms and delivery accounting, mergeable across Locust processes.

Latencies are recorded in microseconds into HdrHistograms (1 us to 60 s, 3 significant
digits: every value is kept within 0.1 %), encoded to a compact base64 string to travel from
Locust workers to the master, and summarised in milliseconds. A percentile is only printed
with its sample count; :func:`too_few_samples` says when the count cannot support it.
"""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
MIN_TAIL_SAMPLES = 10
"""A percentile p needs at least this many samples beyond it: p99 needs 1,000, p99.9 10,000."""


class Histogram:
    """A latency histogram in microseconds; values past 60 s are clamped and counted.

    :meth:`record` is on every delivery's path, and ``HdrHistogram.record_value`` costs
    ~1.4 us of Python. So values are counted in a dict first, keyed by the lowest value of
    their HdrHistogram bucket (values of one bucket are indistinguishable in it), and added
    in bulk before anything reads the histogram: ``hdr`` and every method below flush.
    """

    __slots__ = ("_hdr", "_pending", "_shift_bits", "clamped")

    def __init__(self) -> None:
        self._hdr = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        assert self._hdr.unit_magnitude == 0, "bucket keys below assume LOWEST_US == 1"
        self._shift_bits = self._hdr.sub_bucket_half_count_magnitude + 1
        self._pending: dict[int, int] = {}
        self.clamped = 0

    def record(self, micros: int) -> None:
        self.record_count(micros, 1)

    def record_count(self, micros: int, count: int) -> None:
        """Record ``count`` values of ``micros`` at once."""
        if micros < LOWEST_US:
            micros = LOWEST_US  # receipt in the same microsecond (or a clock step back)
        elif micros > HIGHEST_US:
            micros = HIGHEST_US
            self.clamped += count
        shift = micros.bit_length() - self._shift_bits
        if shift > 0:
            micros = micros >> shift << shift  # the bucket's lowest value
        pending = self._pending
        pending[micros] = pending.get(micros, 0) + count

    @property
    def hdr(self) -> HdrHistogram:
        """The HdrHistogram with every recorded value in it."""
        if self._pending:
            pending, self._pending = self._pending, {}
            for value, count in list(pending.items()):  # a copy: a thread may still add
                self._hdr.record_value(value, count)
        return self._hdr

    @property
    def count(self) -> int:
        return int(self.hdr.get_total_count())

    def encode(self) -> str:
        encoded: bytes = self.hdr.encode()
        return encoded.decode("ascii")

    def add_encoded(self, encoded: str) -> None:
        if encoded:
            self.hdr.decode_and_add(encoded.encode("ascii"))

    @classmethod
    def decode(cls, encoded: str) -> Histogram:
        histogram = cls()
        histogram.add_encoded(encoded)
        return histogram

    def add(self, other: Histogram) -> None:
        self.hdr.add(other.hdr)
        self.clamped += other.clamped

    def summary_ms(self) -> dict[str, float | int | None]:
        """p50/p90/p99/p999/max/mean in milliseconds and the count (None when empty)."""
        count = self.count
        if count == 0:
            return {**{k: None for k in PERCENTILES}, "max": None, "mean": None, "count": 0}
        out: dict[str, float | int | None] = {
            name: round(self.hdr.get_value_at_percentile(p) / 1000, 3)
            for name, p in PERCENTILES.items()
        }
        out["max"] = round(self.hdr.get_max_value() / 1000, 3)
        out["mean"] = round(self.hdr.get_mean_value() / 1000, 3)
        out["count"] = count
        return out


def too_few_samples(count: int) -> list[str]:
    """Names of the percentiles that ``count`` samples cannot support."""
    weak = []
    for name, p in PERCENTILES.items():
        if round(count * (100 - p) / 100, 6) < MIN_TAIL_SAMPLES:
            weak.append(name)
    return weak
