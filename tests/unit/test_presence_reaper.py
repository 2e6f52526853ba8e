"""The lease reaper's schedule: a grace period after start, then periodic passes."""

import gevent

from app.tcp_presence.reaper import LeaseReaper


class CountingStore:
    """A presence store with no expired nodes that counts the reaper's passes."""

    def __init__(self):
        self.passes = 0

    def expired_nodes(self):
        self.passes += 1
        return []

    def forget_expired(self):
        pass


def test_no_node_is_judged_during_the_first_lease_after_start():
    store = CountingStore()
    reaper = LeaseReaper(store, notifier=None, lease_s=60, interval_s=0.01)
    reaper.start()
    try:
        gevent.sleep(0.2)  # many intervals, far less than one lease
        assert store.passes == 0
    finally:
        reaper.stop()


def test_passes_run_every_interval_after_the_grace_period():
    store = CountingStore()
    reaper = LeaseReaper(store, notifier=None, lease_s=0.05, interval_s=0.01)
    reaper.start()
    try:
        with gevent.Timeout(10):
            while store.passes < 3:
                gevent.sleep(0.01)
    finally:
        reaper.stop()
    assert store.passes >= 3
