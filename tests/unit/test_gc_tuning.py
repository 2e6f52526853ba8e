"""workers.lifecycle.tune_gc: what a chat worker does to its garbage collector after fork."""

import gc

from workers.lifecycle import tune_gc


def test_start_up_objects_are_frozen_and_the_young_threshold_raised():
    before = gc.get_threshold()
    try:
        tune_gc(12_345)
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (12_345, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
