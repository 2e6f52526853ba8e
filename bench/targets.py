"""How the same load client addresses each system: connection specs for Smooth and RabbitMQ.

Owns: the CONNECT headers, destinations and SEND bodies per system, membership setup in
Smooth's Redis before anyone subscribes, and the message body RabbitMQ subscribers receive
(shaped and sized like Smooth's MESSAGE push so both deliver the same bytes per message).
"""

from __future__ import annotations

from app.auth import mint_token
from bench.loadgen import ConnSpec

__all__ = ["SmoothTarget", "RabbitTarget", "COMMUNITY_ID", "CHANNEL_ID"]

COMMUNITY_ID = 1
CHANNEL_ID = 10
SENDER_USER = 1
WS_PATH = "/my-chat/websocket"
SMOOTH_CHANNEL_BODY = ('{"communityId":%d,"channelId":%d,"content":"{content}","name":"bench"}'
                       % (COMMUNITY_ID, CHANNEL_ID))
SMOOTH_DIRECT_BODY = '{"channelId":%d,"content":"{content}"}'
# What Smooth pushes for a channel message (protocol.md §2.8), with the same field sizes.
PUSH_LIKE_BODY = ('{"type":"message","id":"000000000000000000000000","userId":"1","name":"bench",'
                  '"profileImage":null,"message":"{content}","time":"2024-01-01 00:00:00.000"}')


class SmoothTarget:
    """Smooth's chat node(s): community channel fan-out and DM rooms."""

    name = "smooth"

    def __init__(self, ports: list[int], redis_url: str, jwt_secret: str) -> None:
        self.ports = ports
        self.redis_url = redis_url
        self.secret = jwt_secret

    def _spec(self, conn_id: int, user_id: int, node: int, **kw: object) -> ConnSpec:
        headers = {"accept-version": "1.2", "host": "smooth", "heart-beat": "0,0",
                   "access-token": mint_token(self.secret, user_id)}
        return ConnSpec(conn_id=conn_id, host="127.0.0.1", port=self.ports[node % len(self.ports)],
                        path=WS_PATH, connect_headers=headers, **kw)  # type: ignore[arg-type]

    def fanout_specs(self, subscribers: int, rate: float, size: int, base: int = 0,
                     senders: int = 1) -> tuple[list[ConnSpec], list[ConnSpec]]:
        """Ids base..base+senders-1 send (rate split evenly), the next ``subscribers`` ids subscribe.

        ``base`` offsets connection ids, so stamps of an earlier run are never counted.
        """
        from tests.support.rooms import set_community

        users = range(SENDER_USER, SENDER_USER + senders + subscribers)
        set_community(self.redis_url, COMMUNITY_ID, list(users), [CHANNEL_ID])
        subs = [self._spec(base + senders + i, SENDER_USER + senders + i, i,
                           subscribe=[f"/topic/group/{CHANNEL_ID}"]) for i in range(subscribers)]
        send = [self._spec(base + n, SENDER_USER + n, n, send_dest="/kafka/send-channel-message",
                           body_template=SMOOTH_CHANNEL_BODY, rate=rate / senders, content_size=size)
                for n in range(senders)]
        return subs, send

    def rooms_specs(self, connections: int, rate: float, size: int, base: int = 0) -> list[ConnSpec]:
        """Two users per DM room; each connection subscribes to its room and sends into it."""
        from app.backends.redis_cache import RedisMembershipCache
        from app.settings import Settings

        cache = RedisMembershipCache(self.redis_url, Settings().membership_ttl_s)
        specs = []
        for i in range(connections):
            room, user = 1000 + i // 2, 100 + i
            if i % 2 == 0:
                cache.set_room_members(room, [user, user + 1])
            specs.append(self._spec(base + i, user, i, subscribe=[f"/topic/direct/{room}"], room=str(room),
                                    send_dest="/kafka/send-direct-message",
                                    body_template=SMOOTH_DIRECT_BODY % room, rate=rate, content_size=size))
        cache.close()
        return specs


class RabbitTarget:
    """RabbitMQ Web-STOMP: one topic (amq.topic exchange) for fan-out, one per DM room."""

    name = "rabbitmq"

    def __init__(self, port: int) -> None:
        self.port = port

    def _spec(self, conn_id: int, **kw: object) -> ConnSpec:
        headers = {"accept-version": "1.2", "host": "/", "login": "guest", "passcode": "guest",
                   "heart-beat": "0,0"}
        return ConnSpec(conn_id=conn_id, host="127.0.0.1", port=self.port, path="/ws",
                        connect_headers=headers, **kw)  # type: ignore[arg-type]

    def fanout_specs(self, subscribers: int, rate: float, size: int, base: int = 0,
                     senders: int = 1) -> tuple[list[ConnSpec], list[ConnSpec]]:
        subs = [self._spec(base + senders + i, subscribe=["/topic/bench"]) for i in range(subscribers)]
        send = [self._spec(base + n, send_dest="/topic/bench", body_template=PUSH_LIKE_BODY, rate=rate / senders,
                           content_size=size) for n in range(senders)]
        return subs, send

    def rooms_specs(self, connections: int, rate: float, size: int, base: int = 0) -> list[ConnSpec]:
        return [self._spec(base + i, subscribe=[f"/topic/room.{i // 2}"], room=str(i // 2),
                           send_dest=f"/topic/room.{i // 2}", body_template=PUSH_LIKE_BODY, rate=rate,
                           content_size=size) for i in range(connections)]
