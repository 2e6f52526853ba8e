"""Who counts as a trusted service: the service token, or an allowed network without one.

Owns :class:`ServiceCallers` (pure: a request's facts come as :class:`CallerFacts`) and the
network lists (``SERVICE_ALLOWED_NETWORKS``; the presence server reads
``PRESENCE_ALLOWED_NETWORKS`` with :func:`address_in` too). Service-to-service endpoints (the chat
server's membership PUTs and presence callbacks, app/chat/http/auth.py), both servers'
``/metrics`` and presence's ``user-state`` (app/health.py ``service_call_facts``) use it:

- when ``SERVICE_TOKEN`` is set, a caller must send it (compared in constant time), from any
  address;
- when it is unset, only callers whose address is in ``SERVICE_ALLOWED_NETWORKS`` (loopback by
  default) are served, as the original community server calls without any credential
  (protocol.md §6.2);
- a user token never opens a service endpoint.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import Sequence

from app.errors import AuthError, Forbidden
from app.settings import Settings

__all__ = ["CallerFacts", "ServiceCallers", "Network", "SERVICE_TOKEN_HEADER", "parse_networks", "address_in"]

SERVICE_TOKEN_HEADER = "X-Service-Token"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str, setting: str = "SERVICE_ALLOWED_NETWORKS") -> tuple[Network, ...]:
    """``127.0.0.0/8, ::1/128, 10.1.2.3``: a comma-separated CIDR list (a bare address is a /32
    or /128). Raises ``ValueError`` naming ``setting`` and the entry it cannot read."""
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"{setting}: not a network: {entry!r}") from None
    return tuple(networks)


def address_in(address: str | None, networks: Sequence[Network]) -> bool:
    """Whether a peer address (as WSGI's ``REMOTE_ADDR`` gives it) lies in one of ``networks``.

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``, a dual-stack listener) counts as its
    IPv4 address; anything that is not an address is outside every network.
    """
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == network.version and ip in network for network in networks)


@dataclass(frozen=True)
class CallerFacts:
    """What decides whether a request is a trusted service's: read from the request
    (``app.chat.http.auth.caller_facts``, ``app.health.service_call_facts``), given by hand in tests."""

    sent_token: str | None  # X-Service-Token, None when absent
    has_user_token: bool    # an Authorization or access-token header
    remote_addr: str | None


class ServiceCallers:
    """Who may call a service-to-service endpoint (pure: the request's facts come as arguments).

    - A call that carries a user token is refused (403) unless it also carries the right
      service token: user tokens never open a service endpoint.
    - ``token`` configured: the caller must send it (else 401), from any address.
    - No token configured: the caller's address must be in ``networks`` (else 403).
    """

    def __init__(self, token: str, networks: Sequence[Network]) -> None:
        self._token = token.encode("utf-8")
        self._networks = tuple(networks)

    def check(self, facts: CallerFacts) -> None:
        """Return if the caller is a trusted service; raise ``AuthError`` or ``Forbidden``."""
        if self._token and facts.sent_token is not None and self._matches(facts.sent_token):
            return
        if facts.has_user_token:
            raise Forbidden("service endpoint: user tokens are not accepted")
        if self._token:
            raise AuthError("invalid service token")
        if not address_in(facts.remote_addr, self._networks):
            raise Forbidden("service endpoint: caller not allowed")

    def is_service(self, facts: CallerFacts) -> bool:
        """For endpoints users may call too: is this a service call? A wrong service token
        raises ``AuthError``; a call with a user token, or from outside the allowed networks
        without the service token, is a user's."""
        if facts.sent_token is not None and self._token:
            if not self._matches(facts.sent_token):
                raise AuthError("invalid service token")
            return True
        return not self._token and not facts.has_user_token and address_in(facts.remote_addr, self._networks)

    def _matches(self, sent: str) -> bool:
        return hmac.compare_digest(sent.encode("utf-8"), self._token)

    @classmethod
    def from_settings(cls, settings: Settings) -> "ServiceCallers":
        return cls(settings.service_token, parse_networks(settings.service_allowed_networks))
