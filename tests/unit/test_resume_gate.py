"""ResumeGate (app/stomp/resume.py): frames held during a replay come out after it, minus the
ones it carried; a frame numbered at or below since-seq never goes out; the replayed numbers
are checked only for FILTER_S."""

from hypothesis import given, strategies as st

from app.stomp.resume import FILTER_S, ResumeGate


class Clock:
    now = 100.0


def test_held_frames_come_out_in_order_without_those_replayed():
    gate = ResumeGate(2)
    for seq in (3, 4, 5):
        assert not gate.admit(seq, b"F%d" % seq)
    assert gate.open({3, 4}) == [b"F5"]


def test_after_the_replay_a_live_repeat_is_dropped_once():
    gate = ResumeGate(0)
    gate.open({7})
    assert gate.admit(8, b"F8")
    assert not gate.admit(7, b"F7")
    assert gate.admit(7, b"F7")  # a second copy is not the replay's: the worker dedupes those


def test_what_the_client_has_never_goes_out_again():
    gate = ResumeGate(10)
    gate.open({11})
    assert not gate.admit(10, b"F10") and not gate.admit(3, b"F3")
    assert gate.admit(12, b"F12")


def test_a_reset_raises_what_the_client_has_to_the_latest():
    gate = ResumeGate(1)
    assert gate.open(set(), floor=40) == []
    assert not gate.admit(40, b"F40") and gate.admit(41, b"F41")


def test_the_replayed_numbers_are_checked_only_for_a_while():
    clock = Clock()
    gate = ResumeGate(0, monotonic=lambda: clock.now)
    gate.open({7, 8})
    clock.now += FILTER_S + 1
    assert gate.admit(7, b"F7")


def test_pushes_without_a_number_always_pass():
    gate = ResumeGate(5)
    assert not gate.admit(None, b"T")  # held during the replay, like the rest
    assert gate.open({1}) == [b"T"]
    assert gate.admit(None, b"T")


@given(st.integers(0, 50), st.sets(st.integers(1, 60)), st.lists(st.integers(1, 60)))
def test_no_frame_at_or_below_the_floor_or_repeating_the_replay_goes_out(since, replayed, live):
    replayed = {seq for seq in replayed if seq > since}
    gate = ResumeGate(since)
    held = [seq for seq in live[: len(live) // 2] if not gate.admit(seq, b"%d" % seq)]
    out = [int(frame) for frame in gate.open(replayed)]
    out += [seq for seq in live[len(live) // 2:] if gate.admit(seq, b"%d" % seq)]
    assert all(seq > since for seq in out)
    for seq in replayed:
        assert seq not in out or out.count(seq) <= max(0, live.count(seq) - 1)
    assert len(held) == len(live) // 2
