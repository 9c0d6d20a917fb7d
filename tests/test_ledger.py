"""The per-message ledger: every expected delivery accounted for, extras never netting out losses,
and the raw file round-tripping exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wirewise.ledger import OK, REFUSED, UNANSWERED, UNSENT, RawMessages, account

START, END = 1_000_000, 2_000_000


def send(room: int, scheduled: int, msg_id: int, status: int = OK) -> list[int]:
    issued = scheduled + 100 if status != UNSENT else -1
    answered = scheduled + 900 if status in (OK, REFUSED) else -1
    return [room, scheduled, issued, answered, msg_id if status == OK else -1, status]


def delivery(room: int, msg_id: int, sent_at: int, latency: int) -> list[int]:
    return [room, msg_id, sent_at, sent_at + latency]


def raw(sends: list[list[int]], deliveries: list[list[int]], receivers: list[int]) -> RawMessages:
    return RawMessages(
        rooms=[f"room-{i}" for i in range(len(receivers))],
        receivers=receivers,
        sends=np.array(sends, dtype=np.int64).reshape(-1, 6),
        deliveries=np.array(deliveries, dtype=np.int64).reshape(-1, 4),
    )


def test_every_receiver_got_every_message() -> None:
    sends = [send(0, START + 10, 11), send(0, START + 20, 12), send(1, START + 30, 21)]
    deliveries = [delivery(0, i, START + 10 * (i - 10), 500) for i in (11, 12) for _ in range(3)]
    deliveries += [delivery(1, 21, START + 30, 700) for _ in range(2)]
    acct = account(raw(sends, deliveries, [3, 2]), START, END)
    assert acct.deliveries == {
        "expected": 3 * 2 + 2,
        "delivered": 8,
        "lost": 0,
        "duplicated": 0,
        "extra": 0,
        "extra_reasons": {},
    }
    assert acct.closes
    assert sorted(acct.latency_us.tolist()) == [500] * 6 + [700] * 2
    assert len(set(acct.message_of.tolist())) == 3, "deliveries are grouped by message"
    assert acct.publisher["scheduled"] == acct.publisher["sent"] == acct.publisher["answered"] == 3
    assert acct.lag_us.tolist() == [100, 100, 100]
    assert acct.send_latency_us.tolist() == [900, 900, 900], "timed from the schedule"


def test_extras_never_cancel_losses() -> None:
    """One receiver misses message 11 while message 12 reaches a fourth, unexpected reader:
    a net count would say 6 of 6; the ledger says 1 lost and 1 extra."""
    sends = [send(0, START + 10, 11), send(0, START + 20, 12)]
    deliveries = [delivery(0, 11, START + 10, 300)] * 2 + [delivery(0, 12, START + 20, 300)] * 4
    acct = account(raw(sends, deliveries, [3]), START, END)
    d = acct.deliveries
    assert (d["expected"], d["delivered"], d["lost"], d["extra"]) == (6, 6, 1, 1)
    assert d["delivered"] == d["expected"] - d["lost"] + d["extra"]
    assert d["extra_reasons"] == {"more deliveries of a message than its room had receivers": 1}
    assert not acct.closes


def test_each_extra_is_explained_by_its_sends_fate() -> None:
    """A send whose answer never came was still stored: its deliveries are extra, and say why."""
    sends = [send(0, START + 10, 11), send(0, START + 20, -1, UNANSWERED)]
    deliveries = [delivery(0, 11, START + 10, 300)] * 2 + [delivery(0, 12, START + 20, 300)] * 2
    deliveries += [delivery(0, 99, START + 50, 300)]  # nobody here scheduled it
    acct = account(raw(sends, deliveries, [2]), START, END)
    d = acct.deliveries
    assert (d["expected"], d["delivered"], d["lost"], d["extra"]) == (2, 5, 0, 3)
    assert d["extra_reasons"] == {
        "a send whose answer never came was stored and delivered": 2,
        "a message this run's senders did not schedule in the window": 1,
    }
    assert acct.publisher["unanswered"] == 1
    assert not acct.closes, "an unanswered send leaves the ledger open"


def test_only_the_window_counts_and_unsent_sends_are_counted() -> None:
    sends = [send(0, START - 5, 1), send(0, START + 10, 11), send(0, END + 5, 12)]
    sends += [send(0, START + 40, -1, UNSENT)]
    deliveries = [delivery(0, 1, START - 5, 100), delivery(0, 11, START + 10, 100)]
    deliveries += [delivery(0, 12, END + 5, 100)]
    acct = account(raw(sends, deliveries, [1]), START, END)
    assert acct.deliveries["expected"] == acct.deliveries["delivered"] == 1
    assert acct.publisher == {
        "scheduled": 2,
        "sent": 1,
        "unsent": 1,
        "answered": 1,
        "refused": 0,
        "unanswered": 0,
    }
    assert not acct.closes, "a scheduled send that never went out leaves the ledger open"


def test_receivers_of_a_span_can_be_given() -> None:
    """An idle ramp's plateau has its own receivers, not those at the window's opening."""
    sends = [send(0, START + 10, 11)]
    deliveries = [delivery(0, 11, START + 10, 100)] * 5
    acct = account(raw(sends, deliveries, [2]), START, START + 11, receivers=[5])
    assert (acct.deliveries["expected"], acct.deliveries["lost"], acct.deliveries["extra"]) == (
        5,
        0,
        0,
    )


def test_the_raw_file_round_trips(tmp_path: Path) -> None:
    sends = [send(0, START + 10, 11), send(1, START + 20, 21, REFUSED)]
    deliveries = [delivery(0, 11, START + 10, 1234), delivery(1, 21, START + 20, 56)]
    before = raw(sends, deliveries, [4, 7])
    before.duplicated = 3
    path = tmp_path / "messages.npz"
    before.save(path)
    after = RawMessages.load(path)
    assert after.rooms == before.rooms and after.receivers == before.receivers
    assert after.duplicated == 3
    assert np.array_equal(after.sends, before.sends)
    assert np.array_equal(after.deliveries, before.deliveries)


# -- two load-generator processes, merged at the master ------------------------------------------


def worker_final(rooms: list[str], sends: list[list[int]], deliveries: list[list[int]]) -> dict:
    """What a Locust worker sends the master at the end (see scenarios/_record.Recorder.final),
    through msgpack as Locust's messages go. It has one receiver in each of its rooms."""
    import msgpack

    final = {
        "rooms": rooms,
        "sends": np.array(sends, dtype=np.int64).reshape(-1, 6).tobytes(),
        "deliveries": np.array(deliveries, dtype=np.int64).reshape(-1, 4).tobytes(),
        "duplicated": 1,
        "connected": {name: 1 for name in rooms},
    }
    return msgpack.unpackb(msgpack.packb(final), raw=False)


