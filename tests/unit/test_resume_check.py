"""``bench.resume.check`` and ``plan``: a wrong replay is a failed run, and why."""

from __future__ import annotations

import json

from bench.resume import ROOM, Replay, check, plan


def _frame(seq: int, kind: str = "message", room: int = ROOM) -> bytes:
    body = json.dumps({"type": kind, "id": str(seq), "seq": seq}).encode()
    return b"MESSAGE\ndestination:/topic/direct/%d\nsubscription:resume\n\n%s\x00" % (room, body)


def _replay(seqs: list[int], extra: list[int] = ()) -> Replay:
    return Replay(1, 1, [_frame(s) for s in seqs], [_frame(s) for s in extra], 0)


def test_seqs_one_to_n_with_the_sent_mix_pass_and_set_the_reference():
    assert check(_replay([1, 2, 3]), 3, None, {"message": 3}) == ""


def test_a_gap_a_duplicate_or_a_reordering_fails_at_its_position():
    assert check(_replay([1, 3, 4]), 3, None, {"message": 3}) == "seq 3 at position 2"
    assert check(_replay([1, 1, 2]), 3, None, {"message": 3}) == "seq 1 at position 2"
    assert check(_replay([2, 1, 3]), 3, None, {"message": 3}) == "seq 2 at position 1"


def test_an_event_beyond_the_last_or_another_mix_or_other_bodies_fail():
    assert check(_replay([1, 2], extra=[2]), 2, None, {"message": 2}).startswith("1 frames after seq 2")
    assert check(_replay([1, 2]), 2, None, {"message": 1, "delete": 1}).startswith("types")
    assert check(_replay([1, 2]), 2, [b"other", b"bodies"], {"message": 2}) == "bodies differ from the first replay's"


def test_a_room_of_events_is_rounds_of_messages_then_edits_and_deletes():
    assert plan(1000) == [(90, 6, 4)] * 10
    assert plan(150) == [(90, 6, 4), (45, 3, 2)]
    assert sum(m + e + d for m, e, d in plan(1234)) == 1234
