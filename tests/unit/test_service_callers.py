"""Who may call a service-to-service endpoint (issue 14 item 1): ``ServiceCallers`` and
the network list, judged on hand-made request facts (a fake remote address)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.errors import AuthError, Forbidden
from app.service_auth import CallerFacts, ServiceCallers, address_in, parse_networks
from app.settings import Settings

DEFAULT_NETWORKS = parse_networks(Settings().service_allowed_networks)
TOKEN = "s3rvice"


def facts(remote: str | None = "127.0.0.1", *, sent: str | None = None, user: bool = False) -> CallerFacts:
    return CallerFacts(sent_token=sent, has_user_token=user, remote_addr=remote)


def test_the_default_network_list_is_loopback_only():
    assert DEFAULT_NETWORKS == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize("address, allowed", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("192.0.2.7", False), ("::ffff:192.0.2.7", False), ("2001:db8::1", False),
    ("0.0.0.0", False), ("", False), (None, False), ("localhost", False), ("fe80::1%eth0", False),
])
def test_addresses_against_the_default_list(address, allowed):
    assert address_in(address, DEFAULT_NETWORKS) is allowed


@given(st.ip_addresses())
def test_only_loopback_addresses_are_in_the_default_list(ip):
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    assert address_in(str(ip), DEFAULT_NETWORKS) is (ip.is_loopback or bool(mapped and mapped.is_loopback))


def test_a_listed_network_and_a_bare_address():
    networks = parse_networks(" 10.1.0.0/16 ,192.0.2.7,, ")
    assert address_in("10.1.200.3", networks) and address_in("192.0.2.7", networks)
    assert not address_in("192.0.2.8", networks) and not address_in("127.0.0.1", networks)
    assert parse_networks("") == ()


@pytest.mark.parametrize("text", ["10.0.0.0/33", "loopback", "127.0.0.1/8/8"])
def test_a_bad_network_list_fails_at_startup(text):
    with pytest.raises(ValueError, match="SERVICE_ALLOWED_NETWORKS"):
        parse_networks(text)


class TestWithoutAServiceToken:
    callers = ServiceCallers("", DEFAULT_NETWORKS)

    def test_a_loopback_caller_needs_no_credential(self):
        self.callers.check(facts("127.0.0.1"))
        self.callers.check(facts("::1", sent="anything"))

    def test_a_remote_caller_is_refused(self):
        with pytest.raises(Forbidden, match="caller not allowed"):
            self.callers.check(facts("192.0.2.7"))

    @pytest.mark.parametrize("remote", ["127.0.0.1", "192.0.2.7"])
    def test_a_user_token_is_refused_even_from_loopback(self, remote):
        with pytest.raises(Forbidden, match="user tokens are not accepted"):
            self.callers.check(facts(remote, user=True))

    def test_on_shared_endpoints_only_an_anonymous_loopback_call_is_a_service(self):
        assert self.callers.is_service(facts("127.0.0.1"))
        assert not self.callers.is_service(facts("127.0.0.1", user=True))
        assert not self.callers.is_service(facts("192.0.2.7"))


class TestWithAServiceToken:
    callers = ServiceCallers(TOKEN, DEFAULT_NETWORKS)

    @pytest.mark.parametrize("remote", ["127.0.0.1", "192.0.2.7", None])
    def test_the_token_is_accepted_from_anywhere(self, remote):
        self.callers.check(facts(remote, sent=TOKEN))
        self.callers.check(facts(remote, sent=TOKEN, user=True))

    @pytest.mark.parametrize("sent", [None, "", "wrong", TOKEN + "x", TOKEN[:-1]])
    def test_loopback_without_the_token_is_not_enough(self, sent):
        with pytest.raises(AuthError):
            self.callers.check(facts("127.0.0.1", sent=sent))

    def test_a_user_token_without_the_service_token_is_403(self):
        with pytest.raises(Forbidden):
            self.callers.check(facts("127.0.0.1", user=True))

    def test_on_shared_endpoints(self):
        assert self.callers.is_service(facts("192.0.2.7", sent=TOKEN))
        assert not self.callers.is_service(facts("127.0.0.1"))
        with pytest.raises(AuthError):
            self.callers.is_service(facts("127.0.0.1", sent="wrong", user=True))
