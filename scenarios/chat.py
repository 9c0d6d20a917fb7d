"""chat: rooms of ``--room-size`` users (default 10); everyone sends at ``--rate`` messages per
second (default 1) and everyone receives every message of their room, their own included.

    locust -f scenarios/chat.py --transport sse --host http://127.0.0.1:8000 -u 100 -r 50 --headless
"""

from __future__ import annotations

from wirewise.scenarios._phases import plain_scenario
from wirewise.scenarios._users import ChatUser

SCENARIO = "chat"


class Chatter(ChatUser):
    scenario = SCENARIO
    default_rate = 1.0
    default_room_size = 10


plain_scenario(SCENARIO)