def test_two_workers_merge_into_the_union_of_their_values() -> None:
    """Each worker numbers rooms in its own order (and has a receiver in each of them); the
    merged ledger and the latency histogram built from it are exactly those of one process
    that saw every value."""
    from wirewise.metrics import Histogram
    from wirewise.summarize import latency_of

    rng = np.random.default_rng(3)
    names = ["chat-0", "chat-1", "chat-2"]
    orders = (["chat-2", "chat-0"], ["chat-0", "chat-1"])
    tables: list[tuple[list, list]] = [([], []), ([], [])]
    all_sends, all_deliveries = [], []
    for n in range(100):
        sender = n % 2
        room = orders[sender][n // 2 % 2]
        scheduled, msg_id = START + 1_000 * n, 10_000 + n
        tables[sender][0].append(send(orders[sender].index(room), scheduled, msg_id))
        all_sends.append(send(names.index(room), scheduled, msg_id))
        for worker, order in enumerate(orders):
            if room in order:
                latency = int(rng.integers(200, 50_000))
                tables[worker][1].append(delivery(order.index(room), msg_id, scheduled, latency))
                all_deliveries.append(delivery(names.index(room), msg_id, scheduled, latency))
    finals = [worker_final(order, *tables[w]) for w, order in enumerate(orders)]
    merged = merge_and_check(finals)
    one = raw(all_sends, all_deliveries, [2, 1, 1])
    merged_acct, one_acct = account(merged, START, END), account(one, START, END)
    assert merged_acct.deliveries == {**one_acct.deliveries, "duplicated": 2}
    assert merged_acct.deliveries["lost"] == merged_acct.deliveries["extra"] == 0
    assert merged_acct.deliveries["delivered"] == len(all_deliveries)
    assert sorted(merged_acct.latency_us.tolist()) == sorted(one_acct.latency_us.tolist())
    union = Histogram()
    for row in all_deliveries:
        union.record(row[3] - row[2])
    merged_latency = latency_of(merged_acct.latency_us)
    assert merged_latency == latency_of(one_acct.latency_us)
    assert merged_latency.count == union.count
    assert merged_latency.p99 == round(union.hdr.get_value_at_percentile(99) / 1000, 3)


def merge_and_check(finals: list[dict]) -> RawMessages:
    from wirewise.ledger import merge

    merged = merge(finals)
    assert set(merged.rooms) == {"chat-0", "chat-1", "chat-2"}
    assert dict(zip(merged.rooms, merged.receivers, strict=True)) == {
        "chat-2": 1,
        "chat-0": 2,
        "chat-1": 1,
    }
    assert merged.duplicated == 2
    return merged


def test_encoded_histograms_from_two_workers_add_up_to_the_union() -> None:
    """The progress path: workers send encoded HdrHistograms, the master adds them."""
    from wirewise.metrics import Histogram

    rng = np.random.default_rng(5)
    a, b = rng.integers(1, 10_000_000, 5_000), rng.integers(1, 10_000_000, 3_000)
    workers = [Histogram(), Histogram()]
    union = Histogram()
    for values, histogram in zip((a, b), workers, strict=True):
        for value in values.tolist():
            histogram.record(value)
            union.record(value)
    master = Histogram()
    for histogram in workers:
        master.add_encoded(histogram.encode())
    assert master.summary_ms() == union.summary_ms()
    assert master.count == 8_000
