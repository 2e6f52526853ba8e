"""ResumeGate and seq_of (app/stomp/resume.py): frames held during a replay come out after it,
minus the ones it carried; the filter ends once its numbers came or its time is up."""

from hypothesis import given, strategies as st

from app.stomp.resume import FILTER_S, ResumeGate, seq_of


class Clock:
    now = 100.0


def body(seq):
    return b'{"type":"message","seq":%d}' % seq


def test_held_frames_come_out_in_order_without_those_replayed():
    gate = ResumeGate()
    for seq in (3, 4, 5):
        assert not gate.admit(body(seq), b"F%d" % seq)
    assert gate.open({3, 4}) == [b"F5"]
    assert gate.expired  # both replayed numbers were seen live already: nothing left to filter


def test_after_the_replay_a_live_repeat_is_dropped_once_and_the_gate_then_expires():
    gate = ResumeGate()
    gate.open({7})
    assert gate.admit(body(8), b"F8")
    assert not gate.admit(body(7), b"F7") and gate.expired
    assert gate.admit(body(7), b"F7")


def test_the_filter_ends_after_its_time():
    clock = Clock()
    gate = ResumeGate(monotonic=lambda: clock.now)
    gate.open({7})
    assert not gate.expired
    clock.now += FILTER_S + 1
    assert gate.expired


def test_pushes_without_a_number_always_pass():
    gate = ResumeGate()
    gate.open({1})
    assert gate.admit(b'{"type":"typing"}', b"T") and gate.admit(b"not json", b"X")


@given(st.binary(max_size=64))
def test_seq_of_never_raises(data):
    seq = seq_of(data)
    assert seq is None or isinstance(seq, int)


def test_seq_of_reads_only_integer_numbers():
    assert seq_of(body(12)) == 12
    assert seq_of(b'{"seq":true}') is None and seq_of(b'{"seq":"3"}') is None and seq_of(b"[1]") is None
