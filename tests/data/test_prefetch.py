"""Prefetch: same items as the plain iterator, exact state of the items taken, errors in order."""

import json
import threading

import pytest

from stiv_jax.data.prefetch import Prefetch


class Counter:
    """A source with Grain-style bytes state: yields 0, 1, 2, ... up to `stop` (exclusive)."""

    def __init__(self, stop=None):
        self.i, self.stop, self.threads = 0, stop, set()

    def __next__(self):
        self.threads.add(threading.current_thread().name)
        if self.stop is not None and self.i >= self.stop:
            raise StopIteration
        self.i += 1
        return self.i - 1

    def get_state(self):
        return json.dumps({"i": self.i}).encode()

    def set_state(self, state):
        self.i = json.loads(state)["i"]


def test_items_are_fn_of_the_source_in_order_on_another_thread():
    src = Counter()
    feed = Prefetch(src, lambda x: x * 10, ahead=3)
    assert [next(feed) for _ in range(7)] == [x * 10 for x in range(7)]
    feed.close()
    assert src.threads == {"prefetch"}


def test_state_counts_only_the_items_taken_and_resumes_exactly():
    feed = Prefetch(Counter(), lambda x: x, ahead=4)
    assert feed.get_state() == b'{"i": 0}'
    taken = [next(feed) for _ in range(3)]
    state = feed.get_state()
    assert json.loads(state) == {"i": 3}  # not the 3 + 4 items the thread drew
    rest = [next(feed) for _ in range(5)]
    feed.close()
    # A fresh feed from the saved state continues where the consumer was.
    resumed = Prefetch(Counter(), lambda x: x, ahead=2)
    resumed.set_state(state)
    assert taken + [next(resumed) for _ in range(5)] == taken + rest == list(range(8))
    # set_state on a running feed drops what it had queued.
    resumed.set_state(b'{"i": 1}')
    assert next(resumed) == 1
    resumed.close()


def test_errors_and_the_end_reach_the_consumer_at_their_item():
    def fn(x):
        if x == 2:
            raise ValueError("bad item 2")
        return x

    feed = Prefetch(Counter(), fn, ahead=2)
    assert [next(feed), next(feed)] == [0, 1]
    for _ in range(2):  # later calls fail the same way
        with pytest.raises(ValueError, match="bad item 2"):
            next(feed)
    assert json.loads(feed.get_state()) == {"i": 2}
    feed.close()
    assert list(Prefetch(Counter(stop=3), lambda x: x)) == [0, 1, 2]


def test_ahead_must_be_positive():
    with pytest.raises(ValueError, match="ahead=0"):
        Prefetch(Counter(), lambda x: x, ahead=0)
