"""Presence as the chat domain uses it: ``MemoryPresence`` against ``PresenceClient`` talking to
a real presence process (TCP, on the embedded Redis).

Sessions and first/last logins, locations (a new session is at ``home``; moves answer the
previous location), notification targets (members not in the room), voice occupancy, and the
requests the server refuses. User and community ids are fresh per test.
"""

import json
import uuid

import pytest

from app.errors import BadRequest
from app.presence_client import LogoutResult as RealLogoutResult, Move as RealMove, PresenceClient
from tests.fakes import LogoutResult, MemoryPresence, Move
from tests.support.presence import fresh_user_ids, presence_settings
from tests.support.processes import presence_server_process


def occupancy(state):
    """A voice occupancy JSON as {channel: sorted users} (the server lists sets in no order)."""
    return {channel: sorted(users) for channel, users in json.loads(state).items()}


class PresenceContract:
    """The cases; a subclass provides the ``presence`` fixture."""

    @pytest.fixture
    def presence(self):
        raise NotImplementedError

    @pytest.fixture
    def node(self):
        return f"contract-{uuid.uuid4().hex[:8]}"

    def test_the_users_first_session_is_first_and_later_ones_are_not(self, presence, node):
        user, other = fresh_user_ids(2)
        assert presence.login(f"a{user}", user, node) is True
        assert presence.login(f"b{user}", user, node) is False
        assert presence.login(f"a{other}", other, node) is True

    def test_logout_tells_whether_it_was_the_users_last_session(self, presence, node):
        (user,) = fresh_user_ids(1)
        presence.login(f"a{user}", user, node)
        presence.login(f"b{user}", user, node)
        assert tuple(vars(presence.logout(f"a{user}", node)).values()) == (user, "home", False)
        assert tuple(vars(presence.logout(f"b{user}", node)).values()) == (user, "home", True)

    def test_logout_of_an_unknown_or_ended_session_is_empty(self, presence, node):
        (user,) = fresh_user_ids(1)
        assert tuple(vars(presence.logout(f"never{user}", node)).values()) == (None, None, False)
        presence.login(f"a{user}", user, node)
        presence.logout(f"a{user}", node)
        assert tuple(vars(presence.logout(f"a{user}", node)).values()) == (None, None, False)

    def test_a_move_answers_the_previous_location_and_logout_the_last_one(self, presence, node):
        (user,) = fresh_user_ids(1)
        presence.login(f"a{user}", user, node)
        assert tuple(vars(presence.move(user, f"a{user}", "c-12")).values()) == ("home", "c-12")
        assert tuple(vars(presence.move(user, f"a{user}", "r-4")).values()) == ("c-12", "r-4")
        assert tuple(vars(presence.logout(f"a{user}", node)).values()) == (user, "r-4", True)

    def test_notification_targets_are_the_members_not_in_the_room(self, presence, node):
        inside, elsewhere, offline = fresh_user_ids(3)
        presence.login(f"a{inside}", inside, node)
        presence.login(f"a{elsewhere}", elsewhere, node)
        presence.move(inside, f"a{inside}", f"c-{inside}")
        presence.move(elsewhere, f"a{elsewhere}", f"r-{inside}")
        assert presence.notify_targets(f"c-{inside}", [inside, elsewhere, offline]) == [elsewhere, offline]
        assert presence.notify_targets(f"r-{inside}", [inside, elsewhere, offline]) == [inside, offline]

    def test_what_is_not_a_text_location_or_a_room_key_is_refused(self, presence, node):
        (user,) = fresh_user_ids(1)
        presence.login(f"a{user}", user, node)
        with pytest.raises(BadRequest):
            presence.notify_targets("home", [user])
        with pytest.raises(BadRequest):
            presence.move(user, f"a{user}", "com3,c-7")  # only enter sets a voice location

    def test_a_community_without_voice_users_is_an_empty_object(self, presence):
        user, community = fresh_user_ids(2)
        assert presence.before_enter(user, community) == "{}"

    def test_enter_lists_online_users_per_voice_channel(self, presence, node):
        user, other, community = fresh_user_ids(3)
        presence.login(f"a{user}", user, node)
        presence.login(f"a{other}", other, node)
        assert presence.enter(user, community, 7) == f'{{"7":["{user}"]}}'
        assert occupancy(presence.enter(other, community, 7)) == {"7": sorted([str(user), str(other)])}
        assert occupancy(presence.before_enter(user, community)) == {"7": sorted([str(user), str(other)])}

    def test_entering_another_voice_channel_leaves_the_first(self, presence, node):
        user, community = fresh_user_ids(2)
        presence.login(f"a{user}", user, node)
        presence.enter(user, community, 7)
        assert occupancy(presence.enter(user, community, 8)) == {"7": [], "8": [str(user)]}

    def test_the_last_logout_leaves_voice_and_ends_at_the_voice_location(self, presence, node):
        user, community = fresh_user_ids(2)
        presence.login(f"a{user}", user, node)
        presence.enter(user, community, 7)
        assert tuple(vars(presence.logout(f"a{user}", node)).values()) == (user, f"com{community},c-7", True)
        assert presence.before_enter(user, community) == '{"7":[]}'


class TestFakePresence(PresenceContract):
    @pytest.fixture
    def presence(self):
        return MemoryPresence()

    def test_its_answers_have_the_real_answers_fields(self):
        assert list(vars(LogoutResult(1, "home", True))) == list(vars(RealLogoutResult(1, "home", True)))
        assert list(vars(Move("home", "c-1"))) == list(vars(RealMove("home", "c-1")))


@pytest.fixture(scope="module")
def presence_process(embedded, log_dir):
    process = presence_server_process(presence_settings(embedded).with_generated_secrets(), log_dir,
                                      name="presence-contract").start()
    yield process
    process.stop()


class TestRealPresence(PresenceContract):
    @pytest.fixture
    def presence(self, embedded, presence_process):
        client = PresenceClient(presence_process.settings)
        yield client
        client.close()

