"""AckLedger (app/stomp/acks.py): client-ack subscriptions and the ack ids owed (STOMP 1.2 "ACK", "NACK")."""

from app.stomp.acks import AckLedger, CLIENT, CLIENT_INDIVIDUAL


def test_auto_subscriptions_are_not_recorded():
    ledger = AckLedger()
    ledger.subscribe("s", "auto")
    assert ledger.modes == {}


def test_an_id_is_owed_once():
    ledger = AckLedger()
    ledger.subscribe("s", CLIENT_INDIVIDUAL)
    ack = ledger.delivered("s", "m1")
    assert ledger.settle(ack) is True
    assert ledger.settle(ack) is False  # already acknowledged
    assert ledger.settle("no-such-id") is False


def test_client_individual_settles_only_the_one_named():
    ledger = AckLedger()
    ledger.subscribe("s", CLIENT_INDIVIDUAL)
    first, second = ledger.delivered("s", "m1"), ledger.delivered("s", "m2")
    assert ledger.settle(second)
    assert ledger.settle(first)


def test_client_settles_every_earlier_message_of_its_subscription_only():
    """STOMP 1.2: with ack:client an ACK is cumulative for that subscription."""
    ledger = AckLedger()
    ledger.subscribe("s", CLIENT)
    ledger.subscribe("t", CLIENT)
    first, other, second = ledger.delivered("s", "m1"), ledger.delivered("t", "m1"), ledger.delivered("s", "m2")
    assert ledger.settle(second)
    assert ledger.settle(first) is False
    assert ledger.settle(other) is True


def test_the_oldest_ids_are_forgotten_past_the_limit():
    ledger = AckLedger(limit=3)
    ledger.subscribe("s", CLIENT_INDIVIDUAL)
    ids = [ledger.delivered("s", f"m{n}") for n in range(5)]
    assert len(ledger) == 3
    assert [ledger.settle(ack) for ack in ids] == [False, False, True, True, True]


def test_unsubscribe_forgets_the_subscription_and_what_it_was_owed():
    ledger = AckLedger()
    ledger.subscribe("s", CLIENT_INDIVIDUAL)
    ack = ledger.delivered("s", "m1")
    ledger.unsubscribe("s")
    assert ledger.modes == {} and ledger.settle(ack) is False


def test_becoming_client_ack_drops_the_cached_bytes_of_that_id():
    forgotten = []
    ledger = AckLedger(forgotten.append)
    ledger.subscribe("s", "auto")
    ledger.subscribe("t", CLIENT)
    assert forgotten == ["t"]


def test_stomp_1_1_acks_name_the_message_and_subscription():
    ledger = AckLedger()
    ledger.subscribe("s", CLIENT_INDIVIDUAL)
    ledger.subscribe("t", CLIENT_INDIVIDUAL)
    ledger.delivered("s", "m1")
    ledger.delivered("t", "m1")
    assert ledger.settle_message("m1", "t") is True
    assert ledger.settle_message("m1", "t") is False
    assert ledger.settle_message("m1", None) is True  # 1.0: the message id alone
    assert ledger.settle_message("m2", None) is False
