"""How a round finds its block of numbers in a counter's list of grants (mongo_event_log)."""

from app.backends.mongo_event_log import first_of_block


def test_a_block_is_found_behind_the_grants_made_after_it():
    counter = {"seq": 10, "grants": [{"t": "a", "k": 2}, {"t": "mine", "k": 3}, {"t": "b", "k": 4}]}
    assert first_of_block(counter, "mine") == 4  # 10 - 4 after it - 3 + 1
    assert first_of_block(counter, "gone") is None


def test_an_event_id_carries_its_time_to_the_second_and_is_unique():
    from datetime import datetime, timezone

    from app.backends.mongo_event_log import _id_stamped

    at = datetime(2026, 12, 5, 23, 59, 58, 750000)
    ids = {_id_stamped(at) for _ in range(1000)}
    assert len(ids) == 1000
    assert {ident.generation_time for ident in ids} == {datetime(2026, 12, 5, 23, 59, 58, tzinfo=timezone.utc)}
