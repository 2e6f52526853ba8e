"""Node death and the presence server's calls to the chat server.

Owns:

- :class:`LeaseReaper`: a greenlet that, every ``node_lease_s / 3`` seconds, finds chat
  nodes whose lease expired (the ``nodes`` index, no key scans), claims each with
  ``SET NX`` so two presence processes never reap the same node at once, logs its
  sessions out in batches, and reports every user whose *last* session went away. A
  node's users are therefore offline at most ``node_lease_s`` + one interval after it
  stopped renewing (plus one lease of grace after presence itself starts, so that nodes
  whose leases lapsed while presence was down can renew before they are judged dead).
- :class:`HttpChatNotifier`: the outbound POSTs (``presence-offline``,
  ``signaling-list-community``, ``signaling-list-direct``), each in its own greenlet
  with a timeout and a few retries with backoff, so neither a request nor the reaper
  ever waits for the chat server.

The original also pushed ``U,online`` / ``U,offline`` lines to the community server over
TCP (protocol.md §7.7). Smooth has no community TCP server, so that push is not made;
the community side can read ``GET /presence-server/user-state`` instead.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable, Final

import gevent
from gevent.event import Event

from app.settings import Settings

from .store import ChatNotifier, PresenceStore, VoiceOut

__all__ = ["LeaseReaper", "HttpChatNotifier", "OFFLINE_PATH", "COMMUNITY_OUT_PATH", "DIRECT_OUT_PATH"]

log = logging.getLogger(__name__)

OFFLINE_PATH: Final = "/chat-server/presence-offline"
COMMUNITY_OUT_PATH: Final = "/chat-server/signaling-list-community"
DIRECT_OUT_PATH: Final = "/chat-server/signaling-list-direct"

# Sessions logged out per Redis script call: keeps each script short on a big node.
REAP_BATCH: Final = 200
# POST attempts per event and the first retry delay (doubled after each failure).
POST_ATTEMPTS: Final = 4
POST_BACKOFF_S: Final = 0.2
# Events waiting for the chat server beyond this are dropped (and logged), not queued.
MAX_POSTS_IN_FLIGHT: Final = 1000


class HttpChatNotifier:
    """``ChatNotifier`` that POSTs JSON to ``settings.effective_chat_server_url``."""

    def __init__(self, settings: Settings, *, spawn: Callable[..., Any] = gevent.spawn,
                 attempts: int = POST_ATTEMPTS, backoff_s: float = POST_BACKOFF_S) -> None:
        self.base_url = settings.effective_chat_server_url.rstrip("/")
        self.service_token = settings.service_token
        self.timeout_s = settings.service_timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._spawn = spawn
        self._in_flight: set[Any] = set()

    def voice_out(self, out: VoiceOut) -> None:
        path = DIRECT_OUT_PATH if out.community_id is None else COMMUNITY_OUT_PATH
        self._post_later(path, out.event())

    def user_offline(self, user_id: int, location: str | None) -> None:
        self._post_later(OFFLINE_PATH, {"userId": user_id, "location": location})

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` for queued POSTs (graceful shutdown)."""
        gevent.joinall(list(self._in_flight), timeout=timeout)

    def _post_later(self, path: str, body: dict[str, Any]) -> None:
        if len(self._in_flight) >= MAX_POSTS_IN_FLIGHT:
            log.error("chat server backlog full; dropped %s %s", path, body)
            return
        greenlet = self._spawn(self._post_with_retries, path, body)
        self._in_flight.add(greenlet)
        greenlet.link(self._in_flight.discard)

    def _post_with_retries(self, path: str, body: dict[str, Any]) -> bool:
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            try:
                self._post(path, body)
                return True
            except urllib.error.HTTPError as error:
                if error.code < 500:  # the chat server refused it: retrying will not help
                    log.error("chat server answered %s to %s %s", error.code, path, body)
                    return False
                log.warning("chat server answered %s to %s (attempt %d)", error.code, path, attempt)
            except (OSError, ValueError) as error:
                log.warning("POST %s failed (attempt %d): %s", path, attempt, error)
            if attempt < self.attempts:
                gevent.sleep(delay)
                delay *= 2
        log.error("gave up on POST %s %s", path, body)
        return False

    def _post(self, path: str, body: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/json"}
        if self.service_token:
            headers["X-Service-Token"] = self.service_token
        request = urllib.request.Request(self.base_url + path, data=json.dumps(body).encode("utf-8"),
                                         headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            response.read()


class LeaseReaper:
    """Logs out the sessions of chat nodes that stopped renewing their lease."""

    def __init__(self, store: PresenceStore, notifier: ChatNotifier, *, lease_s: float,
                 interval_s: float | None = None, owner: str | None = None,
                 spawn: Callable[..., Any] = gevent.spawn) -> None:
        self.store = store
        self.notifier = notifier
        self.lease_s = lease_s
        self.interval_s = interval_s if interval_s is not None else lease_s / 3
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._spawn = spawn
        self._stopping = Event()
        self._greenlet: Any = None

    def start(self) -> None:
        self._greenlet = self._spawn(self._run)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout)
            self._greenlet.kill(block=True, timeout=1)

    def _run(self) -> None:
        # Grace period: after presence was down, chat nodes' leases have lapsed in Redis even
        # though the nodes are alive. Give them one lease to renew before judging anyone dead.
        if self._stopping.wait(self.lease_s):
            return
        while not self._stopping.wait(self.interval_s):
            try:
                self.reap_once()
            except Exception:
                # A Redis outage must not end the loop: the next pass tries again.
                log.exception("lease reaper pass failed")

    def reap_once(self) -> int:
        """One pass over every expired node; returns how many users went offline."""
        offline = 0
        for node_id in self.store.expired_nodes():
            # The claim outlives a pass, so a second presence process skips this node.
            if self.store.claim_node(node_id, self.owner, ttl_s=max(self.lease_s, 5.0)):
                offline += self._reap(node_id)
        self.store.forget_expired()
        return offline

    def _reap(self, node_id: str) -> int:
        offline = 0
        while not self._stopping.is_set():
            batch = self.store.reap_node(node_id, REAP_BATCH)
            for end in batch.ended:
                if end.voice_left is not None:
                    self.notifier.voice_out(end.voice_left)
                if end.last_session and end.user_id is not None:
                    self.notifier.user_offline(end.user_id, end.location)
                    offline += 1
            if batch.done:
                break
        if offline:
            log.info("node %s expired: %d users offline", node_id, offline)
        return offline
