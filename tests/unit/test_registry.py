"""SubscriptionRegistry: the destination and subscriber indexes stay consistent."""

import random

import pytest

from app.stomp.registry import DuplicateSubscription, SubscriptionRegistry


def test_subscribers_of_a_destination_in_subscription_order():
    registry = SubscriptionRegistry()
    registry.add("a", "1", "/topic/group/1")
    registry.add("b", "x", "/topic/group/1")
    registry.add("a", "2", "/topic/group/2")
    assert registry.subscribers("/topic/group/1") == (("a", "1"), ("b", "x"))
    assert registry.subscribers("/topic/group/2") == (("a", "2"),)
    assert registry.subscribers("/topic/group/3") == ()


def test_one_subscriber_may_hold_two_ids_on_one_destination():
    registry = SubscriptionRegistry()
    registry.add("a", "1", "/topic/group/1")
    registry.add("a", "2", "/topic/group/1")
    assert registry.subscribers("/topic/group/1") == (("a", "1"), ("a", "2"))


def test_duplicate_id_is_refused_and_changes_nothing():
    registry = SubscriptionRegistry()
    registry.add("a", "1", "/topic/group/1")
    with pytest.raises(DuplicateSubscription):
        registry.add("a", "1", "/topic/group/2")
    assert registry.subscriptions("a") == {"1": "/topic/group/1"}
    assert registry.subscribers("/topic/group/2") == ()


def test_same_id_under_two_subscribers_is_fine():
    registry = SubscriptionRegistry()
    registry.add("a", "1", "/topic/group/1")
    registry.add("b", "1", "/topic/group/1")
    assert len(registry) == 2


def test_remove_returns_the_destination_and_drops_empty_indexes():
    registry = SubscriptionRegistry()
    registry.add("a", "1", "/topic/group/1")
    assert registry.remove("a", "1") == "/topic/group/1"
    assert registry.remove("a", "1") is None
    assert registry.destinations() == []
    assert registry.count("a") == 0
    assert not registry.holds("a", "1")


def test_remove_subscriber_forgets_everything_it_held():
    registry = SubscriptionRegistry()
    registry.add("a", "1", "/topic/group/1")
    registry.add("a", "2", "/topic/direct/7")
    registry.add("b", "1", "/topic/group/1")
    assert registry.remove_subscriber("a") == {"1": "/topic/group/1", "2": "/topic/direct/7"}
    assert registry.subscribers("/topic/group/1") == (("b", "1"),)
    assert registry.destinations() == ["/topic/group/1"]
    assert registry.remove_subscriber("a") == {}


def test_snapshot_survives_mutation_while_iterating():
    registry = SubscriptionRegistry()
    for name in "abc":
        registry.add(name, "1", "/topic/group/1")
    seen = []
    for subscriber, _ in registry.subscribers("/topic/group/1"):
        seen.append(subscriber)
        registry.remove_subscriber(subscriber)
    assert seen == ["a", "b", "c"]
    assert registry.destinations() == []


def _expected_pairs(model, destination):
    return {(s, i) for (s, i), d in model.items() if d == destination}


def test_indexes_agree_after_random_operations():
    """Property-style: subscribe, unsubscribe and drop in random order, compare to a model."""
    rng = random.Random(1234)
    registry = SubscriptionRegistry()
    model: dict[tuple[str, str], str] = {}
    subscribers = [f"s{n}" for n in range(8)]
    destinations = [f"/topic/group/{n}" for n in range(1, 6)]
    for _ in range(3000):
        subscriber = rng.choice(subscribers)
        sub_id = str(rng.randrange(6))
        action = rng.random()
        if action < 0.55:
            destination = rng.choice(destinations)
            if (subscriber, sub_id) in model:
                with pytest.raises(DuplicateSubscription):
                    registry.add(subscriber, sub_id, destination)
            else:
                registry.add(subscriber, sub_id, destination)
                model[(subscriber, sub_id)] = destination
        elif action < 0.9:
            assert registry.remove(subscriber, sub_id) == model.pop((subscriber, sub_id), None)
        else:
            expected = {i: d for (s, i), d in model.items() if s == subscriber}
            assert registry.remove_subscriber(subscriber) == expected
            for key in [k for k in model if k[0] == subscriber]:
                del model[key]
        assert len(registry) == len(model)
    for destination in destinations:
        assert set(registry.subscribers(destination)) == _expected_pairs(model, destination)
    for subscriber in subscribers:
        assert registry.subscriptions(subscriber) == {i: d for (s, i), d in model.items() if s == subscriber}
    assert set(registry.destinations()) == set(model.values())


def test_count_to_counts_one_subscribers_subscriptions_to_one_destination():
    registry = SubscriptionRegistry()
    registry.add("a", "1", "/topic/direct/7")
    registry.add("a", "2", "/topic/direct/7")
    registry.add("a", "3", "/topic/direct/8")
    registry.add("b", "1", "/topic/direct/7")
    assert registry.count_to("a", "/topic/direct/7") == 2
    assert registry.count_to("b", "/topic/direct/7") == 1
    assert registry.count_to("c", "/topic/direct/7") == 0
    registry.remove("a", "1")
    assert registry.count_to("a", "/topic/direct/7") == 1
