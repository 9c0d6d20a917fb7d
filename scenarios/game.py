"""game: small rooms (``--room-size``, default 4) of players who each send 20 times a second
(``--rate``) small messages (``--payload-bytes``, default here 50) and receive everyone's:
high-frequency traffic both ways, a multiplayer game's state updates.

    locust -f scenarios/game.py --transport ws --host http://127.0.0.1:8000 -u 40 -r 40 --headless
"""

from __future__ import annotations

from wirewise.scenarios._phases import plain_scenario
from wirewise.scenarios._users import ChatUser

SCENARIO = "game"


class Player(ChatUser):
    scenario = SCENARIO
    default_rate = 20.0
    default_room_size = 4
    default_payload = 50


plain_scenario(SCENARIO)
