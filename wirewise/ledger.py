"""Every scheduled message and every delivery of a run, and what they add up to.

The load generator keeps two tables, merged across its processes (Locust master and workers)
and written to ``messages.npz`` beside ``scenario.json``:

- **sends**: one row per send the schedule asked for inside the window: room, scheduled time,
  when it was issued (-1: never, the window ended first), when its answer came, the id the
  server gave it, and its :data:`STATUS`;
- **deliveries**: one row per ``new_message`` a receiver read whose ``sent_at`` lies in the
  window: room, id, ``sent_at`` and the receipt time (the kernel's, see
  :mod:`wirewise.clients.lean.hub`).

:func:`account` joins them on (room, id). Each acknowledged message was expected by every
receiver of its room when the window opened. The ledger then counts, separately::

    expected, delivered, lost, duplicated, extra     with  delivered == expected - lost + extra

where *lost* is an expected delivery that never came, *extra* a delivery nobody expected (each
with its reason in ``extra_reasons``), and *duplicated* a delivery a receiver had already had
(dropped by its cursor, so not in *delivered*). Nothing nets out: extras never hide losses.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "STATUS",
    "Accounting",
    "RawMessages",
    "account",
    "merge",
]

OK, REFUSED, UNANSWERED, UNSENT = 0, 1, 2, 3
STATUS = {OK: "acknowledged", REFUSED: "refused", UNANSWERED: "unanswered", UNSENT: "unsent"}
"""A send's fate: the server acknowledged it, refused it, never answered, or it was never sent."""
SEND_COLUMNS = ("room", "scheduled_us", "issued_us", "answered_us", "id", "status")
DELIVERY_COLUMNS = ("room", "id", "sent_at_us", "received_us")


@dataclass
class RawMessages:
    """The two tables of a run, merged across load-generator processes (see the module doc)."""

    rooms: list[str]
    receivers: list[int]
    """Receivers subscribed to each room when the window opened."""
    sends: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), np.int64))
    deliveries: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    duplicated: int = 0

    def save(self, path: Path) -> None:
        """``messages.npz``: compressed, with deliveries as latencies (they compress better)."""
        deliveries = self.deliveries
        latency = deliveries[:, 3] - deliveries[:, 2] if len(deliveries) else np.zeros(0, np.int64)
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            rooms=np.array(self.rooms, dtype=np.str_),
            receivers=np.array(self.receivers, dtype=np.int64),
            sends=self.sends.astype(np.int64),
            delivery_room=deliveries[:, 0].astype(np.int32),
            delivery_id=deliveries[:, 1],
            delivery_sent_at=deliveries[:, 2],
            delivery_latency=latency.astype(np.int64),
            duplicated=np.array([self.duplicated], dtype=np.int64),
        )
        path.write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> RawMessages:
        try:
            with np.load(path, allow_pickle=False) as data:
                sent_at = data["delivery_sent_at"]
                deliveries = (
                    np.column_stack(
                        (
                            data["delivery_room"].astype(np.int64),
                            data["delivery_id"],
                            sent_at,
                            sent_at + data["delivery_latency"],
                        )
                    )
                    if len(sent_at)
                    else np.zeros((0, 4), np.int64)
                )
                return cls(
                    rooms=[str(r) for r in data["rooms"]],
                    receivers=[int(r) for r in data["receivers"]],
                    sends=data["sends"].reshape(-1, 6),
                    deliveries=deliveries,
                    duplicated=int(data["duplicated"][0]),
                )
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot read {path}: {exc}") from exc


def merge(finals: list[dict[str, Any]], receivers: dict[str, int] | None = None) -> RawMessages:
    """One ledger from every load-generator process's tables.

    Each process numbers its rooms in the order it met them; the merged ledger maps every
    process's numbers to one list of names. ``finals`` are the processes' reports (``rooms``,
    ``sends`` and ``deliveries`` as the bytes of int64 tables, ``duplicated``, ``connected``);
    ``receivers`` per room name defaults to the sum of the processes' ``connected`` gauges.
    """
    index: dict[str, int] = {}
    sends, deliveries = [], []
    duplicated = 0
    connected: dict[str, int] = {}
    for final in finals:
        mapping = np.array(
            [index.setdefault(name, len(index)) for name in final["rooms"]] or [0], dtype=np.int64
        )
        table = np.frombuffer(final["sends"], dtype=np.int64).reshape(-1, 6).copy()
        if len(table):
            table[:, 0] = mapping[table[:, 0]]
        sends.append(table)
        rows = np.frombuffer(final["deliveries"], dtype=np.int64).reshape(-1, 4).copy()
        if len(rows):
            rows[:, 0] = mapping[rows[:, 0]]
        deliveries.append(rows)
        duplicated += int(final["duplicated"])
        for name, count in final.get("connected", {}).items():
            connected[name] = connected.get(name, 0) + int(count)
    ordered = sorted(index, key=index.__getitem__)
    counts = receivers or connected
    return RawMessages(
        rooms=ordered,
        receivers=[int(counts.get(name, 0)) for name in ordered],
        sends=np.concatenate(sends) if sends else np.zeros((0, 6), np.int64),
        deliveries=np.concatenate(deliveries) if deliveries else np.zeros((0, 4), np.int64),
        duplicated=duplicated,
    )


