"""broadcast: one publisher sends ``--rate`` messages per second to each room (default 10);
every other user only listens (notifications, tickers, dashboards). Rooms hold
``--room-size`` listeners (default 0: one room for everyone).

    locust -f scenarios/broadcast.py --transport sse --host http://127.0.0.1:8000 -u 201 -r 100 --headless
"""

from __future__ import annotations

import math

from wirewise.scenarios._phases import plain_scenario
from wirewise.scenarios._record import RECORDER, options, total_users
from wirewise.scenarios._users import ChatUser

SCENARIO = "broadcast"


def rooms(user: ChatUser) -> int:
    opts = options(user.environment)
    listeners = max(1, total_users(user.environment) - Publisher.fixed_count)
    return max(1, math.ceil(listeners / opts.room_size)) if opts.room_size else 1


class Listener(ChatUser):
    scenario = SCENARIO
    sends = False
    weight = 1

    def pick_room(self) -> str:
        return f"{SCENARIO}-{self.number % rooms(self)}"


class Publisher(ChatUser):
    """The one sender; with several rooms, it sends to each in turn."""

    scenario = SCENARIO
    receives = False
    fixed_count = 1
    default_rate = 10.0

    def pick_room(self) -> str:
        return f"{SCENARIO}-0"

    def room_at(self, sequence: int) -> tuple[str, int]:
        room = f"{SCENARIO}-{sequence % rooms(self)}"
        return room, RECORDER.rooms.index(room)

    def rate_at(self, scheduled: float) -> float:
        return self.rate * rooms(self)  # --rate per room


plain_scenario(SCENARIO)
