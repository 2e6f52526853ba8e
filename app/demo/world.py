"""The demo's fixed world: three users, one community with a text and a voice channel, and a
DM room for every pair of users. Pure data; ``routes`` writes the memberships it implies.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

__all__ = ["USERS", "COMMUNITY_ID", "TEXT_CHANNEL_ID", "VOICE_CHANNEL_ID", "dm_room", "rooms_of", "describe"]

# Ids far above what `make token USER=5` and hand-made rooms use, so the demo's memberships
# overwrite nothing a developer set up.
USERS: dict[int, str] = {9001: "Ada", 9002: "Ben", 9003: "Cleo"}
COMMUNITY_ID = 9100
TEXT_CHANNEL_ID = 9101
VOICE_CHANNEL_ID = 9102


@dataclass(frozen=True)
class DmRoom:
    room_id: int
    members: tuple[int, int]


def dm_room(a: int, b: int) -> DmRoom:
    """The DM room of users ``a`` and ``b`` (the same room whichever asks)."""
    low, high = sorted((a, b))
    return DmRoom(9200 + 10 * (low - 9000) + (high - 9000), (low, high))


def rooms_of(user_id: int) -> list[DmRoom]:
    """Every DM room ``user_id`` is in: one with each other demo user."""
    return [dm_room(a, b) for a, b in combinations(sorted(USERS), 2) if user_id in (a, b)]


def describe(user_id: int) -> dict[str, Any]:
    """What the page needs to know of the world, seen by ``user_id``."""
    return {
        "user": {"id": user_id, "name": USERS[user_id]},
        "users": [{"id": ident, "name": name} for ident, name in USERS.items()],
        "community": COMMUNITY_ID,
        "textChannel": TEXT_CHANNEL_ID,
        "voiceChannel": VOICE_CHANNEL_ID,
        "rooms": [{"room": room.room_id, "peer": next(m for m in room.members if m != user_id)}
                  for room in rooms_of(user_id)],
    }