@dataclass
class Accounting:
    """What :func:`account` found for one span of scheduled times."""

    deliveries: dict[str, Any]
    """expected, delivered, lost, duplicated, extra, extra_reasons."""
    publisher: dict[str, Any]
    """scheduled, sent, unsent, answered, refused, unanswered, refusals."""
    latency_us: np.ndarray
    """Receipt minus ``sent_at`` of every counted delivery."""
    message_of: np.ndarray
    """For each of those, the index of its message (for resampling messages, not deliveries)."""
    lag_us: np.ndarray
    """Issued minus scheduled, for every send that was issued."""
    send_latency_us: np.ndarray
    """Answer minus scheduled time, for every answered send (timed from the schedule)."""
    messages: int = 0

    @property
    def closes(self) -> bool:
        """Every scheduled send went out and was answered; every expected delivery came."""
        pub = self.publisher
        return bool(
            self.deliveries["lost"] == 0
            and pub["unsent"] == 0
            and pub["unanswered"] == 0
            and self.deliveries["delivered"]
            == self.deliveries["expected"] - self.deliveries["lost"] + self.deliveries["extra"]
        )


def account(
    raw: RawMessages, start_us: int, end_us: int, receivers: list[int] | None = None
) -> Accounting:
    """The ledger of the messages scheduled in ``[start_us, end_us)``; see the module doc.

    ``receivers`` (per room) replaces the counts at the window's opening, for spans during
    which rooms held other numbers (an idle ramp's plateaus)."""
    members = raw.receivers if receivers is None else receivers
    sends = raw.sends[(raw.sends[:, 1] >= start_us) & (raw.sends[:, 1] < end_us)]
    deliveries = raw.deliveries[
        (raw.deliveries[:, 2] >= start_us) & (raw.deliveries[:, 2] < end_us)
    ]
    status = sends[:, 5]
    issued = sends[:, 2] >= 0
    answered = sends[:, 3] >= 0
    publisher = {
        "scheduled": len(sends),
        "sent": int(issued.sum()),
        "unsent": int((status == UNSENT).sum()),
        "answered": int(answered.sum()),
        "refused": int((status == REFUSED).sum()),
        "unanswered": int((status == UNANSWERED).sum()),
    }
    acked = sends[status == OK]
    expected_total = lost = extra = 0
    reasons: dict[str, int] = {}
    latency_parts: list[np.ndarray] = []
    message_parts: list[np.ndarray] = []
    messages = 0
    for room in np.unique(np.concatenate((acked[:, 0], deliveries[:, 0]))).tolist():
        room_receivers = members[room] if room < len(members) else 0
        ids = np.unique(acked[acked[:, 0] == room][:, 4])
        got = deliveries[deliveries[:, 0] == room]
        position = np.searchsorted(ids, got[:, 1])
        matched = (
            (position < len(ids)) & (ids[np.minimum(position, len(ids) - 1)] == got[:, 1])
            if len(ids)
            else np.zeros(len(got), bool)
        )
        per_message = (
            np.bincount(position[matched], minlength=len(ids))
            if len(ids)
            else np.zeros(0, np.int64)
        )
        expected_total += room_receivers * len(ids)
        lost += int(np.maximum(room_receivers - per_message, 0).sum())
        beyond = int(np.maximum(per_message - room_receivers, 0).sum())
        if beyond:
            why = "more deliveries of a message than its room had receivers"
            reasons[why] = reasons.get(why, 0) + beyond
            extra += beyond
        strays = got[~matched]
        if len(strays):
            extra += len(strays)
            for why, count in _stray_reasons(strays, sends[sends[:, 0] == room]).items():
                reasons[why] = reasons.get(why, 0) + count
        latency_parts.append(got[:, 3] - got[:, 2])
        keys = np.where(matched, position, len(ids) + _stray_keys(strays, got, matched))
        message_parts.append(keys + messages)
        messages += len(ids) + (len(np.unique(strays[:, 2])) if len(strays) else 0)
    delivered = len(deliveries)
    sent = sends[issued]
    done = sends[answered]
    return Accounting(
        deliveries={
            "expected": int(expected_total),
            "delivered": delivered,
            "lost": int(lost),
            "duplicated": int(raw.duplicated),
            "extra": int(extra),
            "extra_reasons": reasons,
        },
        publisher=publisher,
        latency_us=np.concatenate(latency_parts) if latency_parts else np.zeros(0, np.int64),
        message_of=np.concatenate(message_parts) if message_parts else np.zeros(0, np.int64),
        lag_us=np.maximum(sent[:, 2] - sent[:, 1], 0),
        send_latency_us=np.maximum(done[:, 3] - done[:, 1], 0),
        messages=messages,
    )


def _stray_reasons(strays: np.ndarray, room_sends: np.ndarray) -> dict[str, int]:
    """Why deliveries matched no acknowledged send: by their ``sent_at`` (the schedule)."""
    reasons: dict[str, int] = {}
    by_time = {int(row[1]): int(row[5]) for row in room_sends if row[5] != OK}
    for sent_at in strays[:, 2].tolist():
        fate = by_time.get(sent_at)
        if fate == UNANSWERED:
            why = "a send whose answer never came was stored and delivered"
        elif fate == REFUSED:
            why = "a send the server refused was delivered"
        else:
            why = "a message this run's senders did not schedule in the window"
        reasons[why] = reasons.get(why, 0) + 1
    return reasons


def _stray_keys(strays: np.ndarray, got: np.ndarray, matched: np.ndarray) -> np.ndarray:
    """A message index for each stray delivery (grouped by its ``sent_at``), zeros elsewhere."""
    keys = np.zeros(len(got), np.int64)
    if len(strays):
        _, inverse = np.unique(strays[:, 2], return_inverse=True)
        keys[~matched] = inverse
    return keys
